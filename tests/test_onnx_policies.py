"""The trace-reading exit policies (agreement, learned) in the onnxruntime decoder: the same
confidences and exits as the torch decoder, the learned policy's fit carried by the export.

The model is test_onnx.py's random tiny model with each exit's blank logit raised (a random
model's greedy hypotheses never agree from exit to exit; with most frames blank they are
short, often empty, and agree often enough for both policies to stop at different exits). The
learned policy is fitted the way a recipe does it: a torch all-exits decode
(``bin/asr_inference --all_exits true``), then ``bin/fit_exit_policy`` beside the model file.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

from conftest import recipe_env
from espnet_early_exit import onnx_runtime as ort_rt
from espnet_early_exit.exit_classifier import ExitClassifier, LogisticModel
from espnet_early_exit.inference import EarlyExitSpeech2Text
from espnet_early_exit.onnx_export import export_onnx
from espnet_early_exit.onnx_runtime import OnnxEarlyExitSpeech2Text, OnnxModelError
from test_onnx import BLOCK_TORCH, FS, GREEDY, write_model

N_UTT = 12


def utterances():
    """Noise of several loudness levels and lengths (float32)."""
    rng = np.random.default_rng(1)
    amps = rng.choice([0.003, 0.03, 0.1, 0.3], N_UTT)
    return [(a * rng.standard_normal(n)).astype(np.float32)
            for a, n in zip(amps, rng.integers(8000, 24000, N_UTT))]


def raise_blank(model, speeches, share=0.97):
    """Add to each exit's blank logit the ``share`` quantile of (best non-blank logit - blank
    logit) over the frames of ``speeches``: most frames become blank."""
    with torch.no_grad():
        for k in model.exit_layers:
            margins = []
            for w in speeches:
                state = model.encode_begin(torch.from_numpy(w)[None], torch.tensor([w.size]))
                _, out, _ = model.encode_to(state, k)
                z = model.ctc_at(k).ctc_lo(out)[0]
                margins.append(z[:, 1:].max(-1).values - z[:, 0])
            model.ctc_at(k).ctc_lo.bias[0] += float(torch.quantile(torch.cat(margins), share))


def write_scp(root: Path, speeches) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, w in enumerate(speeches):
        soundfile.write(root / f"u{i:02d}.wav", w, FS, subtype="FLOAT")  # exact samples
        lines.append(f"u{i:02d} {root / f'u{i:02d}.wav'}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


@pytest.fixture(scope="module")
def ee(tmp_path_factory):
    """The model, its learned policy's fit (beside model.pth) and its ONNX export."""
    from espnet_early_exit.bin import asr_inference, fit_exit_policy

    root = tmp_path_factory.mktemp("onnx_policies")
    speeches = utterances()
    (root / "exp").mkdir()
    config, model_file = write_model(root / "exp", lambda m: raise_blank(m, speeches))
    scp = write_scp(root / "data", speeches)
    all_dir = root / "all_exits"
    asr_inference.main(["--asr_train_config", str(config), "--asr_model_file", str(model_file),
                        "--data_path_and_name_and_type", f"{scp},speech,sound",
                        "--output_dir", str(all_dir), "--all_exits", "true", "--beam_size", "1",
                        "--ctc_weight", "1.0", "--num_workers", "0", "--log_level", "WARNING"])
    assert fit_exit_policy.main(["--all_exits_dir", str(all_dir), "--model_file",
                                 str(model_file), "--log_level", "WARNING"]) == 0
    onnx_dir = export_onnx(root / "onnx", config, model_file, cost_seconds=1.0)
    return SimpleNamespace(root=root, config=config, model_file=model_file, scp=scp,
                           speeches=speeches, all_dir=all_dir, onnx_dir=onnx_dir)


def torch_decoder(ee, policy, threshold, conf=None):
    return EarlyExitSpeech2Text(str(ee.config), str(ee.model_file), exit_policy=policy,
                                exit_threshold=threshold, exit_policy_conf=conf, **GREEDY)


