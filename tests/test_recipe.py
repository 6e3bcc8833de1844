"""The default recipe end to end (./run.sh on mini_an4) and the stage driver's helpers.

``test_default_recipe_*`` run ``./run.sh --workdir <tmp>`` once (every stage, a few minutes on
2 CPU cores), check what it leaves behind (RESULTS.md with a row per exit, plots, decode dirs)
and that a second run skips every stage; the driver's option checks. The Python helpers behind the
stages are tested in tests/test_stages.py and tests/test_format_audio.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import recipe_env

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"
MINI_AN4_CONFIG = REPO / "egs2" / "mini_an4" / "asr1" / "conf" / "train_asr.yaml"

TEST_SETS = ["test"]  # run.sh's --test_sets
POLICY_DIRS = ["entropy_th0.52", "entropy_th0.56", "max_posterior_th0.4", "max_posterior_th0.5"]


def run_recipe(workdir: Path, *args: str, timeout: float = 1200) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "run.sh"), "--workdir", str(workdir), *args],
        env=recipe_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    return proc, time.monotonic() - start


def exit_layers() -> list[int]:
    config = yaml.safe_load(MINI_AN4_CONFIG.read_text())
    return [int(k) for k in config["encoder_conf"]["exit_layers"]]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> dict:
    """./run.sh in a temporary working directory, then a second time."""
    workdir = tmp_path_factory.mktemp("mini_an4")
    first, first_s = run_recipe(workdir)
    assert first.returncode == 0, f"./run.sh failed after {first_s:.0f} s:\n{first.stdout[-6000:]}"
    second, second_s = run_recipe(workdir)
    assert second.returncode == 0, f"second ./run.sh failed:\n{second.stdout[-6000:]}"
    exps = [p for p in (workdir / "exp").glob("asr_*") if p.is_dir() and not p.name.startswith("asr_stats")]
    assert len(exps) == 1, f"expected one experiment dir, found {exps}"
    print(f"./run.sh: {first_s:.0f} s; rerun: {second_s:.1f} s")
    return {"workdir": workdir, "exp": exps[0], "first": first.stdout, "second": second.stdout,
            "first_s": first_s, "second_s": second_s}


def results_rows(results_md: str, test_set: str) -> list[list[str]]:
    """Rows (cells) of the tables in the ``### <test_set>`` section of RESULTS.md."""
    section = re.search(rf"^### {re.escape(test_set)}\b.*?(?=^#|\Z)", results_md, re.M | re.S)
    assert section, f"no '### {test_set}' section in RESULTS.md"
    rows = []
    for line in section.group(0).splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_default_recipe_results_md_has_every_exit(recipe) -> None:
    results = (recipe["exp"] / "RESULTS.md").read_text()
    for test_set in TEST_SETS:
        rows = results_rows(results, test_set)
        exits = sorted(int(r[0]) for r in rows if r[0].isdigit())
        assert exits == exit_layers(), f"{test_set}: rows for exits {exits}, config has {exit_layers()}"
        for row in rows:
            if row[0].isdigit():
                wer = float(row[1])
                assert 0.0 <= wer <= 300.0
        policies = [r for r in rows if r[0] in ("entropy", "max_posterior")]
        assert len(policies) == len(POLICY_DIRS), f"{test_set}: policy rows {policies}"


