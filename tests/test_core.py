"""Plugin core: registration, multi-exit encoders, the ee_espnet model and its loss."""

from __future__ import annotations

import concurrent.futures
import multiprocessing

import pytest
import torch
import yaml

from conftest import build_args, fake_batch, tiny_config

ENCODER_CONFS = {
    "ee_conformer": dict(
        output_size=32, attention_heads=2, linear_units=64, num_blocks=4,
        input_layer="conv2d", macaron_style=True, rel_pos_type="latest",
        pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
        cnn_module_kernel=7,
    ),
    "ee_transformer": dict(
        output_size=32, attention_heads=2, linear_units=64, num_blocks=4,
        input_layer="conv2d",
    ),
    "ee_e_branchformer": dict(
        output_size=32, attention_heads=2, cgmlp_linear_units=64, cgmlp_conv_kernel=7,
        num_blocks=4, input_layer="conv2d", linear_units=64, use_ffn=True, macaron_ffn=True,
    ),
}
STOCK = {
    "ee_conformer": "conformer",
    "ee_transformer": "transformer",
    "ee_e_branchformer": "e_branchformer",
}


def config_for(encoder: str, exit_layers=(1, 2, 3, 4), **model_conf) -> dict:
    conf = dict(ENCODER_CONFS[encoder], exit_layers=list(exit_layers))
    cfg = tiny_config(encoder=encoder, encoder_conf=conf)
    cfg["decoder_conf"] = dict(cfg["decoder_conf"])
    cfg["model_conf"] = {**cfg["model_conf"], "exit_weights": None, **model_conf}
    return cfg


# ------------------------------------------------------------------ registration
def test_import_registers_encoders_and_model():
    import espnet_early_exit  # noqa: F401
    from espnet2.tasks import asr

    for key in ("ee_conformer", "ee_transformer", "ee_e_branchformer"):
        assert key in asr.encoder_choices.classes
    assert asr.model_choices.get_class("ee_espnet").__name__ == "EarlyExitASRModel"


def test_registration_holds_in_a_spawned_process():
    """ESPnet's multi-GPU trainer spawns workers that unpickle our task class: they must
    see the plugin's choices without the parent's state."""
    from espnet_early_exit.registry import registered_names

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        names = pool.submit(registered_names).result(timeout=300)
    assert {"ee_conformer", "ee_transformer", "ee_e_branchformer"} <= set(names["encoder"])
    assert names["model"] == ["ee_espnet"]


def test_entry_points_accept_espnet_options():
    from espnet2.bin.asr_train import get_parser as stock_train_parser

    from espnet_early_exit.bin.asr_train import get_parser

    ours = {a.dest for a in get_parser()._actions}
    stock = {a.dest for a in stock_train_parser()._actions}
    assert stock <= ours
    enc = next(a for a in get_parser()._actions if a.dest == "encoder")
    assert "ee_conformer" in enc.choices


