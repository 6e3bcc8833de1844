"""Make an early-exit model's starting point from a trained single-exit ESPnet ASR model.

    python -m espnet_early_exit.bin.add_exits --src exp/asr_conformer \\
        --exit_layers 2 4 6 8 10 12 --out_dir exp/asr_ee_init
    python -m espnet_early_exit.bin.asr_train --config exp/asr_ee_init/config.yaml \\
        --init_param exp/asr_ee_init/init.pth ...

--src: an experiment dir (model file chosen in the order valid.acc.ave.pth,
valid.loss.ave.pth, *best.pth, latest.pth), a packed .zip (espnet2.bin.pack asr; unpacked
offline under <out_dir>/src_unpacked) or a model .pth (config.yaml from its folder or
--src_config). See docs/pretrained.md.
"""

import argparse
import sys

from espnet2.utils.types import float_or_none

from espnet_early_exit.encoders.exits import EXIT_NORM_MODES
from espnet_early_exit.finetune import INIT_EXIT_HEADS, add_exits
from espnet_early_exit.model import EXIT_DECODER_MODES
from espnet_early_exit.bin._cli import add_log_level, setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Add exits to a trained ESPnet ASR model (config + init weights)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--src", required=True, help="exp dir, packed .zip or model .pth")
    parser.add_argument("--src_config", default=None, help="config.yaml of --src (optional)")
    parser.add_argument(
        "--exit_layers", type=int, nargs="+", required=True,
        help="1-based encoder blocks with an exit; must include the last block",
    )
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--exit_norm", default="per_exit", choices=EXIT_NORM_MODES)
    parser.add_argument("--exit_decoders", default="per_exit", choices=EXIT_DECODER_MODES)
    parser.add_argument(
        "--share_exit_heads", type=str2bool, default=False,
        help="one CTC head for every exit instead of one per exit",
    )
    parser.add_argument(
        "--init_exit_heads", default="copy", choices=INIT_EXIT_HEADS,
        help="earlier exits' CTC heads, decoders and norms: copies of the source's or fresh",
    )
    parser.add_argument(
        "--ctc_weight", type=float_or_none, default=None,
        help="override model_conf.ctc_weight (needed when the source has none)",
    )
    parser.add_argument(
        "--verify", type=str2bool, default=True,
        help="check that the last exit reproduces the source model on a random input",
    )
    add_log_level(parser)
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    report = add_exits(
        args.src,
        args.exit_layers,
        args.out_dir,
        src_config=args.src_config,
        exit_norm=args.exit_norm,
        exit_decoders=args.exit_decoders,
        share_exit_heads=args.share_exit_heads,
        init_exit_heads=args.init_exit_heads,
        ctc_weight=args.ctc_weight,
        verify=args.verify,
    )
    print(report["train_command"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
