"""Model zoo and the learned exit policy (issue 14): ``exit_policy.json`` travels in the zip.

A fitted policy beside the model file is packed beside the model's member
(``exp/<exp>/exit_policy.json``), recorded in meta.yaml (``early_exit.exit_policy``), unpacked
beside the model file, and ``exit_policy="learned"`` (API and CLI) decodes from the zip exactly
as from the experiment dir. A zip without one loads, and "learned" then says it carries none; a
damaged one fails packing, naming it. The fast tests use a random tiny model (as
tests/test_inference.py builds it); the `slow` one in tests/test_zoo.py runs
:func:`check_learned_round_trip` on the tiny model trained on mini_an4.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

import espnet_early_exit
from espnet_early_exit import zoo

GREEDY = dict(beam_size=1, ctc_weight=1.0)
GREEDY_CLI = ("--beam_size", "1", "--ctc_weight", "1.0")
EXP = "exp/asr_rand"


# ----------------------------------------------------------------------------- helpers
def copy_recipe(src: Path, exp: str, model_name: str, dst: Path, policy: bool = False) -> Path:
    """The files a pack needs, under the same relative names: ``<exp>/config.yaml``, the model
    (a symlink's target bytes), ``data/token_list/`` if any, ``exit_policy.json`` if asked."""
    names = ["config.yaml", model_name] + (["exit_policy.json"] if policy else [])
    (dst / exp).mkdir(parents=True)
    for name in names:
        shutil.copyfile(src / exp / name, dst / exp / name)
    if (src / "data" / "token_list").is_dir():
        shutil.copytree(src / "data" / "token_list", dst / "data" / "token_list")
    return dst


def fit_beside_model(root: Path, exp: str, model_name: str, data: Path) -> Path:
    """Issue 14's recipe: one all-exits decode of ``data``, the fit beside the model file
    (run in ``root``: the config's relative paths are valid there)."""
    from espnet_early_exit.bin import asr_inference, fit_exit_policy

    cwd = os.getcwd()
    os.chdir(root)
    try:
        asr_inference.main(["--output_dir", "all_exits", "--asr_train_config",
                            f"{exp}/config.yaml", "--asr_model_file", f"{exp}/{model_name}",
                            "--data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
                            "--num_workers", "0", "--log_level", "WARNING", "--all_exits",
                            "true", *GREEDY_CLI])
        assert fit_exit_policy.main(["--all_exits_dir", "all_exits", "--model_file",
                                     f"{exp}/{model_name}", "--log_level", "WARNING"]) == 0
    finally:
        os.chdir(cwd)
    return root / exp / "exit_policy.json"


def pack_in(root: Path, out: Path, exp: str = EXP, model_name: str = "model.pth") -> Path:
    cwd = os.getcwd()
    os.chdir(root)  # the recipe dir, as stage 14 runs
    try:
        return zoo.pack_model(f"{exp}/config.yaml", f"{exp}/{model_name}", out)
    finally:
        os.chdir(cwd)


def decode(s2t, data: Path) -> dict:
    """{utt: (text, token ids, exit, the policy's confidences)} over a Kaldi dir."""
    from _trained_model import read_test_set

    out = {}
    for utt, wav, fs, _ in read_test_set(data):
        r = s2t(wav, fs=fs)[0]
        out[utt] = (r.text, list(r.token_int), r.exit_layer,
                    {k: round(v, 6) for k, v in r.confidences.items()})
    return out


def check_learned_round_trip(src: Path, exp: str, model_name: str, data: Path, work: Path,
                             monkeypatch, thresholds=(0.0, 0.5, 0.9)) -> set:
    """Fit the learned policy for the model in ``src`` (a copy of it under ``work``), pack it,
    and decode ``data`` with ``exit_policy="learned"`` from the zip and from the experiment
    dir, through the API at each threshold and the CLI at one: the same hypotheses, exits and
    confidences (the classifier's probabilities). Returns the exits the policy stopped at
    (threshold 0 stops at the first exit)."""
    from espnet_early_exit.bin.asr_inference import main as asr_inference
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    root = copy_recipe(src, exp, model_name, work / "recipe")
    fit = fit_beside_model(root, exp, model_name, data)
    out = pack_in(root, work / "model.zip", exp, model_name)
    with zipfile.ZipFile(out) as zf:
        assert zf.read(f"{exp}/exit_policy.json") == fit.read_bytes()
    monkeypatch.chdir(root)  # the experiment's config names its files relative to the recipe
    monkeypatch.setenv("HOME", str(work / "home"))  # espnet_model_zoo's default cache (CLI)
    config, model = f"{exp}/config.yaml", f"{exp}/{model_name}"
    exits = set()
    for t in thresholds:
        kw = dict(exit_policy="learned", exit_threshold=t, **GREEDY)
        want = decode(EarlyExitSpeech2Text(config, model, **kw), data)
        got = decode(espnet_early_exit.from_pretrained(out, cachedir=work / "cache", **kw), data)
        assert got == want, t
        exits |= {v[2] for v in want.values()}
    cli = ["--data_path_and_name_and_type", f"{data}/wav.scp,speech,sound", "--num_workers",
           "0", "--log_level", "WARNING", "--exit_policy", "learned", "--exit_threshold",
           str(thresholds[len(thresholds) // 2]), *GREEDY_CLI]
    asr_inference(["--output_dir", str(work / "cli_exp"), "--asr_train_config", config,
                   "--asr_model_file", model, *cli])
    asr_inference(["--output_dir", str(work / "cli_zip"), "--model_tag", str(out), *cli])
    for name in ("text", "token_int", "exit", "confidence"):
        assert (work / "cli_zip" / "1best_recog" / name).read_text() == \
            (work / "cli_exp" / "1best_recog" / name).read_text(), name
    return exits


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def policy_recipe(tmp_path_factory):
    """A recipe dir: a random tiny model in exp/asr_rand (exit 2's CTC head sure of itself, so
    that the policy stops at different exits) and a few utterances in data/test."""
    import soundfile
    from test_inference import FS, make_model_dir, wave

    root = tmp_path_factory.mktemp("policy_recipe")
    make_model_dir(root / EXP, peaky_exit=2)
    data = root / "data" / "test"
    data.mkdir(parents=True)
    scp = []
    for i, seconds in enumerate((1.0, 1.4, 0.9, 1.2, 0.7)):
        soundfile.write(data / f"u{i}.wav", wave(seconds, 30 + i), FS)
        scp.append(f"u{i} {data / f'u{i}.wav'}")
    (data / "wav.scp").write_text("\n".join(scp) + "\n")
    (data / "text").write_text("".join(f"u{i} a b c\n" for i in range(5)))
    return root


@pytest.fixture(scope="module")
def fitted_recipe(policy_recipe, tmp_path_factory):
    """A copy of the random model with its learned policy fitted beside it."""
    root = copy_recipe(policy_recipe, EXP, "model.pth", tmp_path_factory.mktemp("fitted"))
    fit_beside_model(root, EXP, "model.pth", policy_recipe / "data" / "test")
    return root


# ----------------------------------------------------------------------------- tests
def test_learned_policy_decodes_the_same_from_the_zip(policy_recipe, tmp_path, monkeypatch):
    exits = check_learned_round_trip(policy_recipe, EXP, "model.pth",
                                     policy_recipe / "data" / "test", tmp_path, monkeypatch)
    assert exits == {1, 4}  # a random model: no exit agrees with the last, p is constant


def test_learned_policy_is_packed_beside_the_model(fitted_recipe, tmp_path):
    out = pack_in(fitted_recipe, tmp_path / "m.zip")
    with zipfile.ZipFile(out) as zf:
        meta = yaml.safe_load(zf.read("meta.yaml"))
        packed = zf.read(f"{EXP}/exit_policy.json")
    assert packed == (fitted_recipe / EXP / "exit_policy.json").read_bytes()
    record = meta["early_exit"]["exit_policy"]
    assert record == zoo.packed_exit_policy(meta)
    assert record["file"] == f"{EXP}/exit_policy.json" == \
        zoo.exit_policy_member(meta["files"]["asr_model_file"])
    assert record["file"] in meta["early_exit"]["extra_files"]
    assert record["exits"] == [1, 2, 3]  # every exit but the last
    assert record["inputs"] == json.loads(packed)["inputs"] and "entropy" in record["inputs"]
    assert record["sha256"] == hashlib.sha256(packed).hexdigest()
    # unpacked beside the model file, where exit_policy="learned" looks for it by name
    info = zoo.unpack_model(out, cachedir=tmp_path / "cache")
    assert (Path(info["asr_model_file"]).parent / zoo.EXIT_POLICY_NAME).read_bytes() == packed
    # the Hugging Face folder carries it, and its card says so
    exp_dir = tmp_path / "exp_dir"
    exp_dir.mkdir()
    repo = zoo.prepare_hf_repo(out, exp_dir, "someone/ee-learned", out_dir=tmp_path / "repo")
    assert (repo / EXP / "exit_policy.json").read_bytes() == packed
    card = (repo / "README.md").read_text()
    assert f"|learned exit policy|packed (`{EXP}/exit_policy.json`), exits 1, 2, 3|" in card
    assert "## Learned exit policy" in card and "(exits 1, 2, 3)" in card and "`entropy`" in card
    assert 'from_pretrained("someone/ee-learned", exit_policy="learned", exit_threshold=0.9)' \
        in card and "0.9 is only an example" in card
    (exp_dir / "selected_thresholds.json").write_text(
        json.dumps({"learned": {"threshold": 0.75, "dev_set": "dev"}}))
    repo = zoo.prepare_hf_repo(out, exp_dir, "someone/ee-learned", out_dir=tmp_path / "repo")
    card = (repo / "README.md").read_text()
    assert 'exit_policy="learned", exit_threshold=0.75)' in card
    assert "0.9 is only an example" not in card


def test_zip_without_learned_policy_loads_and_says_so(policy_recipe, fitted_recipe, tmp_path):
    from test_zoo import _rezip

    root = copy_recipe(policy_recipe, EXP, "model.pth", tmp_path / "recipe")
    out = pack_in(root, tmp_path / "m.zip")
    with zipfile.ZipFile(out) as zf:
        meta = yaml.safe_load(zf.read("meta.yaml"))
        assert not any(n.endswith("exit_policy.json") for n in zf.namelist())
    assert "exit_policy" not in meta["early_exit"] and zoo.packed_exit_policy(meta) is None
    s2t = espnet_early_exit.from_pretrained(out, cachedir=tmp_path / "cache", exit_layer=2,
                                            **GREEDY)
    assert {v[2] for v in decode(s2t, policy_recipe / "data" / "test").values()} == {2}
    with pytest.raises(FileNotFoundError) as e:
        espnet_early_exit.from_pretrained(out, cachedir=tmp_path / "cache",
                                          exit_policy="learned", exit_threshold=0.5)
    msg = str(e.value)
    assert str(out) in msg and "carries none" in msg and "fit_exit_policy" in msg
    # a fit given explicitly still works with a zip that has none
    fit = fitted_recipe / EXP / "exit_policy.json"
    s2t = espnet_early_exit.from_pretrained(out, cachedir=tmp_path / "cache",
                                            exit_policy="learned", exit_threshold=0.5,
                                            exit_policy_conf={"model": str(fit)}, **GREEDY)
    assert s2t.policy.classifier is not None
    # meta.yaml records a policy that is not there: named, not silently ignored
    with zipfile.ZipFile(pack_in(fitted_recipe, tmp_path / "with.zip")) as zf:
        with_meta = zf.read("meta.yaml")
    lying = _rezip(out, tmp_path / "lying.zip", replace={"meta.yaml": with_meta})
    with pytest.raises(zoo.IncompleteArchiveError, match=r"lying.zip: meta.yaml records a "
                       rf"learned exit policy \({EXP}/exit_policy.json\)"):
        zoo.unpack_model(lying, cachedir=tmp_path / "cache2")


@pytest.mark.parametrize("content, why", [
    ("{not json", "JSONDecodeError"),
    (json.dumps({"kind": "something_else", "exits": {}}), "not a learned exit policy"),
    (json.dumps({"kind": "per_exit_logistic_regression", "exits": {"1": {"mean": [0.0]}}}),
     "KeyError"),
    (json.dumps([1, 2]), "AttributeError"),
])
def test_damaged_learned_policy_fails_packing(policy_recipe, tmp_path, caplog, content, why):
    from espnet_early_exit.bin.pack_model import main

    root = copy_recipe(policy_recipe, EXP, "model.pth", tmp_path / "recipe")
    (root / EXP / "exit_policy.json").write_text(content)
    out = tmp_path / "m.zip"
    out.write_bytes(b"previous")
    with pytest.raises(zoo.ModelZooError) as e:
        pack_in(root, out)
    msg = str(e.value)
    assert f"{EXP}/exit_policy.json is not a valid learned exit policy" in msg and why in msg
    assert out.read_bytes() == b"previous"  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip", "recipe"]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = main(["--asr_train_config", f"{EXP}/config.yaml", "--asr_model_file",
                   f"{EXP}/model.pth", "--outpath", str(tmp_path / "cli.zip")])
    finally:
        os.chdir(cwd)
    assert rc == 1 and f"{EXP}/exit_policy.json is not a valid" in caplog.text
    assert not (tmp_path / "cli.zip").exists()


def test_learned_policy_of_other_exits_fails_packing(fitted_recipe, tmp_path):
    root = copy_recipe(fitted_recipe, EXP, "model.pth", tmp_path / "recipe", policy=True)
    fit = root / EXP / "exit_policy.json"
    data = json.loads(fit.read_text())
    data["exits"]["7"] = data["exits"]["1"]
    fit.write_text(json.dumps(data))
    with pytest.raises(zoo.ModelZooError, match=r"exit_policy.json was fitted for exits "
                       r"\[1, 2, 3, 7\], but the model's exits are \[1, 2, 3, 4\]"):
        pack_in(root, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()