# ------------------------------------------------------------------ encoders
@pytest.mark.parametrize("encoder", sorted(STOCK))
def test_single_exit_encoder_equals_stock_espnet_encoder(encoder):
    """exit_layers: [N] with the same weights gives the stock encoder's output."""
    from espnet2.tasks.asr import encoder_choices

    conf = ENCODER_CONFS[encoder]
    torch.manual_seed(0)
    stock = encoder_choices.get_class(STOCK[encoder])(20, **conf).eval()
    ours = encoder_choices.get_class(encoder)(20, exit_layers=[4], **conf).eval()
    missing = ours.load_state_dict(stock.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x, lens = torch.randn(3, 64, 20), torch.tensor([64, 50, 33])
    ref, ref_lens, _ = stock(x, lens)
    out, out_lens, _ = ours(x, lens)
    assert torch.equal(ref_lens, out_lens)
    valid = ~torch.nn.utils.rnn.pad_sequence(
        [torch.zeros(int(n), dtype=torch.bool) for n in ref_lens], batch_first=True
    )
    assert torch.allclose(ref, out, atol=1e-6), (ref - out).abs().max()
    assert valid.numel() > 0


@pytest.mark.parametrize("encoder", sorted(STOCK))
def test_exit_outputs_equal_prefix_runs_and_later_blocks_do_not_run(encoder):
    from espnet2.tasks.asr import encoder_choices

    torch.manual_seed(0)
    enc = encoder_choices.get_class(encoder)(
        20, exit_layers=[1, 3, 4], **ENCODER_CONFS[encoder]
    ).eval()
    x, lens = torch.randn(2, 64, 20), torch.tensor([64, 41])
    (final, inter), olens, _ = enc(x, lens)
    full = dict(inter)
    full[4] = final
    calls = []
    hooks = [b.register_forward_hook(lambda m, i, o, n=n: calls.append(n))
             for n, b in enumerate(enc.blocks())]
    for k in (1, 3):
        calls.clear()
        outs, prefix_lens = enc.forward_exits(x, lens, up_to=k)
        assert torch.allclose(outs[-1][1], full[k], atol=1e-6)
        assert torch.equal(prefix_lens, olens)
        assert calls == list(range(k)), f"exit {k} ran blocks {calls}"
    # resume from exit 1 to exit 4 without recomputing blocks 1
    calls.clear()
    state = enc.advance(enc.begin(x, lens), 1)
    state = enc.advance(state, 4)
    assert calls == [0, 1, 2, 3]
    assert torch.allclose(enc.exit_output(state), final, atol=1e-6)
    for h in hooks:
        h.remove()


@pytest.mark.parametrize(
    "exit_layers, message",
    [
        ([], "exit_layers is empty"),
        ([2, 2, 4], "2 appears twice"),
        ([3, 2, 4], "2 comes after 3"),
        ([0, 4], "0 is outside 1..4"),
        ([2, 5], "5 is outside 1..4"),
        ([1, 2], "must include the last block 4"),
        (None, "exit_layers: missing"),
    ],
)
def test_invalid_exit_layers_name_the_bad_value(exit_layers, message):
    from espnet_early_exit.encoders import EEConformerEncoder

    with pytest.raises(ValueError, match=message):
        EEConformerEncoder(20, exit_layers=exit_layers, **ENCODER_CONFS["ee_conformer"])


def test_invalid_exit_norm_and_interctc_are_rejected():
    from espnet_early_exit.encoders import EEConformerEncoder

    with pytest.raises(ValueError, match="exit_norm"):
        EEConformerEncoder(20, exit_layers=[4], exit_norm="bogus",
                           **ENCODER_CONFS["ee_conformer"])
    with pytest.raises(ValueError, match="interctc_layer_idx"):
        EEConformerEncoder(20, exit_layers=[4], interctc_layer_idx=[2],
                           **ENCODER_CONFS["ee_conformer"])


# ------------------------------------------------------------------ the model
@pytest.mark.parametrize("encoder", sorted(STOCK))
def test_build_from_yaml_every_exit_head_gets_a_gradient_and_reload(
    encoder, build_model, tmp_path
):
    from espnet_early_exit.task import EarlyExitASRTask

    model, args = build_model(config_for(encoder))
    assert model.exit_layers == [1, 2, 3, 4]
    speech, lens, text, text_lens = fake_batch(model.vocab_size)
    loss, stats, _ = model(speech, lens, text.clone(), text_lens)
    loss.backward()
    for k in model.exit_layers:
        head = model.ctc_at(k).ctc_lo.weight
        assert head.grad is not None and head.grad.abs().sum() > 0, f"exit {k} CTC head"
        dec = model.decoder_at(k)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())
        assert f"loss_ctc_exit{k}" in stats and f"loss_att_exit{k}" in stats
    # distinct heads per exit
    assert len({id(model.ctc_at(k)) for k in model.exit_layers}) == 4

    # save as ESPnet does (config.yaml + state dict) and reload through build_model_from_file
    config_file, model_file = tmp_path / "config.yaml", tmp_path / "model.pth"
    config_file.write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), model_file)
    reloaded, _ = EarlyExitASRTask.build_model_from_file(config_file, model_file)
    model.eval(), reloaded.eval()
    with torch.no_grad():
        a, _ = model.encode_exits(speech, lens)
        b, _ = reloaded.encode_exits(speech, lens)
    for (ka, oa), (kb, ob) in zip(a, b):
        assert ka == kb and torch.equal(oa, ob)


