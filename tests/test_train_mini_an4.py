"""A real `python -m espnet_early_exit.bin.asr_train` run on the mini_an4 audio in the espnet wheel."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import CHAR_TOKENS, REPO, TINY_CONFIG


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "espnet_early_exit.bin.asr_train", *args]


@pytest.fixture(scope="module")
def an4_data(tmp_path_factory):
    from local import mini_an4

    root = tmp_path_factory.mktemp("an4")
    corpus = mini_an4.download_mini_an4(root / "downloads")
    mini_an4.prepare_mini_an4(corpus, root / "data")
    (root / "tokens.txt").write_text("\n".join(CHAR_TOKENS) + "\n")
    return root


@pytest.mark.slow
def test_one_epoch_on_mini_an4_logs_per_exit_losses(an4_data):
    root = an4_data
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    common = [
        "--use_preprocessor", "true", "--token_type", "char",
        "--token_list", str(root / "tokens.txt"), "--non_linguistic_symbols", "none",
        "--cleaner", "none", "--g2p", "none", "--config", str(TINY_CONFIG),
        "--ngpu", "0", "--num_workers", "0",
        "--train_data_path_and_name_and_type", f"{root}/data/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{root}/data/train/text,text,text",
        "--valid_data_path_and_name_and_type", f"{root}/data/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{root}/data/dev/text,text,text",
    ]
    stats = subprocess.run(
        _train_cmd(*common, "--collect_stats", "true",
                   "--train_shape_file", f"{root}/data/train/wav.scp",
                   "--valid_shape_file", f"{root}/data/dev/wav.scp",
                   "--output_dir", f"{root}/stats"),
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert stats.returncode == 0, stats.stderr[-3000:]
    train = subprocess.run(
        _train_cmd(*common, "--max_epoch", "2", "--fold_length", "80000", "--fold_length", "150",
                   "--train_shape_file", f"{root}/stats/train/speech_shape",
                   "--train_shape_file", f"{root}/stats/train/text_shape",
                   "--valid_shape_file", f"{root}/stats/valid/speech_shape",
                   "--valid_shape_file", f"{root}/stats/valid/text_shape",
                   "--output_dir", f"{root}/exp"),
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    results = [l for l in train.stderr.splitlines() if "epoch results" in l]
    assert len(results) == 2, train.stderr[-3000:]
    for k in (1, 2, 3, 4):
        for key in (f"loss_ctc_exit{k}", f"loss_att_exit{k}", f"acc_exit{k}"):
            assert re.search(rf"\[train\].*\b{key}=[0-9.]+", results[-1]), key
        for key in (f"cer_ctc_exit{k}", f"wer_ctc_exit{k}"):
            assert re.search(rf"\[valid\].*\b{key}=[0-9.]+", results[-1]), key
    assert (root / "exp" / "2epoch.pth").is_file()
    assert list((root / "exp" / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert (root / "exp" / "images" / "loss_ctc_exit2.png").is_file()
