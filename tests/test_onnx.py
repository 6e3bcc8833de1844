"""ONNX deployment: export by segments, onnxruntime decoding without torch, real stopping.

The fast tests export a random tiny Conformer (conf/tuning/train_ee_conformer_tiny.yaml, 4
blocks, an exit after each, character tokens); the slow one trains the tiny model on mini_an4
(tests/_trained_model.py, BPE tokens), packs it and exports the zip.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import CHAR_TOKENS, build_args, recipe_env, tiny_config
from espnet_early_exit import onnx_runtime as ort_rt
from espnet_early_exit.inference import EarlyExitSpeech2Text
from espnet_early_exit.onnx_export import export_onnx
from espnet_early_exit.onnx_runtime import OnnxEarlyExitSpeech2Text, OnnxModelError

FS = 16000
GREEDY = dict(beam_size=1, ctc_weight=1.0, nbest=1)


def waves(lengths=(16000, 23456, 9100), seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def write_model(root: Path, tune=None):
    """config.yaml + model.pth of a random tiny model with character tokens in ``root``;
    ``tune(model)``, if given, changes the model before it is saved."""
    from espnet_early_exit.task import EarlyExitASRTask

    tokens = root / "tokens.txt"
    tokens.write_text("\n".join(CHAR_TOKENS) + "\n")
    args = build_args(tiny_config(), tokens, root, extra=("--token_type", "char"))
    torch.manual_seed(3)
    model = EarlyExitASRTask.build_model(args)
    if tune is not None:
        tune(model.eval())
    (root / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), root / "model.pth")
    return root / "config.yaml", root / "model.pth"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """config.yaml + model.pth of a random tiny model with character tokens."""
    root = tmp_path_factory.mktemp("onnx_model")
    files = write_model(root)
    (root / "selected_thresholds.json").write_text(json.dumps({"entropy": {"threshold": 0.97}}))
    return files


@pytest.fixture(scope="module")
def exported(model_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_export") / "onnx"
    return export_onnx(out, *model_files, cost_seconds=1.0)


@pytest.fixture(scope="module")
def torch_s2t(model_files):
    return EarlyExitSpeech2Text(str(model_files[0]), str(model_files[1]), **GREEDY)


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ equality with torch
def test_manifest(exported, torch_s2t):
    manifest = ort_rt.read_manifest(exported)
    assert [e["exit"] for e in manifest["exits"]] == [1, 2, 3, 4]
    shares = [e["share"] for e in manifest["exits"]]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)
    assert manifest["token_list"] == CHAR_TOKENS and manifest["sample_rate"] == FS
    assert manifest["tokenizer"]["token_type"] == "char"
    assert manifest["policies"] == {"entropy": {"threshold": 0.97}}
    assert manifest["quantization"] is None and manifest["hidden_inputs"] == ["hidden", "pos_emb"]
    assert manifest["exit_policy_file"] is None  # no exit_policy.json beside model.pth


def test_features_equal_espnet_frontend(exported, torch_s2t):
    dec = OnnxEarlyExitSpeech2Text(exported)
    for w in waves():
        ref, ref_len = torch_s2t.asr_model._extract_feats(torch.from_numpy(w)[None],
                                                          torch.tensor([w.size]))
        feats, lengths = dec.features([w])
        assert lengths.tolist() == ref_len.tolist()
        np.testing.assert_allclose(feats, ref.numpy(), atol=1e-4, rtol=0)


def test_every_exit_logits_and_hypotheses_equal_torch(exported, torch_s2t):
    dec = OnnxEarlyExitSpeech2Text(exported)
    model = torch_s2t.asr_model
    for w in waves():
        expected = torch_s2t.decode_all_exits(w, fs=FS)
        got = dec.decode_all_exits(w, fs=FS)
        state = model.encode_begin(torch.from_numpy(w)[None], torch.tensor([w.size]))
        onnx_state = dec._begin([w], FS)
        for k in model.exit_layers:
            with torch.no_grad():
                state, out, _ = model.encode_to(state, k)
                logits = model.ctc_at(k).ctc_lo(out).numpy()
            onnx_state = dec._advance(onnx_state, k)
            np.testing.assert_allclose(dec._logits(onnx_state, k), logits, atol=1e-4, rtol=0)
            best = expected[k][0]
            assert got[k].token_int == [int(t) for t in best.token_int]
            assert got[k].text == best.text and got[k].exit_layer == k
            assert got[k].score == pytest.approx(best.score, abs=1e-3)


@pytest.mark.parametrize("policy", ["entropy", "max_posterior"])
def test_dynamic_policy_equals_torch_and_stops(exported, model_files, policy):
    """Thresholds placed so that the policy accepts before the last exit: same exit, same
    confidences, same text as the torch decoder, and no segment after the exit runs."""
    w = waves()[0]
    probe = OnnxEarlyExitSpeech2Text(exported, exit_policy=policy, exit_threshold=0.5)
    conf = {k: r.confidences[k] for k, r in probe.decode_all_exits(w).items()}
    early = [conf[k] for k in probe.exit_layers[:-1]]
    if policy == "entropy":  # accepts below the threshold
        threshold, stop = min(early) + 1e-6, probe.exit_layers[int(np.argmin(early))]
    else:
        threshold, stop = max(early) - 1e-6, probe.exit_layers[int(np.argmax(early))]
    dec = OnnxEarlyExitSpeech2Text(exported, exit_policy=policy, exit_threshold=threshold)
    got = dec(w, fs=FS)
    ref = EarlyExitSpeech2Text(str(model_files[0]), str(model_files[1]), exit_policy=policy,
                               exit_threshold=threshold, **GREEDY)(w, fs=FS)[0]
    assert got.exit_layer == ref.exit_layer == stop
    assert got.text == ref.text
    assert sorted(got.confidences) == sorted(ref.confidences)
    for k, c in ref.confidences.items():
        assert got.confidences[k] == pytest.approx(c, abs=1e-5)
    ran = {name for name in dec.runs if name.startswith("segment")}
    assert ran == {f"segment{k}" for k in dec.exit_layers if k <= stop}


def test_fixed_exit_stops_for_real(exported):
    dec = OnnxEarlyExitSpeech2Text(exported, exit_layer=2)
    result = dec(waves()[0])
    assert result.exit_layer == 2 and result.confidences == {}
    assert dict(dec.runs) == {"front": 1, "segment1": 1, "segment2": 1, "head2": 1}


def test_batch_equals_one_by_one(exported):
    ws = waves()
    dec = OnnxEarlyExitSpeech2Text(exported, exit_policy="max_posterior", exit_threshold=0.2)
    batch = dec.decode_batch(ws)
    for w, r in zip(ws, batch):
        single = dec(w)
        assert (r.exit_layer, r.text, r.token_int) == (single.exit_layer, single.text,
                                                       single.token_int)


def test_packed_threshold_is_the_default(exported):
    assert OnnxEarlyExitSpeech2Text(exported, exit_policy="entropy").exit_threshold == 0.97
    with pytest.raises(ValueError, match="max_posterior.*needs exit_threshold"):
        OnnxEarlyExitSpeech2Text(exported, exit_policy="max_posterior")


# ------------------------------------------------------------------ numpy vs torch definitions
def test_numpy_policies_agree_with_torch():
    from espnet_early_exit import frame_stats as torch_stats
    from espnet_early_exit.inference import format_confidences
    from espnet_early_exit.policies import POLICIES, get_policy
    from espnet_early_exit.search import greedy_ctc

    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(40, 30, generator=g) * 3, torch.randn(7, 5000, generator=g)]
    blank_only = torch.randn(12, 9, generator=g)
    blank_only[:, 0] += 50.0  # every frame's argmax is blank: max_posterior's all-frame mean
    for z in [*cases, blank_only]:
        stats = ort_rt.frame_stats(z.numpy())
        for name, np_policy in ort_rt.POLICIES.items():
            assert np_policy.higher_is_confident == POLICIES[name].higher_is_confident
            assert np_policy.threshold_range == POLICIES[name].threshold_range
            assert np_policy.uses_trace == POLICIES[name].uses_trace
            if np_policy.uses_trace:  # tests/test_onnx_policies.py
                continue
            torch_policy = get_policy(name, 0.5)
            expected = torch_policy.confidence_from_logits(z, 0)
            assert np_policy.confidence(stats, 0) == pytest.approx(expected, abs=1e-5)
            for c in (0.2, 0.5, 0.8):
                for last in (False, True):
                    assert np_policy.accept(c, 0.5, last) == torch_policy.accept(c, last)
        hyp = greedy_ctc(torch_stats.frame_stats(z[None]), torch.tensor([z.size(0)]), 0, 1, 2)[0]
        ids, score = ort_rt.greedy_ids(stats, 0)
        assert ids == hyp.yseq[1:-1].tolist() and score == pytest.approx(hyp.score, rel=1e-5)
    confs = {4: 0.123456789, 2: 0.5}
    assert ort_rt.format_confidences(confs) == format_confidences(confs)


# ------------------------------------------------------------------ bad input
def test_missing_graph(exported, tmp_path):
    d = copy_export(exported, tmp_path / "onnx")
    (d / "segment3.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="segment3.onnx.*'segment3'"):
        OnnxEarlyExitSpeech2Text(d)


def test_manifest_from_another_model(exported, tmp_path):
    d = copy_export(exported, tmp_path / "onnx")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["model_id"] = "0" * 32  # what another model's manifest holds
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxModelError, match=r"front\.onnx belongs to model .*'model_id'"):
        OnnxEarlyExitSpeech2Text(d)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.pop("token_list"), "missing key.*token_list"),
    (lambda m: m.update(version=99), "'version' is 99"),
    (lambda m: m.update(format="other"), "'format'"),
    (lambda m: m["graphs"]["heads"].pop("3"), r"'graphs.heads' lists exits \[1, 2, 4\]"),
])
def test_bad_manifest(exported, tmp_path, edit, match):
    d = copy_export(exported, tmp_path / "onnx")
    manifest = json.loads((d / "manifest.json").read_text())
    edit(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxModelError, match=match):
        OnnxEarlyExitSpeech2Text(d)


def test_bad_speech_and_options(exported):
    dec = OnnxEarlyExitSpeech2Text(exported)
    w = waves()[0]
    with pytest.raises(ValueError, match="8000 Hz.*16000 Hz.*'sample_rate'"):
        dec(w, fs=8000)
    with pytest.raises(ort_rt.TooShortError, match="too short"):
        dec(w[:100])
    with pytest.raises(ValueError, match="mono"):
        dec(np.stack([w, w]))
    with pytest.raises(ValueError, match="not one of the model's exits"):
        OnnxEarlyExitSpeech2Text(exported, exit_layer=5)
    with pytest.raises(ValueError, match="not available in the ONNX runtime"):
        OnnxEarlyExitSpeech2Text(exported, exit_policy="nbest_posterior", exit_threshold=0.5)
    with pytest.raises(ValueError, match="outside"):
        OnnxEarlyExitSpeech2Text(exported, exit_policy="entropy", exit_threshold=1.5)


# ------------------------------------------------------------------ CLI, no torch, int8
def write_wav_scp(root: Path, rates=(FS, FS, FS)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (w, rate) in enumerate(zip(waves(), rates)):
        soundfile.write(root / f"u{i}.wav", w, rate)
        lines.append(f"u{i} {root / f'u{i}.wav'}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


BLOCK_TORCH = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "espnet", "espnet2", "onnx", "librosa"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""
NO_TORCH = BLOCK_TORCH + """
import soundfile
from espnet_early_exit.bin import onnx_inference
from espnet_early_exit.onnx_runtime import OnnxEarlyExitSpeech2Text
onnx_dir, scp, out = sys.argv[1:4]
rc = onnx_inference.main(["--onnx_dir", onnx_dir, "--data_path_and_name_and_type",
                          scp + ",speech,sound", "--output_dir", out, "--all_exits", "true"])
