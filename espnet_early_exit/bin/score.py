"""Score a decoding output: WER and/or CER with sclite (or the in-Python fallback).

    python -m espnet_early_exit.bin.score --ref data/test/text --hyp DIR/text --out DIR
        [--tool auto|sclite|python] [--units word char] [--cleaner none]
        [--nlsyms_txt none] [--remove_nonlexical false] [--case_sensitive false]
        [--utt2spk auto]

writes DIR/score_wer/ and DIR/score_cer/ (ref.trn, hyp.trn, result.txt, result.json).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_early_exit.scoring import METRIC_DIR, UNIT_METRIC, score_text
from espnet_early_exit.bin._cli import add_log_level, setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="WER/CER scoring of a Kaldi-style hypothesis text (as ESPnet's asr.sh stage 13)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--ref", type=Path, required=True, help="reference Kaldi text (<uttid> <words>)")
    p.add_argument("--hyp", type=Path, required=True, help="hypothesis Kaldi text")
    p.add_argument("--out", type=Path, required=True,
                   help="output dir; score_wer/ and score_cer/ are written inside it")
    p.add_argument("--tool", choices=["auto", "sclite", "python"], default="auto",
                   help="auto: sclite if found, else the Python fallback")
    p.add_argument("--units", nargs="+", choices=sorted(UNIT_METRIC), default=["word", "char"],
                   help="word -> score_wer, char -> score_cer")
    p.add_argument("--cleaner", default="none",
                   help="ESPnet text cleaner applied to the reference only (as asr.sh)")
    p.add_argument("--nlsyms_txt", default="none",
                   help="file of non-linguistic symbols (one a line) removed from ref and hyp")
    p.add_argument("--remove_nonlexical", type=str2bool, default=False,
                   help="also remove words wholly in {}, [] or <> (e.g. {NOISE}, [laughter], <unk>)")
    p.add_argument("--case_sensitive", type=str2bool, default=False,
                   help="case-sensitive comparison (sclite -s); default: ASCII case-insensitive like sclite")
    p.add_argument("--utt2spk", default="auto",
                   help="utt2spk for the trn ids: 'auto' (next to --ref if present), 'none', or a path")
    add_log_level(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    utt2spk = None if args.utt2spk == "none" else args.utt2spk
    for unit in args.units:
        metric = UNIT_METRIC[unit]
        out_dir = args.out / METRIC_DIR[metric]
        try:
            res = score_text(
                args.ref, args.hyp, out_dir, unit=unit, tool=args.tool, cleaner=args.cleaner,
                nlsyms=args.nlsyms_txt, remove_nonlexical=args.remove_nonlexical,
                case_sensitive=args.case_sensitive, utt2spk=utt2spk,
            )
        except (ValueError, RuntimeError, OSError) as e:
            logging.error("%s scoring failed: %s", metric.upper(), e)
            return 1
        logging.info(
            "Write %s result in %s: %s %.2f (N=%d, Sub %d, Del %d, Ins %d, %s)",
            metric, out_dir / "result.txt", metric.upper(), res[metric], res["n_ref"],
            res["sub"], res["del"], res["ins"], res["tool"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