@pytest.mark.slow
def test_default_recipe_plots_and_costs(recipe) -> None:
    exp = recipe["exp"]
    for name in ("wer_vs_exit.png", "wer_vs_compute.png"):
        assert (exp / name).stat().st_size > 1000, name
        assert (exp / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    costs = json.loads((exp / "exit_costs.json").read_text())
    assert [e["exit"] for e in costs["exits"]] == exit_layers()


@pytest.mark.slow
def test_default_recipe_packs_the_model(recipe) -> None:
    import zipfile

    packed = recipe["exp"] / "asr_model.zip"
    with zipfile.ZipFile(packed) as z:
        names = z.namelist()
        meta = yaml.safe_load(z.read("meta.yaml"))
    assert "espnet_early_exit" in meta and "espnet" in meta and "torch" in meta, meta
    assert any(n.endswith("RESULTS.md") for n in names), names
    assert any(n.endswith(".pth") for n in names), names


@pytest.mark.slow
def test_default_recipe_decode_dirs(recipe) -> None:
    decodes = list(recipe["exp"].glob("decode_*"))
    assert len(decodes) == 1, decodes
    for test_set in TEST_SETS:
        ref = (recipe["workdir"] / "dump" / "raw" / test_set / "text").read_text().splitlines()
        utts = sorted(line.split()[0] for line in ref)
        for name in [f"exit{k}" for k in exit_layers()] + POLICY_DIRS:
            d = decodes[0] / test_set / name
            for f in ("text", "token", "score", "exit", ".done"):
                assert (d / f).is_file(), f"{d}/{f} missing"
            for f in ("text", "score", "exit"):
                keys = [line.split()[0] for line in (d / f).read_text().splitlines()]
                assert keys == utts, f"{d}/{f}: {keys} != {utts}"
            for metric in ("wer", "cer"):
                result = json.loads((d / f"score_{metric}" / "result.json").read_text())
                assert result["n_utt"] == len(utts)
            timing = json.loads((d / "timing.json").read_text())
            assert timing["rtf"] == pytest.approx(timing["wall_seconds"] / timing["audio_seconds"])
            if name.startswith("exit"):
                assert set((d / "exit").read_text().split()[1::2]) == {name[4:]}


@pytest.mark.slow
def test_default_recipe_logs_every_stage(recipe) -> None:
    log = recipe["first"]
    for n in (1, 3, 4, 5, 10, 11, 12, 13, 14):
        assert re.search(rf"Stage {n}: ", log), f"stage {n} not in the log"
    assert "Stage 15: skipped (no --hf_repo" in log
    assert "Stage 2: no --speed_perturb_factors" in log
    assert re.search(r"results: .*RESULTS\.md", log)


@pytest.mark.slow
def test_default_recipe_rerun_skips_every_stage(recipe) -> None:
    log = recipe["second"]
    for n in (1, 3, 4, 5, 10, 11, 12, 13, 14):
        assert re.search(rf"Stage {n}: done already, skipping \(remove .+ to redo\)", log), \
            f"stage {n} was not skipped:\n{log}"
    assert not re.search(r"Stage (1|3|4|5|10|11|12|13|14): (?!done already)", log), log
    assert recipe["second_s"] < 60, f"the rerun took {recipe['second_s']:.0f} s"


@pytest.mark.slow
def test_default_recipe_redoes_an_interrupted_stage(recipe) -> None:
    """A stage without its marker (an interrupted run left <dir>.tmp) is cleaned and redone."""
    dump = recipe["workdir"] / "dump" / "raw"
    before = (dump / "train" / "text").read_text()
    (dump / "train").rename(dump / "train.tmp")  # as if stage 4 died before its rename
    (dump / "train.tmp" / ".done").unlink()
    proc, _ = run_recipe(recipe["workdir"], "--stage", "4", "--stop_stage", "4")
    assert proc.returncode == 0, proc.stdout
    assert "Stage 4: keep utterances" in proc.stdout
    assert (dump / "train" / ".done").is_file() and not (dump / "train.tmp").exists()
    assert (dump / "train" / "text").read_text() == before


@pytest.mark.slow
def test_second_training_in_the_same_exp_dir_is_refused(recipe) -> None:
    """Two runs on one workdir must not train into the same experiment dir at once."""
    import fcntl

    exp = recipe["exp"]
    done = exp / ".train.done"
    done.rename(exp / ".train.done.kept")  # so that stage 11 wants to train
    try:
        with open(exp / ".train.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another training" holds it
            proc, _ = run_recipe(recipe["workdir"], "--stage", "11", "--stop_stage", "11")
    finally:
        (exp / ".train.done.kept").rename(done)
    assert proc.returncode != 0
    assert "another training is running in" in proc.stdout and ".train.lock" in proc.stdout


# ------------------------------------------------------------------------------ driver CLI


def run_driver(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DRIVER), *args], cwd=cwd, env=recipe_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


def test_driver_help_lists_options_and_stages(tmp_path: Path) -> None:
    proc = run_driver("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--stage", "--stop_stage", "--ngpu", "--num_nodes", "--nj", "--inference_nj",
                   "--asr_config", "--inference_config", "--inference_args", "--inference_tag",
                   "--asr_tag", "--expdir", "--dumpdir", "--train_set", "--valid_set", "--test_sets",
                   "--token_type", "--nbpe", "--bpemode", "--speed_perturb_factors", "--min_wav_duration",
                   "--max_wav_duration", "--exit_policies", "--inference_asr_model", "--lang",
                   "--local_data_script", "--dist_launcher", "--workdir", "--inference_backend",
                   "--onnx_quantize"):
        assert option in proc.stdout, option
    assert "6-9" in proc.stdout  # says that the LM stages do not exist
    assert not list(tmp_path.iterdir())  # --help writes nothing


@pytest.mark.parametrize("args, message", [
    (["--no_such_option", "1"], "unknown option --no_such_option"),
    (["--train_set", "a", "--valid_set", "b"], "--test_sets is required"),
    (["--train_set", "a", "--valid_set", "b", "--test_sets", "c", "--token_type", "word"], "char or bpe"),
    (["--train_set", "a", "--valid_set", "b", "--test_sets", "c", "--exit_policies", "entropy:x"], "bad threshold"),
    (["--train_set", "a", "--valid_set", "b", "--test_sets", "c", "--num_nodes", "2"], "--dist_launcher"),
])
def test_driver_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_driver(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stdout
