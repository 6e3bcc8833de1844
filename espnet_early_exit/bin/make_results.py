"""Write RESULTS.md, wer_vs_exit.png and wer_vs_compute.png for an experiment dir.

    python -m espnet_early_exit.bin.make_results --exp_dir exp/asr_x [--out exp/asr_x/RESULTS.md]

Optionally picks a policy threshold on a dev set under a compute budget:

    ... --select_threshold dev entropy 0.6
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_early_exit.results import make_results
from espnet_early_exit.selection import select_threshold
from espnet_early_exit.bin._cli import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Summarise early-exit decoding results (RESULTS.md + plots)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--exp_dir", type=Path, required=True, help="exp/asr_<tag> dir")
    p.add_argument("--out", type=Path, default=None,
                   help="RESULTS.md path (default: <exp_dir>/RESULTS.md); the PNGs go next to it")
    p.add_argument("--select_threshold", nargs=3, metavar=("TEST_SET", "POLICY", "MAX_SHARE"),
                   default=None,
                   help="also log the threshold of POLICY with the lowest WER on TEST_SET whose "
                        "average compute share is <= MAX_SHARE")
    p.add_argument("--decode", default=None,
                   help="decode_* dir for --select_threshold when several hold the test set")
    add_log_level(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    if not args.exp_dir.is_dir():
        logging.error("no such experiment dir: %s", args.exp_dir)
        return 1
    for path in make_results(args.exp_dir, args.out):
        logging.info("wrote %s", path)
    if args.select_threshold:
        test_set, policy, max_share = args.select_threshold
        try:
            sel = select_threshold(args.exp_dir, test_set, policy, float(max_share), decode=args.decode)
        except ValueError as e:
            logging.error("%s", e)
            return 1
        if sel is None:
            logging.info("%s on %s: no threshold with average compute share <= %s",
                         policy, test_set, max_share)
        else:
            logging.info("%s on %s: threshold %g (WER %.2f, compute share %.3f) under share %s",
                         policy, test_set, sel[0], sel[1], sel[2], max_share)
            print(sel[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
