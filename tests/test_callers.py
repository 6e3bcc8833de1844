"""The plugin's classes under ESPnet's own callers and conventions (issue 17, item 5):

(a) stock `Speech2Text` / its CLI on a multi-exit model: the last exit only, decoded with its
    own heads (no interCTC-style earlier exits decoded with the last exit's CTC head);
(b) the encoders' `forward(masks=..., return_all_hs=True)` as ESPnet's encoders do them;
(c) ESPnet's positional argument order (`output_size` second);
(d) an `ee_hf_ssl` model loads and decodes offline (no hub, backbone folder gone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch
import yaml

from conftest import REPO, recipe_env
from test_inference import GREEDY, TOKENS, make_model_dir, wave

ENC_CONF = dict(output_size=16, attention_heads=2, linear_units=32, num_blocks=3,
                dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
                input_layer="conv2d")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("ee_model"))


# ------------------------------------------------------------------ (a) stock Speech2Text
def test_encode_is_the_last_exit(model_files):
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    model = EarlyExitSpeech2Text(*model_files, **GREEDY).asr_model.eval()
    speech = torch.from_numpy(wave(0.7))[None]
    lengths = torch.tensor([speech.size(1)])
    with torch.no_grad():
        enc, olens = model.encode(speech, lengths)
        exits, exit_lens = model.encode_exits(speech, lengths)
    assert isinstance(enc, torch.Tensor)
    torch.testing.assert_close(enc, exits[-1][1])
    assert torch.equal(olens, exit_lens)


def test_stock_speech2text_decodes_the_last_exit_with_its_heads(model_files):
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_early_exit.inference import EarlyExitSpeech2Text

    options = dict(beam_size=2, ctc_weight=1.0, maxlenratio=-8.0, nbest=1)
    stock = Speech2Text(*model_files, **options)(wave(0.8))
    assert isinstance(stock, list), "no (results, interCTC) tuple"
    ours = EarlyExitSpeech2Text(*model_files, **options)(wave(0.8))
    assert [r.token_int for r in ours] == [token_int for _, _, token_int, _ in stock]


def test_stock_cli_writes_no_interctc_files(model_files, tmp_path):
    from espnet2.bin.asr_inference import main

    soundfile.write(tmp_path / "a.wav", wave(0.8), 16000)
    (tmp_path / "wav.scp").write_text(f"utt1 {tmp_path / 'a.wav'}\n")
    out = tmp_path / "out"
    main(["--asr_train_config", model_files[0], "--asr_model_file", model_files[1],
          "--data_path_and_name_and_type", f"{tmp_path / 'wav.scp'},speech,sound",
          "--output_dir", str(out), "--ngpu", "0", "--beam_size", "2", "--ctc_weight", "1.0",
          "--lm_weight", "0.0"])
    written = sorted(p.name for p in (out / "1best_recog").iterdir())
    assert "token_int" in written
    assert not [n for n in written if n.startswith("encoder_interctc")], written


# ------------------------------------------------------------------ (b) masks, return_all_hs
def _pair(family: str):
    """A stock ESPnet encoder and the single-exit ee one with the same weights."""
    from espnet2.tasks.asr import encoder_choices

    conf = dict(ENC_CONF)
    if family == "e_branchformer":
        conf.update(cgmlp_linear_units=32)
    torch.manual_seed(0)
    stock = encoder_choices.get_class(family)(20, **conf).eval()
    ee = encoder_choices.get_class(f"ee_{family}")(20, exit_layers=[3], **conf).eval()
    ee.load_state_dict(stock.state_dict())
    return stock, ee


def _feats():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, 20, generator=g)
    lens = torch.tensor([40, 29])
    pad = torch.arange(40)[None, :] >= lens[:, None]
    return x, lens, pad


@pytest.mark.parametrize("family", ["conformer", "transformer", "e_branchformer"])
def test_masks_and_return_all_hs_as_espnet(family):
    stock, ee = _pair(family)
    x, lens, pad = _feats()
    full = torch.full_like(lens, 40)
    with torch.no_grad():
        for kw in (dict(masks=pad), dict(masks=pad, return_all_hs=True)):
            want, want_lens, _ = stock(x, full, **kw)
            got, got_lens, _ = ee(x, full, **kw)
            assert torch.equal(want_lens, got_lens) and got_lens[0] > got_lens[1]
            if kw.get("return_all_hs"):
                torch.testing.assert_close(got[0], want[0])
                assert len(got[1]) == len(want[1]) == 3
                for a, b in zip(got[1], want[1]):
                    torch.testing.assert_close(a, b)
            else:
                torch.testing.assert_close(got, want)
        # the mask is used, not ilens: the same as giving the lengths
        by_lens, _, _ = ee(x, lens)
        by_mask, _, _ = ee(x, full, masks=pad)
        torch.testing.assert_close(by_mask, by_lens)


def test_return_all_hs_with_exits_and_unsupported_options():
    from espnet_early_exit.encoders import EEConformerEncoder

    enc = EEConformerEncoder(20, exit_layers=[1, 3], **ENC_CONF).eval()
    x, lens, _ = _feats()
    with torch.no_grad():
        (final, hs), olens, _ = enc(x, lens, return_all_hs=True)
        exits, exit_lens = enc.forward_exits(x, lens)
    assert len(hs) == 3 and torch.equal(olens, exit_lens)
    torch.testing.assert_close(final, exits[-1][1])
    torch.testing.assert_close(enc.normalize_exit(1, hs[0]), exits[0][1])
    enc(x, lens, max_layer=None, ctc=None)  # ESPnet's defaults are accepted
    with pytest.raises(TypeError, match="max_layer"):
        enc(x, lens, max_layer=2)
    with pytest.raises(ValueError, match="padding mask"):
        enc(x, lens, masks=torch.zeros(2, 7, dtype=torch.bool))


def test_hf_ssl_masks(tmp_path):
    pytest.importorskip("transformers")
    from espnet_early_exit.encoders.hf_ssl import EEHuggingFaceSSLEncoder, make_tiny_ssl

    path = make_tiny_ssl(tmp_path / "ssl", num_layers=2)
    enc = EEHuggingFaceSSLEncoder(1, str(path), exit_layers=[1, 2]).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4800, generator=g) * 0.1
    lens = torch.tensor([4800, 3500])
    pad = torch.arange(4800)[None, :] >= lens[:, None]
    with torch.no_grad():
        (a, _), a_lens, _ = enc(x, lens)
        (b, _), b_lens, _ = enc(x, torch.full_like(lens, 4800), masks=pad)
        (c, hs), _, _ = enc(x, lens, return_all_hs=True)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert torch.equal(a_lens, b_lens) and len(hs) == 2
    holes = pad.clone()
    holes[0, 100] = True
    with pytest.raises(ValueError, match="padding mask"):
        enc(x, lens, masks=holes)


# ------------------------------------------------------------------ (c) positional order
@pytest.mark.parametrize("family", ["conformer", "transformer", "e_branchformer"])
def test_positional_arguments_are_espnets(family):
    from espnet2.tasks.asr import encoder_choices

    ee_cls = encoder_choices.get_class(f"ee_{family}")
    enc = ee_cls(20, 24, exit_layers=[1, 2], num_blocks=2, linear_units=32)
    assert enc.output_size() == 24 and enc.exit_layers == [1, 2]
    with pytest.raises(TypeError, match="multiple values for argument 'output_size'"):
        ee_cls(20, 24, output_size=24, exit_layers=[2], num_blocks=2)
    with pytest.raises(TypeError, match="positional arguments"):
        ee_cls(20, *range(100), exit_layers=[2])


def test_no_positional_exit_layers_in_configs_and_tests():
    """Configs give encoder options by keyword (ESPnet builds `cls(input_size, **conf)`); no
    test or module passes exit_layers positionally any more."""
    import re

    call = re.compile(r"EE(Conformer|Transformer|EBranchformer)Encoder\(\s*\w+\s*,\s*\[")
    for path in list((REPO / "tests").glob("*.py")) + list((REPO / "espnet_early_exit").rglob("*.py")):
        assert not call.search(path.read_text(encoding="utf-8")), path


# ------------------------------------------------------------------ (d) SSL backbone offline
OFFLINE_SCRIPT = r"""
import json, sys
import soundfile
import espnet_early_exit
from espnet_early_exit import EarlyExitSpeech2Text
import transformers