def assert_same_as_torch(ref, dec, speeches):
    """Each utterance: same exit, text and confidences as the torch decoder; no segment after
    the exit runs; a padded batch chooses the same. Returns the exits."""
    batch = dec.decode_batch(speeches)
    exits = []
    for i, (w, b) in enumerate(zip(speeches, batch)):
        want = ref(w, fs=FS)[0]
        dec.runs.clear()
        got = dec(w, fs=FS)
        assert (got.exit_layer, got.text) == (want.exit_layer, want.text), i
        assert sorted(got.confidences) == sorted(want.confidences), i
        for k, c in want.confidences.items():
            assert got.confidences[k] == pytest.approx(c, abs=1e-5), (i, k)
        assert {n for n in dec.runs if n.startswith("segment")} == {
            f"segment{k}" for k in dec.exit_layers if k <= got.exit_layer}
        assert (b.exit_layer, b.text) == (got.exit_layer, got.text), i
        exits.append(got.exit_layer)
    return exits


# ------------------------------------------------------------------ equality with torch
def test_export_carries_the_fit(ee):
    manifest = ort_rt.read_manifest(ee.onnx_dir)
    assert manifest["exit_policy_file"] == "exit_policy.json"
    assert (ee.onnx_dir / "exit_policy.json").read_bytes() == (
        ee.model_file.parent / "exit_policy.json").read_bytes()


def test_all_exits_features_and_confidences_equal_torch(ee):
    """Every exit's features (what the learned policy reads and is fitted on) and both
    policies' numbers, from one all-exits pass."""
    for policy, threshold in (("agreement", 1), ("learned", 0.5)):
        ref = torch_decoder(ee, policy, threshold)
        dec = OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy=policy, exit_threshold=threshold)
        for w in ee.speeches[:6]:
            want, got = ref.decode_all_exits(w, fs=FS), dec.decode_all_exits(w, fs=FS)
            for k in dec.exit_layers:
                assert got[k].features == pytest.approx(want[k][0].features, abs=1e-5)
                assert got[k].confidences == pytest.approx(want[k][0].confidences, abs=1e-5)


@pytest.mark.parametrize("patience, max_edits", [(1, 0), (2, 0), (1, 2)])
def test_agreement_equals_torch(ee, patience, max_edits):
    conf = {"max_edits": max_edits}
    dec = OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy="agreement",
                                   exit_threshold=patience, exit_policy_conf=conf)
    exits = assert_same_as_torch(torch_decoder(ee, "agreement", patience, conf), dec,
                                 ee.speeches)
    assert min(exits) < dec.exit_layers[-1]  # some utterances stop early


def _threshold_between(ee) -> float:
    """A threshold in the middle of the learned policy's early-exit probabilities, half way
    between two of them that are well apart (float noise cannot flip a decision)."""
    dec = OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy="learned", exit_threshold=0.5)
    probs = sorted({round(r.confidences[k], 6) for w in ee.speeches
                    for k, r in dec.decode_all_exits(w).items() if k != dec.exit_layers[-1]})
    gaps = [(a + b) / 2 for a, b in zip(probs, probs[1:]) if b - a > 1e-3]
    return min(gaps, key=lambda t: abs(t - float(np.median(probs))))


def test_learned_equals_torch(ee):
    threshold = _threshold_between(ee)
    dec = OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy="learned", exit_threshold=threshold)
    exits = assert_same_as_torch(torch_decoder(ee, "learned", threshold), dec, ee.speeches)
    assert len(set(exits)) > 1, exits  # the fit tells utterances apart


