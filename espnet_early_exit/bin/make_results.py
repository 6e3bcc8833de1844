"""Write RESULTS.md, wer_vs_exit.png and wer_vs_compute.png for an experiment dir.

    python -m espnet_early_exit.bin.make_results --exp_dir exp/asr_x [--out exp/asr_x/RESULTS.md]

Optionally picks a policy threshold on a dev set, under a compute budget:

    ... --select_threshold dev entropy 0.6

or with a risk guarantee (Learn-then-Test, :func:`espnet_early_exit.selection.ltt_select`):
the most aggressive threshold such that, with probability >= 1 - DELTA over the calibration
draw, at most a fraction EPS of utterances get a hypothesis other than the last exit's:

    ... --select_threshold dev entropy --risk 0.05 --delta 0.1

The chosen threshold is printed; the risk form also states its guarantee in RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_early_exit.results import make_results
from espnet_early_exit.selection import select_threshold, select_threshold_risk
from espnet_early_exit.bin._cli import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Summarise early-exit decoding results (RESULTS.md + plots)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--exp_dir", type=Path, required=True, help="exp/asr_<tag> dir")
    p.add_argument("--out", type=Path, default=None,
                   help="RESULTS.md path (default: <exp_dir>/RESULTS.md); the PNGs go next to it")
    p.add_argument("--select_threshold", nargs="+", metavar="TEST_SET POLICY [MAX_SHARE]",
                   default=None,
                   help="also pick a threshold of POLICY on TEST_SET: the lowest WER whose "
                        "average compute share is <= MAX_SHARE, or with --risk the most "
                        "aggressive one with a risk guarantee")
    p.add_argument("--risk", type=float, default=None, metavar="EPS",
                   help="risk-controlled selection: tolerated fraction of utterances whose "
                        "hypothesis differs from the last exit's")
    p.add_argument("--delta", type=float, default=0.1,
                   help="with --risk: the guarantee holds with probability >= 1 - DELTA")
    p.add_argument("--decode", default=None,
                   help="decode_* dir for --select_threshold when several hold the test set")
    add_log_level(p)
    return p


def _budget_selection(args, test_set: str, policy: str, max_share: str) -> None:
    sel = select_threshold(args.exp_dir, test_set, policy, float(max_share), decode=args.decode)
    if sel is None:
        logging.info("%s on %s: no threshold with average compute share <= %s",
                     policy, test_set, max_share)
    else:
        logging.info("%s on %s: threshold %g (WER %.2f, compute share %.3f) under share %s",
                     policy, test_set, sel[0], sel[1], sel[2], max_share)
        print(sel[0])


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    sel = args.select_threshold
    if sel is not None and len(sel) != (2 if args.risk is not None else 3):
        parser.error("--select_threshold takes TEST_SET POLICY MAX_SHARE, or TEST_SET POLICY "
                     "with --risk")
    if not args.exp_dir.is_dir():
        logging.error("no such experiment dir: %s", args.exp_dir)
        return 1
    notes, risk = [], None
    try:
        if sel is not None and args.risk is not None:
            risk = select_threshold_risk(args.exp_dir, sel[0], sel[1], args.risk, args.delta,
                                         decode=args.decode)
            notes.append(risk.guarantee(sel[1], sel[0]))
        for path in make_results(args.exp_dir, args.out, notes=notes):
            logging.info("wrote %s", path)
        if sel is not None and risk is None:
            _budget_selection(args, *sel)
    except ValueError as e:
        logging.error("%s", e)
        return 1
    if risk is not None:
        logging.info("%s", notes[0])
        if risk.threshold is not None:
            print(risk.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