def refuse(*a, **k):
    raise AssertionError("from_pretrained called while loading a trained model")

transformers.AutoModel.from_pretrained = refuse
transformers.AutoConfig.from_pretrained = refuse
transformers.AutoFeatureExtractor.from_pretrained = refuse
wav, fs = soundfile.read(sys.argv[1], dtype="float32")
opts = dict(beam_size=1, ctc_weight=1.0, exit_layer=1)
out = {}
s2t = EarlyExitSpeech2Text(sys.argv[2], sys.argv[3], **opts)
best = s2t(wav, fs=fs)[0]
out["files"] = [best.token_int, best.score]
s2t = EarlyExitSpeech2Text.from_pretrained(sys.argv[4], cachedir=sys.argv[5], **opts)
best = s2t(wav, fs=fs)[0]
out["zip"] = [best.token_int, best.score]
print("RESULT " + json.dumps(out))
"""


def _ssl_model(root: Path, ssl_dir: Path):
    """A random tiny ee_hf_ssl model as training leaves it: config.yaml + model.pth."""
    from espnet_early_exit.encoders.hf_ssl import make_tiny_ssl
    from espnet_early_exit.task import EarlyExitASRTask

    make_tiny_ssl(ssl_dir, family="wavlm", num_layers=2)
    conf = yaml.safe_load((REPO / "conf/tuning/grid_tiny_ssl_ctc.yaml").read_text())
    conf["encoder_conf"].update(model_name_or_path=str(ssl_dir), exit_layers=[1, 2],
                                normalize_waveform=None)
    conf["model_conf"]["share_exit_heads"] = False
    root.mkdir(parents=True)
    (root / "train.yaml").write_text(yaml.safe_dump(conf))
    args = EarlyExitASRTask.get_parser().parse_args(
        ["--config", str(root / "train.yaml"), "--output_dir", str(root), "--token_type",
         "char"])
    args.token_list = list(TOKENS)
    torch.manual_seed(0)
    model = EarlyExitASRTask.build_model(args)
    torch.save(model.state_dict(), root / "model.pth")
    return model, args


def test_ssl_model_loads_and_decodes_offline(tmp_path):
    pytest.importorskip("transformers")
    from espnet_early_exit.inference import EarlyExitSpeech2Text
    from espnet_early_exit.zoo import pack_model

    ssl_dir = tmp_path / "ssl_models" / "tiny"
    _, args = _ssl_model(tmp_path / "exp", ssl_dir)
    enc_conf = args.encoder_conf
    assert enc_conf["load_pretrained"] is False and enc_conf["normalize_waveform"] is True
    assert enc_conf["backbone_config"]["model_type"] == "wavlm"
    (tmp_path / "exp" / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    # a config.yaml from before the backbone's config was recorded: packing records it
    old = dict(vars(args), encoder_conf={k: v for k, v in enc_conf.items()
                                         if k not in ("backbone_config", "load_pretrained")})
    old["encoder_conf"]["normalize_waveform"] = None
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(old))
    zip_path = pack_model(tmp_path / "old" / "config.yaml", tmp_path / "exp" / "model.pth",
                          tmp_path / "model.zip")
    audio = wave(0.6)
    soundfile.write(tmp_path / "a.wav", audio, 16000)
    best = EarlyExitSpeech2Text(str(tmp_path / "exp" / "config.yaml"),
                                str(tmp_path / "exp" / "model.pth"), exit_layer=1,
                                **GREEDY)(audio, fs=16000)[0]
    want = [best.token_int, best.score]

    for p in sorted(ssl_dir.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    ssl_dir.rmdir()
    env = recipe_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                     HF_HOME=str(tmp_path / "empty_hf_home"))
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, str(tmp_path / "a.wav"),
         str(tmp_path / "exp" / "config.yaml"), str(tmp_path / "exp" / "model.pth"),
         str(zip_path), str(tmp_path / "cache")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    for how in ("files", "zip"):
        assert got[how][0] == want[0], how
        assert got[how][1] == pytest.approx(want[1], rel=1e-4, abs=1e-3), how