dec = OnnxEarlyExitSpeech2Text(onnx_dir, exit_policy="entropy")
wav, fs = soundfile.read(scp.replace("wav.scp", "u0.wav"), dtype="float32")
r = dec(wav, fs=fs)
bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "espnet", "espnet2")]
print(json.dumps({"rc": rc, "text": r.text, "exit": r.exit_layer, "bad": bad}))
"""


def test_no_torch_subprocess(exported, tmp_path):
    scp = write_wav_scp(tmp_path / "data")
    out = tmp_path / "decode"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(exported), str(scp), str(out)],
                          env=recipe_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["rc"] == 0 and info["bad"] == []
    wav = soundfile.read(scp.parent / "u0.wav", dtype="float32")[0]
    expected = OnnxEarlyExitSpeech2Text(exported, exit_policy="entropy")(wav, fs=FS)
    assert (info["text"], info["exit"]) == (expected.text, expected.exit_layer)
    # the decode dir of stage 12 (--all_exits): every exit's files and timing
    for k in (1, 2, 3, 4):
        recog = out / f"exit{k}" / "1best_recog"
        assert (recog / "exit").read_text() == "".join(f"u{i} {k}\n" for i in range(3))
        assert (recog / "confidence").read_text() == "u0 \nu1 \nu2 \n"
        assert json.loads((out / f"exit{k}" / "timing.json").read_text())["n_utt"] == 3


def test_cli_decode_dir_merges_like_stage_12(exported, tmp_path):
    from espnet_early_exit.bin import onnx_inference
    from espnet_early_exit.stages.jobs import merge_decode

    scp = write_wav_scp(tmp_path / "data")
    out = tmp_path / "out"
    assert onnx_inference.main(["--onnx_dir", str(exported), "--data_path_and_name_and_type",
                                f"{scp},speech,sound", "--output_dir", str(out),
                                "--exit_policy", "max_posterior", "--exit_threshold", "0.2",
                                "--batch_size", "2"]) == 0
    merge_decode([out], tmp_path / "merged")
    dec = OnnxEarlyExitSpeech2Text(exported, exit_policy="max_posterior", exit_threshold=0.2)
    results = [dec(soundfile.read(tmp_path / "data" / f"u{i}.wav", dtype="float32")[0])
               for i in range(3)]  # 16-bit files: not the float waves
    merged = tmp_path / "merged"
    assert (merged / "text").read_text() == "".join(
        f"u{i} {r.text}\n" for i, r in enumerate(results))
    assert (merged / "exit").read_text() == "".join(
        f"u{i} {r.exit_layer}\n" for i, r in enumerate(results))
    for line, r in zip((merged / "confidence").read_text().splitlines(), results):
        pairs = dict(kv.split(":") for kv in line.split()[1:])  # batch vs one: float noise
        assert {int(k): float(v) for k, v in pairs.items()} == pytest.approx(r.confidences,
                                                                             abs=1e-5)
    timing = json.loads((merged / "timing.json").read_text())
    assert timing["n_utt"] == 3 and timing["backend"] == "onnxruntime"


def test_cli_wrong_sample_rate_names_the_file(exported, tmp_path, caplog):
    from espnet_early_exit.bin import onnx_inference

    scp = write_wav_scp(tmp_path / "data", rates=(FS, 8000, FS))
    rc = onnx_inference.main(["--onnx_dir", str(exported), "--data_path_and_name_and_type",
                              f"{scp},speech,sound", "--output_dir", str(tmp_path / "out")])
    assert rc == 1
    assert "u1.wav (utterance u1) is sampled at 8000 Hz" in caplog.text
    assert not (tmp_path / "out").exists()


def test_int8_export_cli(model_files, tmp_path, exported):
    from espnet_early_exit.bin import export_onnx as cli

    out = tmp_path / "onnx8"
    assert cli.main(["--asr_train_config", str(model_files[0]), "--asr_model_file",
                     str(model_files[1]), "--out_dir", str(out), "--quantize", "int8",
                     "--cost_seconds", "1"]) == 0
    assert ort_rt.read_manifest(out)["quantization"] == "int8"
    size = sum(p.stat().st_size for p in out.glob("segment*.onnx"))
    assert size < 0.6 * sum(p.stat().st_size for p in Path(exported).glob("segment*.onnx"))
    import onnx

    ops = {n.op_type for f in out.glob("*.onnx") for n in onnx.load(str(f)).graph.node}
    # linear layers quantised, convolutions (slow as ConvInteger on CPU) kept float32
    assert "MatMulInteger" in ops and "ConvInteger" not in ops and "Conv" in ops
    dec = OnnxEarlyExitSpeech2Text(out, exit_layer=3)
    assert dec(waves()[0]).exit_layer == 3 and set(dec.runs) == {
        "front", "segment1", "segment2", "segment3", "head3"}


# ------------------------------------------------------------------ a trained, packed model
@pytest.mark.slow
def test_trained_packed_model_every_exit_equals_torch(tmp_path_factory):
    """mini_an4, BPE: the ONNX hypotheses equal the torch decoder's at every exit."""
    import _trained_model
    from espnet_early_exit.zoo import pack_model

    trained = _trained_model.train_tiny_mini_an4(tmp_path_factory.mktemp("an4_onnx"))
    zip_path = trained.exp_dir / "asr_model.zip"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained.root)
        pack_model(trained.config, trained.model_file, zip_path)
    out = export_onnx(trained.exp_dir / "onnx", model_zip=zip_path, cost_seconds=1.0)
    assert ort_rt.read_manifest(out)["tokenizer"] == {"token_type": "bpe",
                                                      "bpemodel": "bpe.model"}
    s2t = EarlyExitSpeech2Text.from_pretrained(str(zip_path), **GREEDY)
    expected = _trained_model.decode_every_exit(s2t, trained.test_dir)
    dec = OnnxEarlyExitSpeech2Text(out)
    for utt, wav, fs, _ in _trained_model.read_test_set(trained.test_dir):
        for k, r in dec.decode_all_exits(wav, fs=fs).items():
            text, token_int, score = expected[k][utt]
            assert (r.text, r.token_int) == (text, token_int), (utt, k)
            assert r.score == pytest.approx(score, abs=1e-3)
