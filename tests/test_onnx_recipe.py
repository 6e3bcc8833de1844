"""Stage 12-13 with ``asr.sh --inference_backend onnx`` (issue 15): the experiment's model is
exported once (egs2/TEMPLATE/asr1/asr.sh, espnet_early_exit/stages/onnx_backend.py), each test
set is decoded with onnxruntime into decode dirs of its own, and stage 13 scores them as it
scores the torch backend's.

The experiment is a random tiny Conformer (conf/tuning/train_ee_conformer_tiny.yaml, 4 exits,
character tokens, as in tests/test_onnx.py) laid out as stage 11 leaves it, with a dumped test
set of noise: equality of the two backends needs no training. The torch decoder's hypotheses
are decoded in the test's process (the torch stage 12 is tests/test_recipe.py's) and written
where the torch backend's stage 12 puts them, which the onnx backend must leave alone. What the
onnx runtime cannot decode (beam search, a policy it lacks) stops the driver before any stage
runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import CHAR_TOKENS, build_args, recipe_env, tiny_config
from espnet_early_exit.stages.onnx_backend import check_onnx_decoding, greedy_problems

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"
GREEDY = REPO / "conf" / "decode_ee_ctc_greedy.yaml"
BEAM = REPO / "conf" / "decode_ee_ctc_beam.yaml"
FS = 16000
EXITS = (1, 2, 3, 4)
POLICY = "max_posterior_th0.3"
TAG = "ee_ctc_greedy_asr_model_model"  # the inference tag of GREEDY and model.pth


def sets_args(*extra: str) -> list[str]:
    return ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test", *extra]


def driver(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DRIVER), *args], cwd=cwd, env=recipe_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def make_experiment(root: Path) -> None:
    """exp/asr_tiny/{config.yaml,model.pth} (random weights) and dump/raw/test (noise, 16 kHz)."""
    from espnet_early_exit.task import EarlyExitASRTask

    exp = root / "exp" / "asr_tiny"
    exp.mkdir(parents=True)
    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(CHAR_TOKENS) + "\n")
    args = build_args(tiny_config(), tokens, root, extra=("--token_type", "char"))
    torch.manual_seed(3)
    model = EarlyExitASRTask.build_model(args)
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), exp / "model.pth")

    test = root / "dump" / "raw" / "test"
    test.mkdir(parents=True)
    rng = np.random.default_rng(0)
    scp, text = [], []
    for i, n in enumerate((16000, 23456, 9100, 12000)):
        wav = test / f"u{i}.wav"
        soundfile.write(wav, (0.1 * rng.standard_normal(n)).astype(np.float32), FS)
        scp.append(f"u{i} {wav}\n")
        text.append(f"u{i} A CAB\n")
    (test / "wav.scp").write_text("".join(scp))
    (test / "text").write_text("".join(text))
    (test / ".done").write_text("{}\n")


def decode_args(*extra: str) -> list[str]:
    return ["--stage", "12", "--stop_stage", "13", "--asr_exp", "exp/asr_tiny",
            "--inference_asr_model", "model.pth", "--inference_config", str(GREEDY),
            "--inference_nj", "2", "--exit_policies", "max_posterior:0.3", *sets_args(*extra)]


def torch_decode_dirs(root: Path) -> dict:
    """The torch decoder's greedy hypotheses at every exit (in this process: the torch stage 12
    is tests/test_recipe.py's), written where stage 12 puts them; {exit: {utt: text}}."""
    from _trained_model import decode_every_exit
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    exp = root / "exp" / "asr_tiny"
    s2t = EarlyExitSpeech2Text(str(exp / "config.yaml"), str(exp / "model.pth"), beam_size=1,
                               ctc_weight=1.0, nbest=1)
    hyps = {k: {u: h[0] for u, h in by_utt.items()}
            for k, by_utt in decode_every_exit(s2t, root / "dump" / "raw" / "test").items()}
    for k, by_utt in hyps.items():
        out = exp / f"decode_{TAG}" / "test" / f"exit{k}"
        out.mkdir(parents=True)
        (out / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(by_utt.items())))
        (out / ".done").write_text("{}\n")
    return hyps


