"""Fit the ``learned`` exit policy from one all-exits decode and save it beside the model.

    python -m espnet_early_exit.bin.asr_inference ... --all_exits true --output_dir decode/dev
    python -m espnet_early_exit.bin.fit_exit_policy --all_exits_dir decode/dev \
        --model_file exp/asr_x/valid.acc.ave.pth        # -> exp/asr_x/exit_policy.json
    python -m espnet_early_exit.bin.asr_inference ... --exit_policy learned --exit_threshold 0.9

No transcript is read: the target at exit k is "exit k's hypothesis equals the last exit's"
(:mod:`espnet_early_exit.exit_classifier`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_early_exit.bin._cli import add_log_level, setup_logging
from espnet_early_exit.derive import load_all_exits
from espnet_early_exit.exit_classifier import DEFAULT_NAME, fit_from_all_exits


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--all_exits_dir", type=Path, required=True,
                   help="output of asr_inference --all_exits true (exit<k>/ with features)")
    p.add_argument("--model_file", type=Path, default=None,
                   help="the model's file: the fit goes beside it as --name")
    p.add_argument("--name", default=DEFAULT_NAME, help="file name of the fit")
    p.add_argument("--out", type=Path, default=None, help="explicit output path")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 penalty (per utterance)")
    add_log_level(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    out = args.out or (args.model_file.parent / args.name if args.model_file else None)
    if out is None:
        logging.error("give --model_file (the fit goes beside it) or --out")
        return 1
    data = load_all_exits(args.all_exits_dir)
    if not data.has_features():
        logging.error("%s: no features files (decode with a version that records them)",
                      args.all_exits_dir)
        return 1
    classifier = fit_from_all_exits(data, args.l2)
    classifier.save(out)
    logging.info("wrote %s: %s", out, json.dumps(classifier.info["per_exit"]))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