def test_validation_stats_have_per_exit_cer_and_wer(build_model):
    model, _ = build_model(config_for("ee_conformer"))
    model.eval()
    speech, lens, text, text_lens = fake_batch(model.vocab_size)
    with torch.no_grad():
        _, stats, _ = model(speech, lens, text.clone(), text_lens)
    for k in model.exit_layers:
        for key in (f"cer_ctc_exit{k}", f"wer_ctc_exit{k}", f"acc_exit{k}"):
            assert stats[key] is not None and float(stats[key]) >= 0.0, key
    model.train()
    _, stats, _ = model(speech, lens, text.clone(), text_lens)
    assert "cer_ctc_exit1" not in stats  # error rates only on validation, like ESPnet


def test_loss_is_the_weighted_sum_over_exits(build_model):
    model, _ = build_model(config_for("ee_conformer", exit_weights=[0.5, 0.0, 2.0, 1.0]))
    model.eval()
    speech, lens, text, text_lens = fake_batch(model.vocab_size)
    with torch.no_grad():
        loss, stats, _ = model(speech, lens, text.clone(), text_lens)
    w = model.ctc_weight
    expected = sum(
        wk * (w * float(stats[f"loss_ctc_exit{k}"]) + (1 - w) * float(stats[f"loss_att_exit{k}"]))
        for wk, k in zip([0.5, 0.0, 2.0, 1.0], model.exit_layers)
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_single_exit_model_matches_stock_espnet_model(build_model, token_list_file, tmp_path):
    """exit_layers [N] is the no-EE baseline: same loss as ESPnet's model on the same weights."""
    from espnet_early_exit.task import EarlyExitASRTask

    ours, _ = build_model(config_for("ee_conformer", exit_layers=[4]))
    stock_cfg = tiny_config(
        encoder="conformer", encoder_conf=ENCODER_CONFS["ee_conformer"], model="espnet",
        model_conf={"ctc_weight": 0.5, "lsm_weight": 0.1, "length_normalized_loss": False},
    )
    stock = EarlyExitASRTask.build_model(build_args(stock_cfg, token_list_file, tmp_path))
    result = ours.load_state_dict(stock.state_dict(), strict=True)
    assert not result.missing_keys
    ours.eval(), stock.eval()
    speech, lens, text, text_lens = fake_batch(ours.vocab_size)
    with torch.no_grad():
        l1, s1, _ = ours(speech, lens, text.clone(), text_lens)
        l2, s2, _ = stock(speech, lens, text.clone(), text_lens)
    assert float(l1) == pytest.approx(float(l2), rel=1e-5)
    assert float(s1["loss_ctc_exit4"]) == pytest.approx(float(s2["loss_ctc"]), rel=1e-5)


def test_shared_heads_and_decoder_modes(build_model):
    model, _ = build_model(config_for("ee_conformer", share_exit_heads=True, exit_decoders="last"))
    assert len(model.exit_ctc_heads) == 0
    assert all(model.ctc_at(k) is model.ctc for k in model.exit_layers)
    assert [model.decoder_at(k) is not None for k in model.exit_layers] == [False] * 3 + [True]
    shared, _ = build_model(config_for("ee_conformer", exit_decoders="shared"))
    assert all(shared.decoder_at(k) is shared.decoder for k in shared.exit_layers)
    ctc_only = tiny_config(
        encoder="ee_conformer",
        encoder_conf=dict(ENCODER_CONFS["ee_conformer"], exit_layers=[2, 4]),
        model_conf={"ctc_weight": 1.0},
    )
    m, _ = build_model(ctc_only)
    assert m.decoder is None and m.decoder_at(2) is None
    speech, lens, text, text_lens = fake_batch(m.vocab_size)
    loss, stats, _ = m(speech, lens, text.clone(), text_lens)
    assert float(loss) == pytest.approx(
        float(stats["loss_ctc_exit2"]) + float(stats["loss_ctc_exit4"]), rel=1e-5
    )


@pytest.mark.parametrize(
    "model_conf, message",
    [
        ({"exit_weights": [1.0, 1.0]}, r"exit_weights: 2 values for 4 exits"),
        ({"exit_weights": [1.0, -1.0, 1.0, 1.0]}, r"exit_weights: -1.0"),
        ({"exit_weights": [0.0, 0.0, 0.0, 0.0]}, r"all weights are 0"),
        ({"exit_decoders": "everywhere"}, r"exit_decoders: 'everywhere'"),
        ({"ctc_weight": 0.0}, r"ctc_weight: 0.0 must be in \(0, 1\]"),
    ],
)
def test_bad_model_conf_names_the_key(build_model, model_conf, message):
    cfg = config_for("ee_conformer")
    cfg["model_conf"].update(model_conf)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)