def read_text(path: Path) -> dict:
    return dict((line.split(" ", 1) + [""])[:2] for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> dict:
    """Stages 12-13 with the onnx backend next to the torch backend's decode dirs."""
    root = tmp_path_factory.mktemp("onnx_recipe")
    make_experiment(root)
    exp = root / "exp" / "asr_tiny"
    hyps = torch_decode_dirs(root)
    torch_texts = {p: p.read_bytes() for p in (exp / f"decode_{TAG}").rglob("text")}
    start = time.monotonic()
    onnx_run = driver(*decode_args("--inference_backend", "onnx"), cwd=root)
    assert onnx_run.returncode == 0, onnx_run.stdout[-6000:]
    print(f"stages 12-13 (onnx): {time.monotonic() - start:.0f} s")
    return {"root": root, "exp": exp, "onnx": onnx_run.stdout, "torch_hyps": hyps,
            "torch_texts": torch_texts}


def test_onnx_decode_dirs_are_scored_and_equal_torch(recipe) -> None:
    exp = recipe["exp"]
    onnx_dir, torch_dir = exp / f"decode_onnx_{TAG}" / "test", exp / f"decode_{TAG}" / "test"
    for name in [f"exit{k}" for k in EXITS] + [POLICY]:
        d = onnx_dir / name
        for f in ("text", "exit", "confidence", "timing.json", ".done", "score_wer/result.json",
                  "score_cer/result.json"):
            assert (d / f).is_file(), d / f
        timing = json.loads((d / "timing.json").read_text())
        assert timing["backend"] == "onnxruntime" and timing["n_utt"] == 4
        assert timing["num_jobs"] == 2  # two jobs merged, as in the torch backend
        assert json.loads((d / "score_wer" / "result.json").read_text())["n_utt"] == 4
    # greedy CTC at every fixed exit: the same hypotheses as the torch decoder
    assert sorted(recipe["torch_hyps"]) == list(EXITS)
    for k in EXITS:
        assert read_text(onnx_dir / f"exit{k}" / "text") == recipe["torch_hyps"][k], k
        assert read_text(torch_dir / f"exit{k}" / "text") == recipe["torch_hyps"][k], k
        assert (onnx_dir / f"exit{k}" / "exit").read_text() == "".join(
            f"u{i} {k}\n" for i in range(4))
    # the policy stopped for real at one of the exits, each threshold decoded
    exits = [int(line.split()[1]) for line in (onnx_dir / POLICY / "exit").read_text().splitlines()]
    assert len(exits) == 4 and set(exits) <= set(EXITS)


def test_onnx_backend_exports_once_and_leaves_torch_dirs(recipe) -> None:
    exp, log = recipe["exp"], recipe["onnx"]
    manifest = json.loads((exp / "onnx_model" / "manifest.json").read_text())
    assert [e["exit"] for e in manifest["exits"]] == list(EXITS)
    assert manifest["quantization"] is None
    assert log.count("to ONNX (quantisation: none)") == 1  # one export for every run
    assert "logs: " in log and "/asr_inference.*.log" not in log  # every job: onnx_inference
    assert log.count("/onnx_inference.*.log") == 2  # the exits in one pass, the policy
    # the torch backend's dirs: untouched
    texts = {p: p.read_bytes() for p in (exp / f"decode_{TAG}").rglob("text")}
    assert texts == recipe["torch_texts"]
    # stage 13 scored the onnx dirs only (the torch ones are stage 13's with the torch backend)
    assert f"## decode_onnx_{TAG}" in (exp / "RESULTS.md").read_text()
    assert not list((exp / f"decode_{TAG}").rglob("score_wer"))


@pytest.mark.slow  # three more runs of the driver
def test_onnx_backend_rerun_skips_and_reexports_only_a_newer_model(recipe) -> None:
    root, exp = recipe["root"], recipe["exp"]
    rerun = driver(*decode_args("--inference_backend", "onnx"), cwd=root)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert "Stage 12: done already" in rerun.stdout and "to ONNX" not in rerun.stdout
    test_dir = exp / f"decode_onnx_{TAG}" / "test"

    def decode_exit1_again() -> str:
        shutil.rmtree(test_dir / "exit1")
        shutil.rmtree(test_dir / "logdir" / "exits")
        proc = driver(*decode_args("--inference_backend", "onnx", "--stop_stage", "12"), cwd=root)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert (test_dir / "exit1" / ".done").is_file()
        return proc.stdout

    # a decode dir removed: decoded again with the export there
    assert "onnx_model is up to date" in decode_exit1_again()
    # a model file newer than the export: exported again
    os.utime(exp / "model.pth")
    assert "to ONNX (quantisation: none)" in decode_exit1_again()


@pytest.mark.slow  # one more export and decode
def test_onnx_int8_has_its_own_export_and_decode_dirs(recipe) -> None:
    root, exp = recipe["root"], recipe["exp"]
    proc = driver(*decode_args("--inference_backend", "onnx", "--onnx_quantize", "int8",
                               "--exit_policies", ""), cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:]
    manifest = json.loads((exp / "onnx_int8_model" / "manifest.json").read_text())
    assert manifest["quantization"] == "int8"
    int8 = exp / f"decode_onnx_int8_{TAG}" / "test"
    for k in EXITS:
        assert (int8 / f"exit{k}" / "score_wer" / "result.json").is_file()
        assert json.loads((int8 / f"exit{k}" / "timing.json").read_text())["quantization"] == "int8"
    assert f"## decode_onnx_int8_{TAG}" in (exp / "RESULTS.md").read_text()


# ------------------------------------------------------------------ what the runtime cannot do
@pytest.mark.parametrize("extra, messages", [
    (["--exit_policies", "oracle entropy:0.5 nbest_posterior:0.9"],
     ["no policy nbest_posterior, oracle", "leave them out of --exit_policies"]),
    (["--inference_config", str(BEAM)],
     [f"{BEAM} has beam_size: 10 (greedy CTC: beam_size: 1)", "decode_ee_ctc_greedy.yaml"]),
    (["--inference_args", "--beam_size 1"], ["--inference_args are options of the torch decoder"]),
    (["--onnx_quantize", "int4"], ["--onnx_quantize must be none or int8"]),
    (["--inference_backend", "tensorrt"], ["--inference_backend must be torch or onnx"]),
])
def test_driver_refuses_what_onnx_cannot_decode(tmp_path: Path, extra, messages) -> None:
    args = ["--inference_backend", "onnx", "--inference_config", str(GREEDY), *extra]
    proc = driver(*sets_args(*args), cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    for message in messages:
        assert message in proc.stdout, proc.stdout[-3000:]
    assert not list(tmp_path.iterdir())  # stopped before any stage


def test_check_onnx_decoding(tmp_path: Path) -> None:
    check_onnx_decoding(GREEDY, ["fixed", "entropy", "max_posterior"])
    assert greedy_problems(None) == [
        "no --inference_config (ESPnet's defaults decode by beam search)"]
    config = tmp_path / "decode.yaml"
    config.write_text("beam_size: 1\n")  # ctc_weight: ESPnet's default (0.5) is not greedy
    assert greedy_problems(config) == [
        f"{config} does not set ctc_weight (ESPnet's default is not greedy CTC: ctc_weight: 1)"]
    config.write_text("beam_size: 1\nctc_weight: 1\npenalty: 0.5\n")
    assert greedy_problems(config) == [f"{config} has penalty: 0.5 (greedy CTC: penalty: 0)"]
    with pytest.raises(ValueError, match="no policy oracle"):
        check_onnx_decoding(GREEDY, ["oracle"])


def test_driver_help_documents_the_backend(tmp_path: Path) -> None:
    proc = driver("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0
    for text in ("--inference_backend X", "--onnx_quantize X", "decode_onnx[_int8]_<tag>"):
        assert text in proc.stdout, text