# ------------------------------------------------------------------ the fit's file
def test_missing_fit_is_a_clear_error(ee, tmp_path):
    d = shutil.copytree(ee.onnx_dir, tmp_path / "onnx")
    (d / "exit_policy.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"exit_policy\.json: the learned exit policy's "
                                                r"model is missing.*fit_exit_policy"):
        OnnxEarlyExitSpeech2Text(d, exit_policy="learned", exit_threshold=0.5)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["exit_policy_file"] = None  # exported without one
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=r"needs exit_policy\.json.*'exit_policy_file'"
                                                r".*fit_exit_policy"):
        OnnxEarlyExitSpeech2Text(d, exit_policy="learned", exit_threshold=0.5)
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        OnnxEarlyExitSpeech2Text(d, exit_policy="learned", exit_threshold=0.5,
                                 exit_policy_conf={"model": "nope.json"})
    # other policies do not need it
    assert OnnxEarlyExitSpeech2Text(d, exit_policy="agreement", exit_threshold=1)(
        ee.speeches[0]).exit_layer in (1, 2, 3, 4)
    # a fit given by path
    dec = OnnxEarlyExitSpeech2Text(d, exit_policy="learned", exit_threshold=0.5,
                                   exit_policy_conf={"model": str(ee.model_file.parent /
                                                                  "exit_policy.json")})
    assert dec(ee.speeches[0]).confidences


def test_fit_of_another_model(ee, tmp_path):
    other = ExitClassifier({7: LogisticModel(np.zeros(8), np.ones(8), np.zeros(8), 0.0)})
    path = other.save(tmp_path / "other.json")
    with pytest.raises(OnnxModelError, match=r"other\.json was fitted for exits \[7\]"):
        OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy="learned", exit_threshold=0.5,
                                 exit_policy_conf={"model": str(path)})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(OnnxModelError, match=r"bad\.json"):
        OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy="learned", exit_threshold=0.5,
                                 exit_policy_conf={"model": str(tmp_path / "bad.json")})
    # the exporter refuses it beside the model file
    exp = shutil.copytree(ee.model_file.parent, tmp_path / "exp")
    shutil.copyfile(path, exp / "exit_policy.json")
    with pytest.raises(ValueError, match=r"exit_policy\.json was fitted for exits \[7\]"):
        export_onnx(tmp_path / "onnx", exp / "config.yaml", exp / "model.pth", cost_seconds=1.0)
    assert not (tmp_path / "onnx").exists()


def test_export_from_a_packed_model(ee, tmp_path, monkeypatch):
    """A packed model carries the fit beside its model member where the zoo packs it; the
    export then carries it too (and none where the zip has none)."""
    from espnet_early_exit.zoo import pack_model

    monkeypatch.chdir(ee.root)
    zip_path = pack_model(ee.config, ee.model_file, tmp_path / "asr_model.zip")
    with zipfile.ZipFile(zip_path) as z:
        packed = any(Path(n).name == "exit_policy.json" for n in z.namelist())
    out = export_onnx(tmp_path / "onnx", model_zip=zip_path, cost_seconds=1.0)
    assert ort_rt.read_manifest(out)["exit_policy_file"] == ("exit_policy.json" if packed
                                                             else None)


def test_policy_options(ee):
    def make(policy, threshold, conf=None):
        return OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy=policy,
                                        exit_threshold=threshold, exit_policy_conf=conf)

    with pytest.raises(ValueError, match=r"outside \[1.0, inf\].*'agreement'"):
        make("agreement", 0.5)
    with pytest.raises(ValueError, match="outside"):
        make("learned", 1.5)
    with pytest.raises(ValueError, match="max_edits: -1"):
        make("agreement", 1, {"max_edits": -1})
    with pytest.raises(ValueError, match="max_editz.*not an option"):
        make("agreement", 1, {"max_editz": 1})
    with pytest.raises(ValueError, match=r"'agreement' needs exit_threshold.*\[1.0, inf\]"):
        make("agreement", None)
    assert make("entropy", 0.5, {"max_edits": 1}).exit_threshold == 0.5  # another's: ignored


# ------------------------------------------------------------------ CLI, no torch
def test_cli_policy_conf_forms():
    from espnet_early_exit.bin.onnx_inference import get_parser

    base = ["--onnx_dir", "d", "--data_path_and_name_and_type", "s,speech,sound",
            "--output_dir", "o"]
    parse = get_parser().parse_args
    assert parse(base).exit_policy_conf is None
    assert parse(base + ["--exit_policy_conf", "{max_edits: 1}"]).exit_policy_conf == {
        "max_edits": 1}
    assert parse(base + ["--exit_policy_conf", "{'model': 'a/b.json'}", "--exit_policy_conf",
                         "max_edits=2"]).exit_policy_conf == {"model": "a/b.json",
                                                              "max_edits": 2}
    with pytest.raises(SystemExit):
        parse(base + ["--exit_policy_conf", "max_edits"])


