"""The experiment grid (espnet_early_exit.grid, egs2/TEMPLATE/asr1/grid.sh, conf/grid/*.yaml).

Fast tests: the grid files load, every config they name exists and the derived configs
(single-exit baselines, the stock source of fine-tuning, shared/independent SSL heads) parse with
asr_train's parser; GRID.md is built right from fake scored decode dirs.
``test_mini_an4_grid_end_to_end`` runs the whole mini_an4 grid (every row: training, decoding
at every exit and with the policies, scoring) into a temporary dir and checks GRID.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, build_args, recipe_env

from espnet_early_exit.grid import (
    Experiment,
    experiment_config,
    load_grid,
    render_grid_md,
    single_exit_overrides,
    stock_config,
)

GRIDS = REPO / "conf" / "grid"
GRID_SH = REPO / "egs2" / "TEMPLATE" / "asr1" / "grid.sh"
KINDS_IN_PAPER = {"ee_scratch_ctc", "ee_scratch_aed", "single_exit", "ee_finetuned", "ssl_shared",
                  "ssl_indep"}


def table(md: str, heading: str) -> list[list[str]]:
    """The first markdown table after ``heading`` (rows of cells, header included)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
        elif line.startswith("#"):
            break
    return [r for r in rows if not all(set(c) <= {"-"} for c in r)]


# ------------------------------------------------------------------------------- grid files
@pytest.mark.parametrize("name", ["mini_an4", "librispeech_100"])
def test_grid_files_load(name):
    grid = load_grid(GRIDS / f"{name}.yaml", REPO)
    assert grid.recipe.is_file(), grid.recipe
    kinds = {x.kind for x in grid.experiments}
    assert KINDS_IN_PAPER <= kinds, KINDS_IN_PAPER - kinds
    for x in grid.experiments:
        for p in (x.asr_config, x.inference_config):
            assert p is None or Path(p).is_file(), (x.name, p)
    depths = {x.depth for x in grid.experiments if x.kind == "single_exit"}
    assert set(grid.exits) <= depths  # a single-exit baseline at every exit's depth
    assert Path(grid.stats_config).is_file()


@pytest.mark.parametrize("name", ["mini_an4", "librispeech_100"])
def test_derived_configs_parse(name, token_list_file, tmp_path):
    """Every experiment's config (as the grid writes it) is accepted by asr_train's parser."""
    grid = load_grid(GRIDS / f"{name}.yaml", REPO)
    ctx = {"workdir": str(tmp_path), "expdir": str(tmp_path / "exp"),
           "grid_dir": str(tmp_path / "g"), "repo": str(REPO)}
    for x in grid.experiments:
        if x.kind == "ee_finetuned":
            continue  # its config comes from add_exits at run time
        base = yaml.safe_load(Path(x.asr_config).read_text())
        config = experiment_config(x, base, ctx)
        args = build_args(config, token_list_file, tmp_path)
        if x.kind == "single_exit":
            assert args.encoder_conf["exit_layers"] == [x.depth]
            assert args.encoder_conf["num_blocks"] == x.depth
            assert len(args.model_conf.get("exit_weights", [1.0])) == 1
        if x.kind in ("ssl_shared", "ssl_indep"):
            assert args.model_conf["share_exit_heads"] is (x.kind == "ssl_shared")
            assert args.encoder == "ee_hf_ssl"


def test_single_exit_and_stock_configs(build_model):
    base = yaml.safe_load((REPO / "conf" / "tuning" / "grid_tiny_ee_ctc.yaml").read_text())
    over = single_exit_overrides(base, 2)
    assert over == {"encoder_conf": {"exit_layers": [2], "num_blocks": 2},
                    "model_conf": {"exit_weights": [1.0]}}
    x = Experiment(name="se", kind="single_exit", label="se", depth=4)
    se = experiment_config(x, base, {})
    stock = stock_config(se)
    assert stock["encoder"] == "conformer" and stock["model"] == "espnet"
    assert "exit_layers" not in stock["encoder_conf"]
    assert "share_exit_heads" not in stock["model_conf"]
    # same parameter names: the EE single-exit model's weights load into the stock model
    ee_model, _ = build_model(se)
    stock_model, _ = build_model(stock)
    assert set(ee_model.state_dict()) == set(stock_model.state_dict())
    with pytest.raises(ValueError):
        stock_config(base)  # two exits: no stock version