def test_ee_model_needs_a_multi_exit_encoder(build_model):
    cfg = tiny_config(encoder="conformer", encoder_conf=ENCODER_CONFS["ee_conformer"])
    with pytest.raises(ValueError, match="needs an early-exit encoder"):
        build_model(cfg)


@pytest.mark.parametrize(
    "code",
    [
        "import espnet_early_exit\nfrom espnet2.tasks import asr",  # plugin first
        "from espnet2.tasks import asr\nimport espnet_early_exit",  # ESPnet first
    ],
)
def test_registration_in_a_fresh_interpreter_either_import_order(code):
    import subprocess
    import sys

    from conftest import REPO

    check = code + (
        "\nassert 'ee_e_branchformer' in asr.encoder_choices.classes"
        "\nassert 'ee_espnet' in asr.model_choices.classes\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("mode", ["eager", "recompute"])
@pytest.mark.parametrize("share", [False, True])
def test_exit_head_memory_modes_give_the_same_loss_and_gradients(build_model, mode, share):
    plain, _ = build_model(config_for("ee_conformer", exit_decoders="last",
                                      share_exit_heads=share))
    other, _ = build_model(config_for("ee_conformer", exit_decoders="last",
                                      share_exit_heads=share, exit_head_memory=mode))
    other.load_state_dict(plain.state_dict())
    for m in (plain, other):  # training mode, no dropout, so both passes are deterministic
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    speech, lens, text, text_lens = fake_batch(plain.vocab_size)
    grads = []
    for m in (plain, other):
        torch.manual_seed(0)  # SpecAugment is off in the tiny config; keep RNG equal anyway
        loss, _, _ = m(speech, lens, text.clone(), text_lens)
        (0.7 * loss).backward()  # a scale, as a grad scaler or loss weight would apply
        grads.append((float(loss), m.ctc_at(1).ctc_lo.weight.grad.clone(),
                      m.ctc_at(1).ctc_lo.bias.grad.clone(),
                      m.encoder.blocks()[0].feed_forward.w_1.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for a, b in zip(grads[0][1:], grads[1][1:]):  # eager: a fused CTC gradient, float rounding
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert grads[0][1].abs().sum() > 0


def test_eager_exit_heads_keep_no_vocab_sized_tensor(build_model):
    """What autograd keeps for backward: with "eager" no (B, T, vocab) tensor of an earlier
    exit (only the last exit's, as in ESPnet's single-exit model)."""
    shapes = {}
    for mode in ("keep", "eager"):
        model, _ = build_model(config_for("ee_conformer", exit_decoders="last",
                                          exit_head_memory=mode))
        model.train()
        speech, lens, text, text_lens = fake_batch(model.vocab_size)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t,
                                                      lambda t: t):
            model(speech, lens, text.clone(), text_lens)
        shapes[mode] = [s for s in saved if len(s) == 3 and s[-1] == model.vocab_size]
    assert len(shapes["keep"]) > len(shapes["eager"]) > 0
    # one exit's worth (the last) remains
    n_exits = 4
    assert len(shapes["keep"]) == n_exits * len(shapes["eager"])


def test_low_rank_exit_heads(build_model, tmp_path):
    from espnet_early_exit.model import LowRankProjection

    model, _ = build_model(config_for("ee_conformer", exit_decoders="last", exit_head_rank=3))
    for k in (1, 2, 3):
        lo = model.ctc_at(k).ctc_lo
        assert isinstance(lo, LowRankProjection)
        assert lo[0].weight.shape == (3, lo.in_features)
        assert lo[1].weight.shape == (model.vocab_size, 3)
    assert isinstance(model.ctc_at(4).ctc_lo, torch.nn.Linear)  # the last exit: ESPnet's head
    model.train()
    speech, lens, text, text_lens = fake_batch(model.vocab_size)
    loss, stats, _ = model(speech, lens, text.clone(), text_lens)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.ctc_at(1).ctc_lo.parameters())
    assert "loss_ctc_exit1" in stats
    with pytest.raises(ValueError, match="exit_head_rank"):
        build_model(config_for("ee_conformer", share_exit_heads=True, exit_head_rank=3))
    with pytest.raises(ValueError, match="exit_head_rank"):
        build_model(config_for("ee_conformer", exit_head_rank=0))
    with pytest.raises(ValueError, match="exit_head_memory"):
        build_model(config_for("ee_conformer", exit_head_memory="checkpoint"))


def test_eager_exit_heads_under_autocast(build_model):
    """Mixed precision (use_amp: the LibriSpeech configs): eager heads give the gradients of
    the usual backward, within bfloat16's precision."""
    plain, _ = build_model(config_for("ee_conformer", exit_decoders="last"))
    eager, _ = build_model(config_for("ee_conformer", exit_decoders="last",
                                      exit_head_memory="eager"))
    eager.load_state_dict(plain.state_dict())
    speech, lens, text, text_lens = fake_batch(plain.vocab_size)
    grads = []
    for m in (plain, eager):
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = m(speech, lens, text.clone(), text_lens)
        loss.backward()
        grads.append(m.ctc_at(1).ctc_lo.weight.grad.float())
        assert m.ctc_at(1).ctc_lo.weight.grad.dtype == torch.float32
    rel = (grads[0] - grads[1]).norm() / grads[0].norm()
    assert rel < 0.05, rel


@pytest.mark.parametrize("rank", [None, 3])
def test_fused_ctc_gradients_equal_espnet_ctc(rank):
    """eager heads with ESPnet's builtin CTC form d loss / d logits as softmax - occupancy:
    the same loss and gradients as ESPnet's CTC module, also with repeated labels, padded
    frames, an empty transcript and an utterance too short for its labels (zero_infinity)."""
    from espnet2.asr.ctc import CTC

    from espnet_early_exit.model import (LowRankProjection, _autograd_loss_and_grads,
                                         _builtin_ctc_loss_and_grads, _fusable)

    torch.manual_seed(0)
    head = CTC(odim=12, encoder_output_size=8)
    if rank:
        head.ctc_lo = LowRankProjection(8, rank, 12)
    assert _fusable(head)
    B, T = 5, 9
    x = torch.randn(B, T, 8)
    hlens = torch.tensor([9, 7, 9, 2, 5])
    ys = torch.tensor([[3, 3, 4, 3, 11], [5, 6, 5, -1, -1], [2, 2, 2, -1, -1],
                       [7, 7, 7, 7, -1], [-1, -1, -1, -1, -1]])
    ys_lens = torch.tensor([5, 3, 3, 4, 0])
    params = list(head.parameters())
    got_loss, got = _builtin_ctc_loss_and_grads(head, x.clone().requires_grad_(), params,
                                                hlens, ys, ys_lens)
    want_loss, want = _autograd_loss_and_grads(head, x.clone().requires_grad_(), params,
                                               hlens, ys, ys_lens)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(want_loss) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert got[0][3].abs().sum() == 0  # the infeasible utterance: no gradient, as zero_infinity