def test_cli_all_exits_features_fit_like_torch(ee, tmp_path):
    """onnx_inference --all_exits writes the features files of asr_inference's pass, so the
    learned policy can be fitted from an onnxruntime decode too."""
    from espnet_early_exit.bin import fit_exit_policy, onnx_inference
    from espnet_early_exit.derive import load_all_exits

    out = tmp_path / "all"
    assert onnx_inference.main(["--onnx_dir", str(ee.onnx_dir), "--data_path_and_name_and_type",
                                f"{ee.scp},speech,sound", "--output_dir", str(out),
                                "--all_exits", "true", "--exit_policy", "agreement",
                                "--exit_threshold", "1", "--log_level", "WARNING"]) == 0
    got, want = load_all_exits(out), load_all_exits(ee.all_dir)
    assert got.has_features() and got.utts == want.utts
    for u in want.utts:
        for a, b in zip(got.trace(u), want.trace(u)):
            assert a.features() == pytest.approx(b.features(), abs=1e-5)
    assert fit_exit_policy.main(["--all_exits_dir", str(out), "--out",
                                 str(tmp_path / "fit.json"), "--log_level", "WARNING"]) == 0
    fit, ref = (ExitClassifier.load(p) for p in (tmp_path / "fit.json",
                                                 ee.onnx_dir / "exit_policy.json"))
    view = got.trace(want.utts[0])[0]
    assert fit.view_probability(view) == pytest.approx(ref.view_probability(view), abs=1e-3)


NO_TORCH_POLICIES = BLOCK_TORCH + """
import soundfile
from espnet_early_exit.bin import onnx_inference
from espnet_early_exit.onnx_runtime import OnnxEarlyExitSpeech2Text
onnx_dir, scp, out, threshold = sys.argv[1:5]
rc = onnx_inference.main(["--onnx_dir", onnx_dir, "--data_path_and_name_and_type",
                          scp + ",speech,sound", "--output_dir", out, "--exit_policy", "learned",
                          "--exit_threshold", threshold, "--log_level", "WARNING"])
wav, fs = soundfile.read(scp.replace("wav.scp", "u00.wav"), dtype="float32")
got = {}
for policy, th, conf in (("agreement", 1, {"max_edits": 1}), ("learned", float(threshold), None)):
    r = OnnxEarlyExitSpeech2Text(onnx_dir, exit_policy=policy, exit_threshold=th,
                                 exit_policy_conf=conf)(wav, fs=fs)
    got[policy] = [r.exit_layer, {str(k): c for k, c in r.confidences.items()}]
bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "espnet", "espnet2")]
print(json.dumps({"rc": rc, "got": got, "bad": bad}))
"""


def test_no_torch_subprocess(ee, tmp_path):
    threshold = _threshold_between(ee)
    out = tmp_path / "decode"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_POLICIES, str(ee.onnx_dir),
                           str(ee.scp), str(out), repr(threshold)],
                          env=recipe_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["rc"] == 0 and info["bad"] == []
    for policy, th, conf in (("agreement", 1, {"max_edits": 1}), ("learned", threshold, None)):
        ref = torch_decoder(ee, policy, th, conf)(ee.speeches[0], fs=FS)[0]
        exit_layer, confs = info["got"][policy]
        assert exit_layer == ref.exit_layer
        assert {int(k): c for k, c in confs.items()} == pytest.approx(ref.confidences, abs=1e-5)
    dec = OnnxEarlyExitSpeech2Text(ee.onnx_dir, exit_policy="learned", exit_threshold=threshold)
    exits = (out / "1best_recog" / "exit").read_text()
    assert exits == "".join(f"u{i:02d} {dec(w).exit_layer}\n"
                            for i, w in enumerate(ee.speeches))
