"""Multi-process (DDP) training on CPU: 2 gloo processes against one process on the whole batch.

The fast part spawns the 2 processes once (tests/_ddp_worker.py) and runs every case there:
each exit-head mode x shared/own heads x per-exit/last decoders, with and without layer
drop, DDP set up as ESPnet's trainer does. The slow test runs the real training command
under torchrun (ESPnet cannot start CPU workers itself; see docs/reliability.md).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from conftest import CHAR_TOKENS, REPO, TINY_CONFIG

MODES = ("keep", "eager", "recompute")
CASES = {
    f"{mode}-{'shared' if share else 'own'}-{dec}{'-layerdrop' if drop else ''}": dict(
        exit_head_memory=mode, share_exit_heads=share, exit_decoders=dec,
        layer_drop_rate=0.5 if drop else 0.0,
    )
    for mode, share, dec, drop in itertools.product(
        MODES, (False, True), ("per_exit", "last"), (False, True))
}
EXTRA = {
    # what DDP does without find_unused_parameters when layer drop leaves blocks unused
    "layerdrop-without-unused_parameters": dict(layer_drop_rate=0.5,
                                                find_unused_parameters=False),
    # BatchNorm (Conformer's convolution module) normalises each rank's shard
    "conformer": dict(encoder="ee_conformer", exit_head_memory="eager"),
}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    import _ddp_worker

    root = tmp_path_factory.mktemp("ddp")
    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(CHAR_TOKENS) + "\n")
    return _ddp_worker.run(root, tokens, {**CASES, **EXTRA})


@pytest.mark.parametrize("case", sorted(CASES))
def test_ddp_equals_one_process_on_the_whole_batch(ranks, case):
    for rank, results in enumerate(ranks):
        got = results[case]
        assert got["error"] is None, (rank, got["error"])
        # loss, per-exit losses and every gradient (each exit's head and decoder) at every step
        assert got["mismatch"] == [], (rank, got["mismatch"][:5])
        assert got["rank_diff"] == [], (rank, got["rank_diff"][:5])  # 0 differ across ranks
        assert got["ref_param_mismatch"] == [], (rank, got["ref_param_mismatch"][:5])
        drops = CASES[case]["layer_drop_rate"] > 0
        # unused_parameters only where needed: layer drop, and nothing else here
        assert got["find_unused"] is drops and bool(got["reasons"]) is drops
        if drops:  # some block was dropped on some step, and only blocks go unused
            assert got["unused"] and all(n.startswith("encoder.encoders.")
                                         for n in got["unused"])
        else:
            assert got["unused"] == []


def test_layer_drop_without_unused_parameters_stops_ddp(ranks):
    for results in ranks:
        error = results["layerdrop-without-unused_parameters"]["error"]
        assert error and "Expected to have finished reduction" in error


def test_conformer_ranks_keep_identical_parameters(ranks):
    """Conformer's BatchNorm uses each rank's shard statistics (as stock ESPnet under DDP:
    SyncBatchNorm needs GPUs), so its gradients are not the whole batch's; parameters still
    agree on every rank, and running statistics are rank 0's at each forward."""
    for results in ranks:
        got = results["conformer"]
        assert got["error"] is None and got["unused"] == [] and not got["find_unused"]
        assert all(n.endswith(("running_mean", "running_var")) for n in got["rank_diff"])


def test_unused_parameters_is_set_only_for_distributed_models_that_need_it(build_model):
    import _ddp_worker

    from espnet_early_exit.task import set_unused_parameters

    drop, args = build_model(_ddp_worker.case_config(layer_drop_rate=0.2))
    plain, plain_args = build_model(_ddp_worker.case_config())
    for model, a, distributed, expected in ((drop, args, False, False),
                                            (drop, args, True, True),
                                            (plain, plain_args, True, False)):
        a.distributed, a.unused_parameters = distributed, False
        set_unused_parameters(a, model)
        assert a.unused_parameters is expected


@pytest.fixture(scope="module")
def an4(tmp_path_factory):
    from local import mini_an4

    root = tmp_path_factory.mktemp("an4_ddp")
    corpus = mini_an4.download_mini_an4(root / "downloads")
    mini_an4.prepare_mini_an4(corpus, root / "data")
    (root / "tokens.txt").write_text("\n".join(CHAR_TOKENS) + "\n")
    return root


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_workers_on_mini_an4(an4):
    """The real command: torchrun starts 2 workers of asr_train (ngpu 0, gloo); one epoch of
    the tiny config with layer drop and eager heads; a loadable model at the end."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    data = [
        "--use_preprocessor", "true", "--token_type", "char",
        "--token_list", str(an4 / "tokens.txt"), "--non_linguistic_symbols", "none",
        "--cleaner", "none", "--g2p", "none", "--config", str(TINY_CONFIG),
        "--num_workers", "0",
        "--train_data_path_and_name_and_type", f"{an4}/data/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{an4}/data/train/text,text,text",
        "--valid_data_path_and_name_and_type", f"{an4}/data/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{an4}/data/dev/text,text,text",
    ]
    train = [sys.executable, "-m", "espnet_early_exit.bin.asr_train"]
    stats = subprocess.run(
        train + data + ["--ngpu", "0", "--collect_stats", "true",
                        "--train_shape_file", f"{an4}/data/train/wav.scp",
                        "--valid_shape_file", f"{an4}/data/dev/wav.scp",
                        "--output_dir", f"{an4}/stats"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert stats.returncode == 0, stats.stderr[-3000:]
    exp = an4 / "exp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "espnet_early_exit.bin.asr_train", *data,
         "--ngpu", "0", "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
         "--max_epoch", "1", "--fold_length", "80000", "--fold_length", "150",
         "--encoder_conf", "layer_drop_rate=0.3", "--model_conf", "exit_head_memory=eager",
         "--train_shape_file", f"{an4}/stats/train/speech_shape",
         "--train_shape_file", f"{an4}/stats/train/text_shape",
         "--valid_shape_file", f"{an4}/stats/valid/speech_shape",
         "--valid_shape_file", f"{an4}/stats/valid/text_shape",
         "--output_dir", str(exp)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "1epoch results" in run.stderr, run.stderr[-3000:]
    import yaml

    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["distributed"] is True and ":0/2]" in run.stderr  # rank 0 of 2 logs
    assert config["unused_parameters"] is True  # set for layer drop by the task
    from espnet_early_exit.task import EarlyExitASRTask

    model, _ = EarlyExitASRTask.build_model_from_file(exp / "config.yaml", exp / "1epoch.pth")
    assert model.exit_layers == [1, 2, 3, 4]
