#!/usr/bin/env python3
"""Per-exit parameters and FLOPs of a trained early-exit model -> exit_costs.json.

    python -m espnet_early_exit.bin.exit_costs --asr_train_config exp/asr_x/config.yaml \
        --asr_model_file exp/asr_x/valid.acc.ave.pth --out exp/asr_x/exit_costs.json \
        [--seconds 10] [--device cpu]

See espnet_early_exit/costs.py for the definitions; the file's schema is in docs/DESIGN.md.
"""

import argparse
import logging
import sys

from espnet_early_exit.costs import exit_costs_from_files, write_exit_costs


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Per-exit encoder parameters and FLOPs (exit_costs.json)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--asr_train_config", required=True, help="training config.yaml")
    parser.add_argument(
        "--asr_model_file",
        default=None,
        help="model parameters (optional: parameter counts and FLOPs do not depend on them)",
    )
    parser.add_argument("--out", required=True, help="output JSON path")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="input duration the FLOPs are counted for"
    )
    parser.add_argument("--device", default="cpu")
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    costs = exit_costs_from_files(
        args.asr_train_config, args.asr_model_file, args.seconds, args.device
    )
    out = write_exit_costs(costs, args.out)
    print(f"exit  params(M)  gflops  share   (front_share {costs['front_share']:.3f})",
          file=sys.stderr)
    for e in costs["exits"]:
        print(f"{e['exit']:4d}  {e['params'] / 1e6:9.2f}  {e['gflops']:6.2f}  {e['share']:.3f}",
              file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
