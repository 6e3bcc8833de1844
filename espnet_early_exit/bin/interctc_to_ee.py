"""Decode ESPnet interCTC at its intermediate layers: rewrite a stock `conformer` +
`interctc_layer_idx` experiment as an `ee_conformer` one with a shared norm and head.

    python -m espnet_early_exit.bin.interctc_to_ee --src_exp exp/asr_interctc \\
        --out_exp exp/asr_interctc_as_ee --verify_wav_scp dump/raw/test/wav.scp

Writes <out_exp>/config.yaml, the model file (same weights, loaded strictly) and
equivalence.json; with --verify_wav_scp the stock model's `encode` (last layer and every
intermediate layer) must give the same greedy CTC output as the early-exit decoder at each
exit on that file's first utterance (exit status 1 otherwise). The work is done by
`espnet_early_exit.finetune.interctc_to_ee`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espnet_early_exit.bin._cli import setup_logging
from espnet_early_exit.fileio import atomic_write_text
from espnet_early_exit.finetune import interctc_to_ee


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="stock interCTC exp -> equivalent early-exit exp")
    p.add_argument("--src_exp", type=Path, required=True)
    p.add_argument("--out_exp", type=Path, required=True)
    p.add_argument("--model_file", default="valid.loss.ave.pth")
    p.add_argument("--verify_wav_scp", type=Path, default=None,
                   help="check the equivalence on the first utterance of this wav.scp")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging("INFO")
    report = interctc_to_ee(args.src_exp, args.out_exp, args.model_file, args.verify_wav_scp)
    text = json.dumps(report, indent=1)
    atomic_write_text(args.out_exp / "equivalence.json", text + "\n")
    print(text)
    return 0 if report.get("identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
