"""Write a tiny RANDOM wav2vec2 / WavLM / HuBERT model with `save_pretrained` into a folder.

    python -m espnet_early_exit.bin.make_tiny_ssl --family wav2vec2 --out_dir ssl_models/tiny_wav2vec2

The folder (config.json, the weights, preprocessor_config.json) loads through
`transformers.AutoModel.from_pretrained` like a hub checkpoint, so `ee_hf_ssl` configs can point
`encoder_conf.model_name_or_path` at it and run offline (the mini_an4 experiment grid,
conf/grid/mini_an4.yaml, uses it for its SSL rows). The weights are random: it is a stand-in for
facebook/wav2vec2-base / microsoft/wavlm-base-plus in smoke tests, not a pre-trained model.
An existing folder with a config.json is left as it is (--overwrite true rebuilds it).
The work is done by `espnet_early_exit.encoders.hf_ssl.make_tiny_ssl`.
"""

from __future__ import annotations

import argparse
import sys

from espnet_early_exit.encoders.hf_ssl import TINY_SSL_FAMILIES, make_tiny_ssl


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Save a tiny random wav2vec2/WavLM/HuBERT model (save_pretrained)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--family", default="wav2vec2", choices=sorted(TINY_SSL_FAMILIES))
    p.add_argument("--out_dir", required=True)
    p.add_argument("--num_layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--conv_dim", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", choices=["true", "false"], default="false")
    return p


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    out = make_tiny_ssl(
        args.out_dir, args.family, args.num_layers, args.hidden, args.heads, args.conv_dim,
        args.seed, args.overwrite == "true",
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
