"""ee_hf_ssl: exits on pre-trained wav2vec2 / HuBERT / WavLM models (tiny random ones, saved with
`save_pretrained` and loaded through the encoder's real `from_pretrained` path; no hub access)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO

transformers = pytest.importorskip("transformers")

# family -> (config class name, config overrides)
FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", {}),
    "wav2vec2_stable": ("Wav2Vec2Config", dict(do_stable_layer_norm=True, feat_extract_norm="layer")),
    "wavlm": ("WavLMConfig", dict(num_buckets=16, max_bucket_distance=32)),
    "wavlm_stable": (
        "WavLMConfig",
        dict(num_buckets=16, max_bucket_distance=32, do_stable_layer_norm=True,
             feat_extract_norm="layer"),
    ),
    "hubert": ("HubertConfig", {}),
}
YAMLS = {
    "train_ee_wav2vec2_base_shared.yaml": "wav2vec2",
    "train_ee_wav2vec2_base_indep.yaml": "wav2vec2",
    "train_ee_wavlm_base_plus_indep.yaml": "wavlm",
    "train_ee_hubert_base_indep.yaml": "hubert",
}
TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "D", "<sos/eos>"]


def make_tiny(folder: Path, family: str, num_layers: int = 4, hidden: int = 32,
              do_normalize=None, seed: int = 0) -> str:
    """A random tiny model of `family` written with save_pretrained (+ a feature extractor)."""
    if (folder / "config.json").exists():
        return str(folder)
    cls_name, extra = FAMILIES[family]
    config = getattr(transformers, cls_name)(
        hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=2,
        intermediate_size=2 * hidden, conv_dim=(16, 16, 16), conv_stride=(5, 4, 2),
        conv_kernel=(10, 8, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        mask_time_prob=0.1, mask_time_length=2, vocab_size=len(TOKENS), **extra,
    )
    torch.manual_seed(seed)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    if do_normalize is not None:
        transformers.Wav2Vec2FeatureExtractor(
            do_normalize=do_normalize, return_attention_mask=True
        ).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_models")

    def _get(family: str, **kw) -> str:
        name = family + "".join(f"_{k}{v}" for k, v in sorted(kw.items()))
        return make_tiny(root / name, family, **kw)

    return _get


def encoder(path: str, **kw):
    from espnet_early_exit.encoders.hf_ssl import EEHuggingFaceSSLEncoder

    kw.setdefault("exit_layers", [1, 2, 3, 4])
    kw.setdefault("normalize_waveform", False)
    return EEHuggingFaceSSLEncoder(input_size=1, model_name_or_path=path, **kw)


def waves(lengths=(2400, 1800, 1200), seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    x = torch.randn(len(lengths), max(lengths), generator=g) * 0.1
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, lens


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("family", list(FAMILIES))
def test_exit_outputs_equal_backbone_hidden_states(tiny, family):
    enc = encoder(tiny(family), exit_norm="none").eval()
    bb = enc.backbone
    x, lens = waves()
    mask = (torch.arange(x.size(1))[None] < lens[:, None]).long()
    with torch.no_grad():
        ref = bb(x, attention_mask=mask, output_hidden_states=True)
        outs, olens = enc.forward_exits(x, lens)
    assert olens.tolist() == bb._get_feat_extract_output_lengths(lens).tolist()
    hs = ref.hidden_states
    assert len(hs) == 5  # input of layer 1 + 4 layer outputs
    stable = bb.config.do_stable_layer_norm
    assert (enc.final_norm() is not None) == stable
    for k, out in outs:
        for b, n in enumerate(olens.tolist()):
            if k < 4:
                close(out[b, :n], hs[k][b, :n])
            else:  # the backbone's own output (pre-LN: after its final layer_norm)
                close(out[b, :n], ref.last_hidden_state[b, :n])
                expected = bb.encoder.layer_norm(hs[4]) if stable else hs[4]
                # transformers < 5 stored the normed last state in hidden_states[-1]
                if stable and not torch.allclose(hs[4], ref.last_hidden_state):
                    close(out[b, :n], expected[b, :n])
                elif not stable:
                    close(out[b, :n], hs[4][b, :n])


@pytest.mark.parametrize("family", ["wav2vec2_stable", "wavlm_stable"])
@pytest.mark.parametrize("exit_norm", ["shared", "per_exit"])
def test_exit_norms_apply_to_backbone_hidden_states(tiny, family, exit_norm):
    enc = encoder(tiny(family), exit_norm=exit_norm).eval()
    x, lens = waves()
    mask = (torch.arange(x.size(1))[None] < lens[:, None]).long()
    with torch.no_grad():
        hs = enc.backbone(x, attention_mask=mask, output_hidden_states=True).hidden_states
        outs, olens = enc.forward_exits(x, lens)
        for k, out in outs[:-1]:
            norm = enc.final_norm() if exit_norm == "shared" else enc.exit_norms[str(k)]
            for b, n in enumerate(olens.tolist()):
                close(out[b, :n], norm(hs[k])[b, :n])


def test_post_ln_models_get_no_extra_exit_norms(tiny):
    enc = encoder(tiny("wav2vec2"), exit_norm="per_exit")
    assert enc.final_norm() is None and len(enc.exit_norms) == 0


def test_waveform_normalisation_matches_the_feature_extractor(tiny):
    from espnet_early_exit.encoders.hf_ssl import normalize_waveform

    x, lens = waves()
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    ref = fe([x[b, :n].numpy() for b, n in enumerate(lens.tolist())], sampling_rate=16000,
             padding=True, return_tensors="pt")
    torch.testing.assert_close(normalize_waveform(x, lens), ref["input_values"],
                               rtol=1e-4, atol=1e-5)

    enc = encoder(tiny("wav2vec2"), exit_norm="none", normalize_waveform=True).eval()
    with torch.no_grad():
        outs, olens = enc.forward_exits(x, lens)
        want = enc.backbone(ref["input_values"], attention_mask=ref["attention_mask"])
    for b, n in enumerate(olens.tolist()):
        torch.testing.assert_close(outs[-1][1][b, :n], want.last_hidden_state[b, :n],
                                   rtol=1e-4, atol=1e-4)
    # None: as the checkpoint's preprocessor_config.json says
    assert encoder(tiny("wavlm", do_normalize=False), normalize_waveform=None).normalize_waveform is False
    assert encoder(tiny("hubert", do_normalize=True), normalize_waveform=None).normalize_waveform is True


# ------------------------------------------------------------------ stopping early
@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_stopping_at_an_exit_runs_no_later_layer(tiny, family):
    enc = encoder(tiny(family), exit_layers=[2, 4], exit_norm="none").eval()
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: calls.append(n))
             for n, layer in enumerate(enc.blocks())]
    x, lens = waves()
    try:
        with torch.no_grad():
            outs, _ = enc.forward_exits(x, lens, up_to=2)
            assert [k for k, _ in outs] == [2] and calls == [0, 1]
            calls.clear()
            state = enc.advance(enc.begin(x, lens), 2)
            out2 = enc.exit_output(state)
            assert calls == [0, 1]
            if family == "wavlm":  # the relative position bias travels with the state
                assert state.extra["position_bias"] is not None
            state = enc.advance(state, 4)  # resumes: layers 3 and 4 only
            assert calls == [0, 1, 2, 3]
            full, _ = enc.forward_exits(x, lens)
        close(out2, full[0][1])
        close(enc.exit_output(state), full[1][1])
    finally:
        for h in hooks:
            h.remove()


def test_wavlm_layer_drop_never_skips_the_first_layer(tiny):
    enc = encoder(tiny("wavlm"), exit_layers=[4], layer_drop_rate=0.9).train()
    calls = []
    enc.blocks()[0].register_forward_hook(lambda m, i, o: calls.append(0))
    x, lens = waves()
    for _ in range(5):
        enc.forward_exits(x, lens)
    assert len(calls) == 5


# ------------------------------------------------------------------ YAML, ESPnet model, training
def build_from_yaml(yaml_name: str, model_path: str, tmp_path: Path, **encoder_conf):
    from espnet_early_exit.task import EarlyExitASRTask

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n")
    config = yaml.safe_load((REPO / "conf" / "tuning" / yaml_name).read_text())
    config["encoder_conf"].update(model_name_or_path=model_path, **encoder_conf)
    if "exit_layers" in encoder_conf:
        config["model_conf"]["exit_weights"] = None
    cfg = tmp_path / yaml_name
    cfg.write_text(yaml.safe_dump(config))
    args = EarlyExitASRTask.get_parser().parse_args(
        ["--config", str(cfg), "--token_list", str(tokens), "--output_dir", str(tmp_path / "out")]
    )
    return EarlyExitASRTask.build_model(args), args


def batch():
    x, lens = waves((3200, 2400))
    text = torch.tensor([[3, 4, 5, 3], [4, 6, -1, -1]])
    return x, lens, text, torch.tensor([4, 2])


@pytest.mark.parametrize("yaml_name", list(YAMLS))
def test_shipped_yaml_builds_and_runs_forward(tiny, tmp_path, yaml_name):
    # a 12-layer tiny stand-in for the hub model, so the YAML's exits [2..12] stay as shipped
    path = tiny(YAMLS[yaml_name], num_layers=12, hidden=16, do_normalize=False)
    model, args = build_from_yaml(yaml_name, path, tmp_path)
    assert args.input_size == 1 and model.frontend is None and model.normalize is None
    assert model.specaug is None and model.decoder is None and args.init is None
    assert type(model.encoder).__name__ == "EEHuggingFaceSSLEncoder"
    assert model.exit_layers == [2, 4, 6, 8, 10, 12]
    shared = "shared" in yaml_name
    assert model.share_exit_heads is shared
    assert len(model.exit_ctc_heads) == (0 if shared else 5)
    if not shared:  # independent heads really are different modules
        assert model.ctc_at(2) is not model.ctc_at(12)
    else:
        assert all(model.ctc_at(k) is model.ctc for k in model.exit_layers)
    model.train()
    loss, stats, _ = model(*batch())
    assert torch.isfinite(loss)
    assert {f"loss_ctc_exit{k}" for k in model.exit_layers} <= set(stats)
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(*batch())
    assert "cer_ctc_exit2" in stats


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "hubert"])
def test_training_step_updates_heads_and_backbone_never_the_cnn(tiny, tmp_path, family):
    path = tiny(family, num_layers=12, hidden=16, do_normalize=False)
    yaml_name = next(y for y, f in YAMLS.items() if f == family and "indep" in y)
    model, _ = build_from_yaml(yaml_name, path, tmp_path, layer_drop_rate=0.0)
    bb = model.encoder.backbone
    assert not any(p.requires_grad for p in bb.feature_extractor.parameters())
    before = _snapshot(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    loss, _, _ = model(*batch())
    loss.backward()
    opt.step()
    changed = _changed(before, model)
    assert not any(n.startswith("encoder.backbone.feature_extractor.") for n in changed)
    for prefix in ("ctc.", "exit_ctc_heads.2.", "encoder.backbone.feature_projection.",
                   "encoder.backbone.encoder.layers.0.", "encoder.backbone.encoder.layers.11."):
        assert any(n.startswith(prefix) for n in changed), prefix


def test_frozen_backbone_trains_only_the_heads_then_unfreezes(tiny, tmp_path):
    path = tiny("wav2vec2_stable", num_layers=4)
    model, _ = build_from_yaml(
        "train_ee_wav2vec2_base_indep.yaml", path, tmp_path,
        exit_layers=[2, 4], freeze_backbone_steps=2, freeze_feature_encoder=False,
        layer_drop_rate=0.0,
    )
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(3):
        before = _snapshot(model)
        opt.zero_grad()
        loss, _, _ = model(*batch())
        loss.backward()
        opt.step()
        changed = _changed(before, model)
        backbone = {n for n in changed if n.startswith("encoder.backbone.")}
        assert any(n.startswith("exit_ctc_heads.2.") for n in changed)
        assert any(n.startswith("encoder.exit_norms.2.") for n in changed)
        if step < 2:  # frozen: not even the final layer_norm or the CNN moves
            assert backbone == set(), sorted(backbone)[:5]
        else:
            assert any(n.startswith("encoder.backbone.feature_extractor.") for n in backbone)
            assert any(n.startswith("encoder.backbone.encoder.layers.") for n in backbone)
    # the count is a buffer: it is saved and restored (training resumes where it was)
    state = model.state_dict()
    assert int(state["encoder.num_training_calls"]) == 3
    (tmp_path / "b").mkdir()
    fresh, _ = build_from_yaml(
        "train_ee_wav2vec2_base_indep.yaml", path, tmp_path / "b",
        exit_layers=[2, 4], freeze_backbone_steps=2, freeze_feature_encoder=False,
    )
    fresh.load_state_dict(state)
    assert int(fresh.encoder.num_training_calls) == 3 and not fresh.encoder.backbone_frozen()
    # evaluation does not count
    model.eval()
    with torch.no_grad():
        model(*batch())
    assert int(model.encoder.num_training_calls) == 3


def test_spec_augment_only_when_configured(tiny):
    # backbone_conf overrides the checkpoint's config: no dropout, so training passes agree
    no_dropout = dict(attention_dropout=0.0, hidden_dropout=0.0, activation_dropout=0.0,
                      feat_proj_dropout=0.0)
    x, lens = waves()
    off = encoder(tiny("wav2vec2"), exit_layers=[4], layer_drop_rate=0.0,
                  backbone_conf=no_dropout).train()
    assert off.backbone.config.apply_spec_augment is False
    assert off.backbone.config.attention_dropout == 0.0
    a, _ = off.forward_exits(x, lens)
    b, _ = off.forward_exits(x, lens)
    close(a[0][1], b[0][1])
    on = encoder(tiny("wav2vec2"), exit_layers=[4], layer_drop_rate=0.0,
                 apply_spec_augment=True, backbone_conf=no_dropout).train()
    torch.manual_seed(0)
    c, _ = on.forward_exits(x, lens)
    assert not torch.allclose(a[0][1], c[0][1])  # masked frames changed the output
    on.eval()
    with torch.no_grad():  # never in evaluation
        d, _ = on.forward_exits(x, lens)
    close(d[0][1], a[0][1].detach())


# ------------------------------------------------------------------ errors
def test_missing_model_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(OSError) as e:
        encoder(str(missing))
    assert str(missing) in str(e.value)
    assert "facebook/wav2vec2-base" in str(e.value) and "internet" in str(e.value)


def test_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="cannot load the pre-trained model") as e:
        encoder(str(tmp_path / "empty"))
    assert "microsoft/wavlm-base-plus" in str(e.value)


def test_exit_beyond_depth_names_the_depth(tiny):
    with pytest.raises(ValueError) as e:
        encoder(tiny("hubert"), exit_layers=[2, 4, 6])
    assert "outside 1..4" in str(e.value) and "4 transformer layers" in str(e.value)


def test_feature_input_is_rejected(tiny):
    with pytest.raises(ValueError, match="input_size: 1"):
        from espnet_early_exit.encoders.hf_ssl import EEHuggingFaceSSLEncoder

        EEHuggingFaceSSLEncoder(input_size=80, model_name_or_path=tiny("wav2vec2"),
                                exit_layers=[4])


# ------------------------------------------------------------------ the real ESPnet pipeline
@pytest.mark.slow
def test_collect_stats_and_training_with_the_shipped_yaml(tiny, tmp_path):
    """`asr_train --collect_stats` and two epochs with the wav2vec2 YAML as shipped, only the
    model pointed at a local folder (`--encoder_conf model_name_or_path=...`); the frozen-
    backbone count is in the saved model."""
    import subprocess
    import sys

    from test_finetune import data_opts, make_data

    make_data(tmp_path)
    path = tiny("wav2vec2", num_layers=12, hidden=16, do_normalize=True)
    common = [sys.executable, "-m", "espnet_early_exit.bin.asr_train", "--ngpu", "0",
              "--config", str(REPO / "conf/tuning/train_ee_wav2vec2_base_shared.yaml"),
              "--encoder_conf", f"model_name_or_path={path}", "--encoder_conf",
              "freeze_backbone_steps=1", "--batch_bins", "100000", "--accum_grad", "1",
              *data_opts()]
    stats = tmp_path / "exp" / "stats"
    for cmd, log in (
        (["--collect_stats", "true", "--train_shape_file", "data/train/wav.scp",
          "--valid_shape_file", "data/valid/wav.scp", "--output_dir", str(stats)], "stats.log"),
        (["--fold_length", "80000", "--fold_length", "150",
          "--train_shape_file", f"{stats}/train/speech_shape",
          "--train_shape_file", f"{stats}/train/text_shape",
          "--valid_shape_file", f"{stats}/valid/speech_shape",
          "--valid_shape_file", f"{stats}/valid/text_shape",
          "--max_epoch", "2", "--output_dir", str(tmp_path / "exp" / "asr")], "train.log"),
    ):
        proc = subprocess.run(common + cmd, cwd=tmp_path, capture_output=True, text=True)
        (tmp_path / log).write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    text = (tmp_path / "train.log").read_text()
    assert "loss_ctc_exit2" in text and "loss_ctc_exit12" in text
    state = torch.load(tmp_path / "exp" / "asr" / "2epoch.pth")
    assert int(state["encoder.num_training_calls"]) == 2  # one batch per epoch, 2 epochs
    config = yaml.safe_load((tmp_path / "exp" / "asr" / "config.yaml").read_text())
    assert config["encoder"] == "ee_hf_ssl" and config["input_size"] == 1
    # what loading needs instead of the hub (tests/test_callers.py decodes offline with it)
    enc_conf = config["encoder_conf"]
    assert enc_conf["load_pretrained"] is False and enc_conf["normalize_waveform"] is True
    assert enc_conf["backbone_config"]["num_hidden_layers"] == 12
