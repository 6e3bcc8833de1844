"""Write a tiny RANDOM wav2vec2 / WavLM / HuBERT model with `save_pretrained` into a folder.

    python -m espnet_early_exit.bin.make_tiny_ssl --family wav2vec2 --out_dir ssl_models/tiny_wav2vec2

The folder (config.json, the weights, preprocessor_config.json) loads through
`transformers.AutoModel.from_pretrained` like a hub checkpoint, so `ee_hf_ssl` configs can point
`encoder_conf.model_name_or_path` at it and run offline (the mini_an4 experiment grid,
conf/grid/mini_an4.yaml, uses it for its SSL rows). The weights are random: it is a stand-in for
facebook/wav2vec2-base / microsoft/wavlm-base-plus in smoke tests, not a pre-trained model.
An existing folder with a config.json is left as it is (--overwrite true rebuilds it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# family -> (transformers config class, extra config arguments)
FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", {}),
    "wavlm": ("WavLMConfig", {"num_buckets": 16, "max_bucket_distance": 32}),
    "hubert": ("HubertConfig", {}),
}


def make_tiny_ssl(
    out_dir,
    family: str = "wav2vec2",
    num_layers: int = 4,
    hidden: int = 32,
    heads: int = 2,
    conv_dim: int = 16,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build and save the model; returns the folder."""
    import torch
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: one of {', '.join(FAMILIES)}")
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and not overwrite:
        return out_dir
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    cls_name, extra = FAMILIES[family]
    config = getattr(transformers, cls_name)(
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        # 3 conv layers with strides 5*4*2*... : a 320-sample (20 ms) hop like the base models
        conv_dim=(conv_dim, conv_dim, conv_dim),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.05,
        mask_time_length=2,
        layerdrop=0.0,
        **extra,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True
    ).save_pretrained(tmp)
    with open(tmp / "tiny_ssl.json", "w", encoding="utf-8") as f:
        json.dump(
            {"family": family, "num_layers": num_layers, "hidden": hidden, "heads": heads,
             "conv_dim": conv_dim, "seed": seed, "random_weights": True},
            f, indent=2,
        )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Save a tiny random wav2vec2/WavLM/HuBERT model (save_pretrained)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--family", default="wav2vec2", choices=sorted(FAMILIES))
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
