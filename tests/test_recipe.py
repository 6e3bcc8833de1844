"""The default recipe end to end (./run.sh on mini_an4) and the stage driver's helpers.

``test_default_recipe_*`` run ``./run.sh --workdir <tmp>`` once (every stage, a few minutes on
2 CPU cores), check what it leaves behind (RESULTS.md with a row per exit, plots, decode dirs)
and that a second run skips every stage. The driver_utils tests are fast unit tests of the
Python helpers behind stages 2, 4, 5 and 12.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"
sys.path.insert(0, str(DRIVER.parent / "scripts"))
import driver_utils  # noqa: E402
from conftest import recipe_env  # noqa: E402

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
    config = yaml.safe_load((REPO / "conf" / "train_asr.yaml").read_text())
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


def test_default_recipe_plots_and_costs(recipe) -> None:
    exp = recipe["exp"]
    for name in ("wer_vs_exit.png", "wer_vs_compute.png"):
        assert (exp / name).stat().st_size > 1000, name
        assert (exp / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    costs = json.loads((exp / "exit_costs.json").read_text())
    assert [e["exit"] for e in costs["exits"]] == exit_layers()


def test_default_recipe_packs_the_model(recipe) -> None:
    import zipfile

    packed = recipe["exp"] / "asr_model.zip"
    with zipfile.ZipFile(packed) as z:
        names = z.namelist()
        meta = yaml.safe_load(z.read("meta.yaml"))
    assert "espnet_early_exit" in meta and "espnet" in meta and "torch" in meta, meta
    assert any(n.endswith("RESULTS.md") for n in names), names
    assert any(n.endswith(".pth") for n in names), names


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


def test_default_recipe_logs_every_stage(recipe) -> None:
    log = recipe["first"]
    for n in (1, 3, 4, 5, 10, 11, 12, 13, 14):
        assert re.search(rf"Stage {n}: ", log), f"stage {n} not in the log"
    assert "Stage 15: skipped (no --hf_repo" in log
    assert "Stage 2: no --speed_perturb_factors" in log
    assert re.search(r"results: .*RESULTS\.md", log)


def test_default_recipe_rerun_skips_every_stage(recipe) -> None:
    log = recipe["second"]
    for n in (1, 3, 4, 5, 10, 11, 12, 13, 14):
        assert re.search(rf"Stage {n}: done already, skipping \(remove .+ to redo\)", log), \
            f"stage {n} was not skipped:\n{log}"
    assert not re.search(r"Stage (1|3|4|5|10|11|12|13|14): (?!done already)", log), log
    assert recipe["second_s"] < 60, f"the rerun took {recipe['second_s']:.0f} s"


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
                   "--local_data_script", "--dist_launcher", "--workdir"):
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


# ------------------------------------------------------------------------------ driver_utils


def write_dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_text(content)
    return path


def test_speed_perturb_changes_duration_and_names_like_espnet(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    soundfile.write(str(audio), (np.sin(np.arange(16000) / 10) * 8000).astype(np.int16), 16000)
    data = write_dir(tmp_path / "data" / "train", {
        "wav.scp": f"spk1-u1 {audio}\n", "text": "spk1-u1 HELLO\n", "utt2spk": "spk1-u1 spk1\n",
        "spk2utt": "spk1 spk1-u1\n"})
    out = tmp_path / "data" / "train_sp"
    driver_utils.speed_perturb(data, out, tmp_path / "sp", ["0.9", "1.0", "1.1"], nj=1)
    utt2spk = driver_utils.read_table(out / "utt2spk")
    assert utt2spk == {"spk1-u1": "spk1", "sp0.9-spk1-u1": "sp0.9-spk1", "sp1.1-spk1-u1": "sp1.1-spk1"}
    wav = driver_utils.read_table(out / "wav.scp")
    assert wav["spk1-u1"] == str(audio)
    assert soundfile.info(wav["sp0.9-spk1-u1"]).frames == pytest.approx(16000 / 0.9, abs=2)
    assert soundfile.info(wav["sp1.1-spk1-u1"]).frames == pytest.approx(16000 / 1.1, abs=2)
    assert (out / ".done").is_file() and not (tmp_path / "data" / "train_sp.tmp").exists()
    assert list((out / "text").read_text().splitlines()) == sorted((out / "text").read_text().splitlines())


def test_speed_perturb_cuts_segments(tmp_path: Path) -> None:
    audio = tmp_path / "talk.wav"
    soundfile.write(str(audio), np.zeros(48000, dtype=np.int16), 16000)
    data = write_dir(tmp_path / "train", {
        "wav.scp": f"talk {audio}\n", "segments": "talk-a talk 0.50 1.50\n", "text": "talk-a HI\n",
        "utt2spk": "talk-a talk\n", "spk2utt": "talk talk-a\n"})
    out = tmp_path / "train_sp"
    driver_utils.speed_perturb(data, out, tmp_path / "sp", ["1.0", "0.5"], nj=1)
    segments = driver_utils.read_table(out / "segments")
    assert segments == {"talk-a": "talk 0.50 1.50", "sp0.5-talk-a": "sp0.5-talk-a 0.00 -1"}
    assert soundfile.info(driver_utils.read_table(out / "wav.scp")["sp0.5-talk-a"]).frames == 32000


def test_filter_dir_drops_short_long_and_empty(tmp_path: Path) -> None:
    src = write_dir(tmp_path / "org" / "train", {
        "wav.scp": "a /a.flac\nb /b.flac\nc /c.flac\nd /d.flac\n",
        "utt2num_samples": "a 800\nb 16000\nc 400000\nd 16000\n",
        "text": "a X\nb HELLO\nc LONG\nd \n", "utt2spk": "a s\nb s\nc s\nd s\n",
        "spk2utt": "s a b c d\n", "feats_type": "raw\n"})
    out = tmp_path / "train"
    driver_utils.filter_dir(src, out, 16000, 0.1, 20)
    assert (out / "wav.scp").read_text() == "b /b.flac\n"
    assert (out / "spk2utt").read_text() == "s b\n"
    assert (out / "feats_type").read_text() == "raw\n"
    info = json.loads((out / ".done").read_text())
    assert info["counts"] == {"input": 4, "kept": 1, "too_short": 1, "too_long": 1, "empty_text": 1}


def test_bpe_token_list_order(tmp_path: Path) -> None:
    text = tmp_path / "text"
    words = "HELLO WORLD THIS IS A SMALL TEST OF THE SENTENCEPIECE TOKEN LIST".split()
    text.write_text("".join(f"u{i} {' '.join(words[i % 5:])} [unk] {words[i % len(words)]}\n" for i in range(60)))
    out = tmp_path / "bpe_unigram30"
    driver_utils.bpe_token_list(text, out, 30, "unigram", 1.0, 100000000, "[unk]", "<blank>", "<unk>",
                                "<sos/eos>")
    tokens = (out / "tokens.txt").read_text().splitlines()
    assert tokens[:3] == ["<blank>", "<unk>", "[unk]"]
    assert tokens[-1] == "<sos/eos>"
    assert len(tokens) == 30 and "<s>" not in tokens and "</s>" not in tokens
    assert (out / "bpe.model").is_file()


def test_split_keys_and_merge_decode(tmp_path: Path) -> None:
    keys = tmp_path / "wav.scp"
    keys.write_text("".join(f"u{i} /x/{i}.flac\n" for i in range(5)))
    driver_utils.split_keys(keys, 2, str(tmp_path / "keys.JOB.scp"))
    parts = [(tmp_path / f"keys.{j}.scp").read_text().split("\n")[:-1] for j in (1, 2)]
    assert [len(p) for p in parts] == [3, 2] and sum(parts, []) == keys.read_text().split("\n")[:-1]

    outs = []
    for j, (utts, wall) in enumerate(((["u3", "u1"], 1.0), (["u2"], 0.5)), 1):
        out = write_dir(tmp_path / f"output.{j}" / "1best_recog", {
            "text": "".join(f"{u} HYP {u}\n" for u in utts), "exit": "".join(f"{u} 2\n" for u in utts)})
        (out.parent / "timing.json").write_text(json.dumps(
            {"rtf": wall / 2, "audio_seconds": 2.0, "wall_seconds": wall, "n_utt": len(utts)}))
        outs.append(out.parent)
    driver_utils.merge_decode(outs, tmp_path / "merged")
    merged = tmp_path / "merged"
    assert (merged / "text").read_text() == "u1 HYP u1\nu2 HYP u2\nu3 HYP u3\n"
    assert (merged / "exit").read_text() == "u1 2\nu2 2\nu3 2\n"
    timing = json.loads((merged / "timing.json").read_text())
    assert timing["wall_seconds"] == 1.5 and timing["audio_seconds"] == 4.0 and timing["n_utt"] == 3
    assert timing["rtf"] == pytest.approx(1.5 / 4.0)
    assert (merged / ".done").is_file()


def test_config_get(tmp_path: Path) -> None:
    assert driver_utils.config_get(REPO / "conf" / "train_asr.yaml", "encoder_conf.exit_layers", None) == \
        " ".join(map(str, exit_layers()))
    assert driver_utils.config_get(REPO / "conf" / "train_asr.yaml", "best_model_criterion.0", None) == \
        "valid acc max"
    assert driver_utils.config_get(REPO / "conf" / "train_asr.yaml", "normalize", "global_mvn") == "global_mvn"
