"""Per-exit parameters and FLOPs (costs.py, bin/exit_costs.py) on tiny random models."""

import json
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "conf" / "tuning" / "train_ee_conformer_tiny.yaml"
TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "c", "<sos/eos>"]


def build(root: Path, **encoder_conf):
    """A tiny random model, and its config.yaml / model.pth under root."""
    from espnet_early_exit.task import EarlyExitASRTask

    root.mkdir(parents=True, exist_ok=True)
    conf = yaml.safe_load(TINY.read_text())
    conf["encoder_conf"].update(encoder_conf)
    n_exits = len(conf["encoder_conf"]["exit_layers"])
    conf["model_conf"]["exit_weights"] = [1.0] * n_exits
    (root / "train.yaml").write_text(yaml.safe_dump(conf))
    args = EarlyExitASRTask.get_parser().parse_args(
        ["--config", str(root / "train.yaml"), "--output_dir", str(root / "exp")]
    )
    args.token_list = list(TOKENS)
    model = EarlyExitASRTask.build_model(args)
    (root / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), root / "model.pth")
    return model, str(root / "config.yaml"), str(root / "model.pth")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("costs"))


def test_exit_costs_shape_and_monotonic(tiny):
    from espnet_early_exit.costs import exit_costs

    model = tiny[0]
    costs = exit_costs(model, seconds=2.0)
    rows = costs["exits"]
    assert [r["exit"] for r in rows] == model.exit_layers == [1, 2, 3, 4]
    shares = [r["share"] for r in rows]
    assert all(a < b for a, b in zip(shares, shares[1:]))
    assert shares[-1] == 1.0
    assert 0.0 < costs["front_share"] < shares[0]
    params = [r["params"] for r in rows]
    assert all(a < b for a, b in zip(params, params[1:]))
    assert costs["front_params"] < params[0]
    gflops = [r["gflops"] for r in rows]
    assert all(a < b for a, b in zip(gflops, gflops[1:]))
    assert costs["front_gflops"] == pytest.approx(costs["front_share"] * gflops[-1])
    for r in rows:
        assert r["head_params"] == sum(p.numel() for p in model.ctc_at(r["exit"]).parameters())
        assert r["decoder_params"] > 0  # per_exit decoders
        assert r["head_gflops"] > 0
    # the full-depth params: front + all blocks + output norm = the encoder minus exit norms
    enc = model.encoder
    exit_norm_params = sum(p.numel() for p in enc.exit_norms.parameters())
    assert params[-1] == sum(p.numel() for p in enc.parameters()) - exit_norm_params
    json.dumps(costs)  # serialisable as is


def test_flops_scale_with_duration(tiny):
    from espnet_early_exit.costs import exit_costs

    short = exit_costs(tiny[0], seconds=1.0)["exits"][-1]["gflops"]
    long = exit_costs(tiny[0], seconds=4.0)["exits"][-1]["gflops"]
    assert 3.0 < long / short < 6.0  # ~linear (+ attention's quadratic part)
    with pytest.raises(ValueError, match="seconds"):
        exit_costs(tiny[0], seconds=0)


def test_light_front_is_cheaper(tmp_path):
    from espnet_early_exit.costs import exit_costs

    conv2d = exit_costs(build(tmp_path / "a")[0], seconds=2.0)
    conv1d4 = exit_costs(build(tmp_path / "b", input_layer="conv1d4")[0], seconds=2.0)
    assert conv1d4["front_share"] < conv2d["front_share"]
    assert conv1d4["exits"][0]["share"] < conv2d["exits"][0]["share"]


def test_cli_writes_exit_costs_json(tiny, tmp_path):
    from espnet_early_exit.bin.exit_costs import main

    out = tmp_path / "exp" / "exit_costs.json"
    main(["--asr_train_config", tiny[1], "--asr_model_file", tiny[2], "--out", str(out),
          "--seconds", "2"])
    data = json.loads(out.read_text())
    assert {"exits", "front_share"} <= set(data)
    for row in data["exits"]:
        assert {"exit", "params", "gflops", "share", "head_params"} <= set(row)
    assert data["exits"][-1]["share"] == 1.0
    # what results.py reads
    from espnet_early_exit.results import load_exit_costs

    assert sorted(load_exit_costs(out.parent)) == [1, 2, 3, 4]
