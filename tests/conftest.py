"""Shared fixtures: paths, a tiny token list, and model builders from the project's YAML configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "conf" / "tuning" / "train_ee_conformer_tiny.yaml"

if str(REPO) not in sys.path:  # the checkout's packages: espnet_early_exit, local (corpus modules)
    sys.path.insert(0, str(REPO))
import espnet_early_exit  # noqa: E402,F401  (registers with ESPnet, also for -k selections)
os.environ.setdefault("OMP_NUM_THREADS", "2")

CHAR_TOKENS = ["<blank>", "<unk>", "<space>"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'") + [
    "<sos/eos>"
]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def token_list_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text("\n".join(CHAR_TOKENS) + "\n")
    return path


def build_args(config: dict, token_list_file: Path, tmp_dir: Path, extra=()):
    """Parse a config dict the way `asr_train --config` does and return the Namespace."""
    from espnet_early_exit.task import EarlyExitASRTask

    cfg = tmp_dir / "in_config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    parser = EarlyExitASRTask.get_parser()
    return parser.parse_args(
        ["--config", str(cfg), "--token_list", str(token_list_file), "--output_dir",
         str(tmp_dir / "out"), *extra]
    )


def tiny_config(**overrides) -> dict:
    """The tiny config with top-level keys replaced (encoder_conf etc. replaced whole)."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config.update(overrides)
    return config


@pytest.fixture
def build_model(token_list_file, tmp_path):
    """build_model(config_dict) -> (model, args) through EarlyExitASRTask.build_model."""
    from espnet_early_exit.task import EarlyExitASRTask

    def _build(config: dict, extra=()):
        args = build_args(config, token_list_file, tmp_path, extra)
        return EarlyExitASRTask.build_model(args), args

    return _build


def recipe_env(drop=(), **extra: str) -> dict:
    """The environment in which tests run recipes and CLIs: this interpreter first on PATH, the
    checkout on PYTHONPATH, EEE_NO_SETUP=1 (no tools/setup.sh); `drop` removes variables,
    `extra` sets more."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["EEE_NO_SETUP"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
    env.update(extra)
    return env


def fake_batch(vocab_size: int, batch: int = 2, seconds=(1.2, 0.9), seed: int = 0):
    """Random 16 kHz speech and token ids (no blank/sos) for forward passes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds[:batch]])
    speech = torch.randn(batch, int(lengths.max()), generator=g) * 0.1
    for b, n in enumerate(lengths):
        speech[b, n:] = 0.0
    text_lengths = torch.tensor([5, 3][:batch])
    text = torch.randint(2, vocab_size - 1, (batch, int(text_lengths.max())), generator=g)
    for b, n in enumerate(text_lengths):
        text[b, n:] = -1
    return speech, lengths, text, text_lengths
