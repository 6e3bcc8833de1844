#!/usr/bin/env python3
"""Export an early-exit model to ONNX by segments (one graph per segment between exits, one
per exit head, manifest.json) for ``espnet_early_exit.onnx_runtime``:

    python -m espnet_early_exit.bin.export_onnx --asr_train_config exp/asr_x/config.yaml \
        --asr_model_file exp/asr_x/valid.loss.ave.pth --out_dir exp/asr_x/onnx [--quantize int8]
    python -m espnet_early_exit.bin.export_onnx --model_zip exp/asr_x/asr_model.zip --out_dir D

See espnet_early_exit/onnx_export.py for what is written.
"""

import argparse
import logging
import sys

from espnet_early_exit.bin._cli import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export an early-exit model to ONNX by segments",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--asr_train_config", default=None, help="training config.yaml")
    parser.add_argument("--asr_model_file", default=None, help="model parameters (.pth)")
    parser.add_argument("--model_zip", default=None, help="a packed model (stage 14's zip)")
    parser.add_argument("--out_dir", required=True, help="output dir (replaced atomically)")
    parser.add_argument("--quantize", default="none", choices=("none", "int8"),
                        help="onnxruntime dynamic quantisation of the graphs' weights")
    parser.add_argument("--cost_seconds", type=float, default=10.0,
                        help="input duration of the per-exit FLOPs shares in the manifest")
    add_log_level(parser)
    return parser


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    from espnet_early_exit.onnx_export import export_onnx

    try:
        out = export_onnx(
            args.out_dir, asr_train_config=args.asr_train_config,
            asr_model_file=args.asr_model_file, model_zip=args.model_zip,
            quantize=None if args.quantize == "none" else args.quantize,
            cost_seconds=args.cost_seconds,
        )
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        logging.error(str(e))
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
