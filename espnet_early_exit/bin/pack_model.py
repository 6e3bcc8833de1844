#!/usr/bin/env python3
"""Pack a trained early-exit model into an ESPnet model-zoo zip (recipe stage 14).

    python -m espnet_early_exit.bin.pack_model \
        --asr_train_config exp/asr_x/config.yaml \
        --asr_model_file exp/asr_x/valid.loss.ave.pth \
        --outpath exp/asr_x/asr_model.zip \
        [--option FILE ...] [--bpemodel data/token_list/bpe_unigram5000/bpe.model] \
        [--exp_extras true]

Run it from the recipe dir (where data/ and exp/ are), as ESPnet's asr.sh runs
`python -m espnet2.bin.pack asr`: files below it keep their relative names in the zip.
The config's dir contributes RESULTS.md, wer_vs_exit.png, wer_vs_compute.png, exit_costs.json
and selected_thresholds.json when present (--exp_extras false: only --option files).
A learned exit policy beside the model file (exit_policy.json, from
python -m espnet_early_exit.bin.fit_exit_policy) is always packed, beside the model in the
zip (exp/asr_x/exit_policy.json), so that --exit_policy learned works from the zip; one that
does not load is an error naming it.
See espnet_early_exit/zoo/ and docs/model_zoo.md.
"""

import argparse
import logging
import sys
from typing import List, Optional

from espnet_early_exit.zoo import ModelZooError, pack_model
from espnet_early_exit.bin._cli import add_log_level, setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pack an early-exit ASR model (config, weights, BPE model, RESULTS.md, "
        "plots, exit costs) into an ESPnet model-zoo zip",
        allow_abbrev=False,
    )
    parser.add_argument("--asr_train_config", required=True, help="the experiment's config.yaml")
    parser.add_argument("--asr_model_file", required=True, help="the model parameters (.pth)")
    parser.add_argument("--outpath", required=True, help="the .zip to write")
    parser.add_argument("--option", action="append", default=[],
                        help="an extra file to pack (repeatable), as in espnet2.bin.pack")
    parser.add_argument("--bpemodel", default=None,
                        help="the sentencepiece model, if the config's bpemodel path is not "
                        "valid from the current dir (default: the config's; 'none' = default)")
    parser.add_argument("--exp_extras", type=str2bool, default=True,
                        help="also pack RESULTS.md, its plots, exit_costs.json and "
                        "selected_thresholds.json found next to the config (default: true)")
    add_log_level(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        out = pack_model(
            args.asr_train_config,
            args.asr_model_file,
            args.outpath,
            options=args.option,
            bpemodel=None if (args.bpemodel or "none").lower() == "none" else args.bpemodel,
            exp_extras=args.exp_extras,
        )
    except (ModelZooError, FileNotFoundError, ValueError) as e:
        logging.error("%s", e)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