def test_load_grid_errors(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text(yaml.safe_dump({"name": "g", "recipe": "run.sh", "experiments": [
        {"name": "ft", "kind": "ee_finetuned", "init_from": "nope", "exit_layers": [2, 4]}]}))
    with pytest.raises(ValueError, match="init_from"):
        load_grid(bad, tmp_path)
    bad.write_text(yaml.safe_dump({"name": "g", "recipe": "run.sh", "experiments": [
        {"name": "a", "kind": "what", "asr_config": "x.yaml"}]}))
    with pytest.raises(ValueError, match="kind"):
        load_grid(bad, tmp_path)


def test_paths_are_relative_to_the_given_root(tmp_path):
    """Relative paths of a grid file start from the root load_grid is given, not the package."""
    from espnet_early_exit.grid import GridRunner

    (tmp_path / "conf").mkdir()
    grid_file = tmp_path / "conf" / "g.yaml"
    grid_file.write_text(yaml.safe_dump({
        "name": "g", "recipe": "run.sh", "stats_config": "conf/stats.yaml",
        "ssl_models": [{"family": "wav2vec2", "path": "{root}/ssl/w2v2"}],
        "experiments": [{"name": "ee", "kind": "ee_scratch_ctc", "asr_config": "conf/a.yaml",
                         "inference_config": "/abs/decode.yaml"}]}))
    grid = load_grid(grid_file, tmp_path)
    root = tmp_path.resolve()
    assert grid.root == root and grid.recipe == root / "run.sh"
    assert grid.stats_config == str(root / "conf" / "stats.yaml")
    assert grid.experiments[0].asr_config == str(root / "conf" / "a.yaml")
    assert grid.experiments[0].inference_config == "/abs/decode.yaml"
    runner = GridRunner(grid, ["--workdir", str(tmp_path / "w")], dry_run=True, log=lambda m: None)
    assert runner.ctx["root"] == runner.ctx["repo"] == str(root)


# ------------------------------------------------------------------------------- GRID.md
def _scored(d: Path, wer: float, exits=None):
    (d / "score_wer").mkdir(parents=True)
    (d / "score_wer" / "result.json").write_text(json.dumps(
        {"wer": wer, "n_ref": 10, "n_utt": 2, "sub": 0, "del": 0, "ins": 0, "corr": 10}))
    (d / ".done").touch()
    if exits:
        (d / "exit").write_text("".join(f"u{i} {k}\n" for i, k in enumerate(exits)))


def test_render_grid_md(tmp_path):
    grid_file = tmp_path / "g.yaml"
    cfg = str(REPO / "conf" / "tuning" / "grid_tiny_ee_ctc.yaml")
    grid_file.write_text(yaml.safe_dump({
        "name": "g", "recipe": "run.sh", "exits": [2, 4], "note": "tiny: meaningless",
        "experiments": [
            {"name": "ee", "kind": "ee_scratch_ctc", "label": "EE", "asr_config": cfg},
            {"name": "se", "kind": "single_exit", "asr_config": cfg, "depths": [2, 4]},
        ]}))
    grid = load_grid(grid_file, REPO)
    assert [x.name for x in grid.experiments] == ["ee", "se_d2", "se_d4"]
    dirs = {x.name: tmp_path / f"asr_{x.name}" for x in grid.experiments}
    dec = dirs["ee"] / "decode_grid" / "test"
    _scored(dec / "exit2", 40.0)
    _scored(dec / "exit4", 20.0)
    _scored(dec / "entropy_th0.5", 30.0, exits=[2, 4])
    _scored(dec / "nbest_posterior_th0.9", 25.0, exits=[2, 2])
    (dirs["ee"] / "exit_costs.json").write_text(json.dumps(
        {"exits": [{"exit": 2, "share": 0.6}, {"exit": 4, "share": 1.0}]}))
    _scored(dirs["se_d2"] / "decode_grid" / "test" / "exit2", 35.0)
    _scored(dirs["se_d4"] / "decode_grid" / "test" / "exit4", 22.5)
    md = render_grid_md(grid, dirs)
    assert "tiny: meaningless" in md
    rows = table(md, "### WER per exit")
    assert rows[0] == ["model", "kind", "exit 2", "exit 4"]
    body = {r[0]: r[2:] for r in rows[1:]}
    assert body["EE (`ee`)"] == ["40.0", "20.0"]
    assert body["single-exit (no-EE), 2 blocks (`se_d2`)"] == ["35.0", "-"]
    assert body["single-exit (no-EE), 4 blocks (`se_d4`)"] == ["-", "22.5"]
    pol = table(md, "### Exit selection: entropy vs posterior")
    assert pol[0] == ["model", "policy", "threshold", "WER", "avg exit", "avg compute share"]
    assert pol[1] == ["`ee`", "entropy", "0.5", "30.0", "3.00", "0.800"]
    assert pol[2] == ["`ee`", "nbest_posterior", "0.9", "25.0", "2.00", "0.600"]
    assert "|`ee`|0.75|-|25.0 (0.9)|" in md


# ------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_mini_an4_grid_end_to_end(tmp_path):
    grid = load_grid(GRIDS / "mini_an4.yaml", REPO)
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(GRID_SH), str(GRIDS / "mini_an4.yaml"), "--jobs", "2", "--workdir", str(tmp_path)],
        env=recipe_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-5000:]
    md_path = tmp_path / "exp" / "grid_mini_an4" / "GRID.md"
    md = md_path.read_text()
    print(f"grid wall time {elapsed:.0f} s\n{md}")
    assert "the WERs mean nothing" in md

    rows = table(md, "### WER per exit")
    assert rows[0] == ["model", "kind"] + [f"exit {k}" for k in grid.exits]
    body = {re.search(r"`([^`]+)`", r[0]).group(1): r for r in rows[1:]}
    decoded = [x for x in grid.experiments if x.decode]
    assert sorted(body) == sorted(x.name for x in decoded)
    number = re.compile(r"^\d+(\.\d+)?$")
    for x in decoded:
        cells = dict(zip(grid.exits, body[x.name][2:]))
        assert body[x.name][1] == x.kind
        if x.kind == "single_exit":  # only its own depth's column
            assert number.match(cells[x.depth]), (x.name, cells)
            assert all(c == "-" for k, c in cells.items() if k != x.depth), (x.name, cells)
        else:  # early-exit models: every exit
            assert all(number.match(c) for c in cells.values()), (x.name, cells)

    pol = table(md, "### Exit selection: entropy vs posterior")
    assert pol[0] == ["model", "policy", "threshold", "WER", "avg exit", "avg compute share"]
    with_policies = {x.name for x in grid.experiments if x.exit_policies}
    assert with_policies
    seen = {(r[0].strip("`"), r[1]) for r in pol[1:]}
    for name in with_policies:
        for policy in ("entropy", "nbest_posterior"):
            assert (name, policy) in seen, (name, policy, seen)
    for r in pol[1:]:
        assert number.match(r[3]) and number.match(r[5]), r
        assert 0.0 < float(r[5]) <= 1.0

    # the fine-tuned row started from the single-exit model's weights
    ft = next(x for x in grid.experiments if x.kind == "ee_finetuned")
    report = json.loads((tmp_path / "exp" / "grid_mini_an4" / "init" / ft.name / "add_exits.json").read_text())
    assert report["verified_max_abs_diff"] < 1e-4
    assert f"asr_mini_an4_{ft.init_from}" in report["source_model"]

    # a rerun finds everything done and only rewrites the table
    again = subprocess.run(
        ["bash", str(GRID_SH), str(GRIDS / "mini_an4.yaml"), "--table_only", "--workdir", str(tmp_path)],
        env=recipe_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert table(md_path.read_text(), "### WER per exit") == rows
