"""EarlyExitSpeech2Text: real stopping, decoding at an exit, policies, batch, CLI, errors.

Every model here is the tiny Conformer of conf/tuning/train_ee_conformer_tiny.yaml (4 blocks,
an exit after each, a decoder per exit) with random weights, built in a tmp dir.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_early_exit.inference import EarlyExitResult, EarlyExitSpeech2Text, select_state

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "conf" / "tuning" / "train_ee_conformer_tiny.yaml"
TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "c", "d", "e", "<sos/eos>"]
FS = 16000
GREEDY = dict(beam_size=1, ctc_weight=1.0)


def make_model_dir(
    root: Path, exit_decoders="per_exit", peaky_exit=None, seed=0, input_layer="conv2d",
    **model_conf,
):
    """config.yaml + model.pth of a random tiny model; `peaky_exit`'s CTC head is scaled up
    so that its posteriors are sure (a dynamic policy then accepts there)."""
    from espnet_early_exit.task import EarlyExitASRTask

    root.mkdir(parents=True, exist_ok=True)
    conf = yaml.safe_load(TINY.read_text())
    conf["model_conf"]["exit_decoders"] = exit_decoders
    conf["model_conf"].update(model_conf)
    conf["encoder_conf"]["input_layer"] = input_layer
    train_yaml = root / "train.yaml"
    train_yaml.write_text(yaml.safe_dump(conf))
    args = EarlyExitASRTask.get_parser().parse_args(
        ["--config", str(train_yaml), "--output_dir", str(root / "exp"), "--token_type", "char"]
    )
    args.token_list = list(TOKENS)
    torch.manual_seed(seed)
    model = EarlyExitASRTask.build_model(args)
    if peaky_exit is not None:
        with torch.no_grad():
            lo = model.ctc_at(peaky_exit).ctc_lo
            (lo[-1] if isinstance(lo, torch.nn.Sequential) else lo).weight.mul_(40.0)
    (root / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), root / "model.pth")
    return str(root / "config.yaml"), str(root / "model.pth")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("ee_model"))


@pytest.fixture(scope="module")
def peaky_files(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("ee_peaky"), peaky_exit=2)


@pytest.fixture(scope="module")
def last_files(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("ee_last"), exit_decoders="last")


def wave(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * FS))).astype(np.float32)


def s2t(files, **kw):
    return EarlyExitSpeech2Text(files[0], files[1], **kw)


class CallCounter:
    """Forward hooks on the encoder's front and blocks."""

    def __init__(self, model):
        self.embed = 0
        self.blocks = [0] * len(model.encoder.blocks())
        self.handles = [model.encoder.embed.register_forward_hook(self._front)]
        for i, block in enumerate(model.encoder.blocks()):
            self.handles.append(block.register_forward_hook(self._block(i)))

    def _front(self, *_):
        self.embed += 1

    def _block(self, i):
        def hook(*_):
            self.blocks[i] += 1

        return hook

    def reset(self):
        self.embed = 0
        self.blocks = [0] * len(self.blocks)

    def remove(self):
        for h in self.handles:
            h.remove()


def same(a, b):
    """Two n-best lists of EarlyExitResults are the same decode."""
    assert [r.token_int for r in a] == [r.token_int for r in b]
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.exit_layer for r in a] == [r.exit_layer for r in b]
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, rel=1e-4, abs=1e-3)
        assert sorted(x.confidences) == sorted(y.confidences)
        for k in x.confidences:
            assert x.confidences[k] == pytest.approx(y.confidences[k], rel=1e-4, abs=1e-5)


# ------------------------------------------------------------------ encoder
def test_encode_to_equals_training_exits(model_files):
    dec = s2t(model_files, **GREEDY)
    model = dec.asr_model
    model.eval()
    speech = torch.from_numpy(wave(1.2))[None]
    lengths = torch.tensor([speech.size(1)])
    with torch.no_grad():
        outs, olens = model.encode_exits(speech, lengths)
        state = model.encode_begin(speech, lengths)
        for k, ref in outs:
            state, out, lens = model.encode_to(state, k)
            assert state.layer == k
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            assert torch.equal(lens, olens)


# ------------------------------------------------------------------ stopping
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_fixed_exit_runs_exactly_k_blocks(model_files, k):
    dec = s2t(model_files, exit_layer=k, **GREEDY)
    counter = CallCounter(dec.asr_model)
    results = dec(wave())
    counter.remove()
    assert counter.embed == 1
    assert counter.blocks == [1] * k + [0] * (4 - k)
    assert results[0].exit_layer == k and results[0].confidences == {}


@pytest.mark.parametrize("policy,th", [("max_posterior", 0.9), ("nbest_posterior", 0.7)])
def test_policy_accepting_at_exit_2_runs_2_blocks(peaky_files, policy, th):
    dec = s2t(peaky_files, exit_policy=policy, exit_threshold=th, **GREEDY)
    counter = CallCounter(dec.asr_model)
    results = dec(wave())
    counter.remove()
    best = results[0]
    assert best.exit_layer == 2
    assert sorted(best.confidences) == [1, 2]
    assert best.confidences[1] < th <= best.confidences[2]
    assert counter.embed == 1
    assert counter.blocks == [1, 1, 0, 0]


def test_entropy_policy_stops_where_entropy_drops(peaky_files):
    dec = s2t(peaky_files, exit_policy="entropy", exit_threshold=0.2, **GREEDY)
    counter = CallCounter(dec.asr_model)
    best = dec(wave())[0]
    counter.remove()
    assert best.exit_layer == 2 and best.confidences[1] >= 0.2 > best.confidences[2]
    assert counter.blocks == [1, 1, 0, 0]


def test_policy_that_never_accepts_reaches_the_last_exit(model_files):
    dec = s2t(model_files, exit_policy="max_posterior", exit_threshold=1.0, **GREEDY)
    best = dec(wave())[0]
    assert best.exit_layer == 4 and sorted(best.confidences) == [1, 2, 3, 4]


def test_decode_all_exits_runs_each_block_once(model_files):
    dec = s2t(model_files, exit_policy="entropy", **GREEDY)  # no threshold: confidences only
    counter = CallCounter(dec.asr_model)
    timings = {}
    by_exit = dec.decode_all_exits(wave(), timings=timings)
    counter.remove()
    assert counter.embed == 1 and counter.blocks == [1, 1, 1, 1]
    assert sorted(by_exit) == [1, 2, 3, 4] == sorted(timings)
    assert all(t > 0 for t in timings.values())
    for k, results in by_exit.items():
        assert results[0].exit_layer == k
        assert sorted(results[0].confidences) == list(range(1, k + 1))
        fixed = s2t(model_files, exit_layer=k, **GREEDY)(wave())
        assert [r.token_int for r in fixed] == [r.token_int for r in results]


# ------------------------------------------------------------------ decoding modes
def test_greedy_is_argmax_collapse(model_files):
    dec = s2t(model_files, exit_layer=2, **GREEDY)
    best = dec(wave())[0]
    model = dec.asr_model
    with torch.no_grad():
        speech = torch.from_numpy(wave())[None]
        state = model.encode_begin(speech, torch.tensor([speech.size(1)]))
        _, out, _ = model.encode_to(state, 2)
        ids = model.ctc_at(2).argmax(out)[0]
    expected = [int(t) for t in torch.unique_consecutive(ids) if int(t) != 0]
    assert best.token_int == expected
    assert best.token == [TOKENS[i] for i in expected]
    assert dec.greedy and repr(dec.searcher(2)) == "GreedyCTC()"


@pytest.mark.parametrize(
    "options",
    [dict(beam_size=3, ctc_weight=1.0), dict(beam_size=3, ctc_weight=0.5)],
    ids=["ctc_prefix_beam", "joint_ctc_att"],
)
def test_last_exit_equals_stock_speech2text(model_files, options):
    from espnet2.bin.asr_inference import Speech2Text

    options = dict(options, maxlenratio=-8.0, nbest=2)
    ours = s2t(model_files, **options)(wave(0.8))
    stock = Speech2Text(model_files[0], model_files[1], **options)(wave(0.8))
    if isinstance(stock, tuple):  # (results, intermediate CTC outputs)
        stock = stock[0]
    assert len(ours) == len(stock) == 2
    for r, (text, token, token_int, hyp) in zip(ours, stock):
        assert (r.text, r.token, r.token_int) == (text, token, token_int)
        assert r.score == pytest.approx(float(hyp.score), abs=1e-4)


def test_searchers_use_the_exit_heads(model_files, last_files):
    dec = s2t(model_files, beam_size=2, ctc_weight=0.5)
    model = dec.asr_model
    search = dec.searcher(2)
    assert search.full_scorers["decoder"] is model.decoder_at(2)
    assert search.part_scorers["ctc"].ctc is model.ctc_at(2)
    assert search.weights["decoder"] == pytest.approx(0.5)
    assert dec.searcher(2) is search  # cached
    assert dec.searcher(4).full_scorers["decoder"] is model.decoder
    ctc_only = s2t(model_files, beam_size=2, ctc_weight=1.0).searcher(3)
    assert "decoder" not in ctc_only.scorers and "ctc" in ctc_only.scorers
    # exit_decoders: last -> earlier exits fall back to CTC prefix beam search
    last = s2t(last_files, beam_size=2, ctc_weight=0.5)
    assert "decoder" not in last.searcher(2).scorers
    assert last.searcher(2).weights["ctc"] == 1.0
    assert "decoder" in last.searcher(4).scorers
    assert last(wave(0.6), )[0].exit_layer == 4


def test_result_unpacks_like_espnet(model_files):
    best = s2t(model_files, exit_layer=3, **GREEDY)(wave())[0]
    assert isinstance(best, EarlyExitResult)
    text, token, token_int, hyp = best
    assert (text, token, token_int, hyp) == (best.text, best.token, best.token_int, best.hyp)
    assert best[2] == token_int and len(best) == 4
    assert best.score == float(hyp.score)


# ------------------------------------------------------------------ batch
def _pick_split_threshold(files):
    """A max_posterior threshold at which the batch's utterances leave at different exits."""
    dec = s2t(files, exit_policy="max_posterior", **GREEDY)
    c1 = [dec.decode_all_exits(w)[1][0].confidences[1] for w in WAVES]
    top, second = sorted(c1)[-1], sorted(c1)[-2]
    assert top > second
    return (top + second) / 2  # the most confident utterance leaves at exit 1, the others later


WAVES = [wave(1.0, 1), wave(1.6, 2), wave(0.7, 3), np.zeros(12000, np.float32)]


@pytest.mark.parametrize(
    "kind", ["fixed_greedy", "policy_split", "joint_att", "ctc_beam_policy"]
)
def test_batch_equals_one_by_one(peaky_files, kind):
    if kind == "fixed_greedy":
        dec = s2t(peaky_files, exit_layer=3, **GREEDY)
    elif kind == "policy_split":
        th = _pick_split_threshold(peaky_files)
        dec = s2t(peaky_files, exit_policy="max_posterior", exit_threshold=th, **GREEDY)
    elif kind == "joint_att":
        dec = s2t(peaky_files, exit_layer=3, beam_size=2, ctc_weight=0.5, maxlenratio=-6.0)
    else:
        dec = s2t(
            peaky_files, exit_policy="entropy", exit_threshold=0.5, beam_size=2,
            ctc_weight=1.0, maxlenratio=-6.0,
        )
    batch = dec.decode_batch(WAVES)
    single = [dec(w) for w in WAVES]
    assert len(batch) == len(WAVES)
    for b, s in zip(batch, single):
        same(b, s)
    if kind == "policy_split":
        exits = {r[0].exit_layer for r in batch}
        assert 1 in exits and len(exits) > 1  # utterances really left at different exits
    # ESPnet's padded entry point gives the same
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in WAVES], True)
    lengths = torch.tensor([len(w) for w in WAVES])
    for b, s in zip(dec.batch_decode(padded, lengths), single):
        same(b, s)


@pytest.mark.parametrize("policy", ["entropy", "max_posterior", "fixed"])
def test_frame_stats_kernel_and_torch_ops_decode_the_same(peaky_files, policy, monkeypatch):
    """The per-frame statistics from the C kernel (when built) and from torch ops give the
    same tokens, exits, scores and confidences, in a batch whose rows leave at different
    exits; with the kernel built, it is the one in use."""
    from espnet_early_exit import frame_stats as fs

    if policy == "fixed":
        dec = s2t(peaky_files, exit_layer=2, **GREEDY)
    elif policy == "max_posterior":
        th = _pick_split_threshold(peaky_files)
        dec = s2t(peaky_files, exit_policy="max_posterior", exit_threshold=th, **GREEDY)
    else:
        dec = s2t(peaky_files, exit_policy="entropy", exit_threshold=0.5, **GREEDY)
    default = dec.decode_batch(WAVES)
    monkeypatch.setenv("EEE_FRAME_STATS", "torch")
    torch_ops = dec.decode_batch(WAVES)
    for a, b in zip(default, torch_ops):
        same(a, b)
    if fs.kernel_path().exists():
        assert fs.kernel_loaded()


def test_light_front(tmp_path):
    files = make_model_dir(tmp_path / "conv1d4", input_layer="conv1d4", peaky_exit=2)
    dec = s2t(files, exit_policy="max_posterior", exit_threshold=0.9, **GREEDY)
    counter = CallCounter(dec.asr_model)
    best = dec(wave())[0]
    counter.remove()
    assert best.exit_layer == 2 and counter.embed == 1 and counter.blocks == [1, 1, 0, 0]
    for b, s in zip(dec.decode_batch(WAVES), [dec(w) for w in WAVES]):
        same(b, s)


def test_low_rank_exit_heads_decode(tmp_path):
    """Factorised earlier-exit heads (exit_head_rank) in every search and in a policy."""
    files = make_model_dir(tmp_path / "rank", peaky_exit=2, exit_head_rank=4)
    dec = s2t(files, exit_policy="max_posterior", exit_threshold=0.9, **GREEDY)
    assert dec(wave())[0].exit_layer == 2
    for opts in (GREEDY, dict(beam_size=3, ctc_weight=1.0), dict(beam_size=3, ctc_weight=0.5)):
        fixed = s2t(files, exit_layer=2, **opts)
        assert fixed(wave())[0].exit_layer == 2
    greedy_dec = s2t(files, exit_layer=2, **GREEDY)
    greedy = greedy_dec(wave())[0]
    model = greedy_dec.asr_model
    with torch.no_grad():
        state = model.encode_begin(torch.from_numpy(wave())[None], torch.tensor([FS]))
        _, out, _ = model.encode_to(state, 2)
        ids = torch.unique_consecutive(model.ctc_at(2).argmax(out)[0])
    assert greedy.token_int == [int(i) for i in ids if int(i) != 0]


def test_select_state_keeps_rows(model_files):
    dec = s2t(model_files, **GREEDY)
    model = dec.asr_model
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in WAVES[:3]], True)
    lengths = torch.tensor([len(w) for w in WAVES[:3]])
    with torch.no_grad():
        state = model.encode_begin(padded, lengths)
        state, _, _ = model.encode_to(state, 1)
        sub = select_state(state, [2, 0])
        _, out_sub, lens_sub = model.encode_to(sub, 2)
        _, out_all, lens_all = model.encode_to(state, 2)
    assert torch.equal(lens_sub, lens_all[[2, 0]])
    for row, orig in enumerate([2, 0]):
        n = int(lens_all[orig])
        torch.testing.assert_close(out_sub[row, :n], out_all[orig, :n], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ oracle
def test_oracle_policy(model_files):
    dec_all = s2t(model_files, **GREEDY)
    texts = {k: r[0].text for k, r in dec_all.decode_all_exits(wave()).items()}
    oracle = s2t(model_files, exit_policy="oracle", **GREEDY)
    best = oracle(wave(), ref=texts[4])[0]
    expected = min(k for k in texts if texts[k].split() == texts[4].split())
    assert best.exit_layer == expected
    assert best.confidences[4] == 1.0 and sorted(best.confidences) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="reference"):
        oracle(wave())


# ------------------------------------------------------------------ errors
def test_bad_audio(model_files):
    dec = s2t(model_files, **GREEDY)
    with pytest.raises(ValueError, match="empty"):
        dec(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="empty"):
        dec(torch.zeros(0))
    with pytest.raises(ValueError, match="mono"):
        dec(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        dec(np.full(16000, np.nan, np.float32))
    with pytest.raises(ValueError, match="8000 Hz but the model expects 16000 Hz"):
        dec(wave(), fs=8000)
    assert dec(wave(), fs=16000)[0].exit_layer == 4
    from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError

    with pytest.raises(TooShortUttError, match="too short"):
        dec(np.zeros(100, np.float32))  # shorter than the STFT window
    with pytest.raises(TooShortUttError, match="too short"):
        dec(np.zeros(600, np.float32))  # too few frames for the subsampling
    with pytest.raises(ValueError, match="no utterances"):
        dec.decode_batch([])


def test_bad_options(model_files):
    msg = r"exit_layer 5 is not one of the model's exits \[1, 2, 3, 4\]"
    with pytest.raises(ValueError, match=msg):
        s2t(model_files, exit_layer=5, **GREEDY)
    with pytest.raises(ValueError, match="unknown exit policy 'fastest'"):
        s2t(model_files, exit_policy="fastest", **GREEDY)
    with pytest.raises(ValueError, match=r"exit_threshold 1.2 is outside \[0.0, 1.0\]"):
        s2t(model_files, exit_policy="entropy", exit_threshold=1.2, **GREEDY)
    with pytest.raises(ValueError, match="exit_layer=2 is for exit_policy 'fixed'"):
        s2t(model_files, exit_policy="entropy", exit_threshold=0.5, exit_layer=2)
    with pytest.raises(NotImplementedError, match="streaming"):
        s2t(model_files, streaming=True)
    dec = s2t(model_files, exit_policy="max_posterior", **GREEDY)
    with pytest.raises(ValueError, match="needs exit_threshold"):
        dec(wave())
    with pytest.raises(ValueError, match="exit 7 is not one of"):
        dec.searcher(7)


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    utts = {"utt1": wave(1.0, 11), "utt2": wave(1.4, 12), "utt3": wave(0.9, 13)}
    scp, text = [], []
    for uid, w in utts.items():
        path = d / f"{uid}.wav"
        soundfile.write(path, w, FS)
        scp.append(f"{uid} {path}")
        text.append(f"{uid} a b c")
    (d / "wav.scp").write_text("\n".join(scp) + "\n")
    (d / "text").write_text("\n".join(text) + "\n")
    return d


def run_cli(model_files, data_dir, out, *extra):
    from espnet_early_exit.bin.asr_inference import main

    main(
        [
            "--output_dir", str(out),
            "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
            "--asr_train_config", model_files[0],
            "--asr_model_file", model_files[1],
            "--num_workers", "0",
            "--log_level", "WARNING",
            *extra,
        ]
    )


def read(path):
    return dict(
        line.rstrip("\n").split(" ", 1) for line in Path(path).read_text().splitlines()
    )


def test_cli_policy(peaky_files, data_dir, tmp_path):
    out = tmp_path / "entropy"
    run_cli(
        peaky_files, data_dir, out, "--beam_size", "1", "--ctc_weight", "1.0",
        "--exit_policy", "max_posterior", "--exit_threshold", "0.9", "--batch_size", "2",
    )
    best = out / "1best_recog"
    for name in ("text", "token", "token_int", "score", "exit", "confidence"):
        assert sorted(read(best / name)) == ["utt1", "utt2", "utt3"], name
    assert set(read(best / "exit").values()) == {"2"}
    for conf in read(best / "confidence").values():
        ks = [int(kv.split(":")[0]) for kv in conf.split()]
        assert ks == [1, 2]
        assert float(conf.split()[1].split(":")[1]) >= 0.9
    timing = json.loads((out / "timing.json").read_text())
    assert timing["audio_seconds"] == pytest.approx(3.3)
    assert timing["rtf"] == pytest.approx(timing["wall_seconds"] / timing["audio_seconds"])
    # the same through the Python API
    dec = s2t(peaky_files, exit_policy="max_posterior", exit_threshold=0.9, **GREEDY)
    w, fs = soundfile.read(data_dir / "utt2.wav", dtype="float32")
    assert read(best / "token_int")["utt2"] == " ".join(map(str, dec(w, fs=fs)[0].token_int))


def test_cli_fixed_exit_and_nbest(model_files, data_dir, tmp_path):
    out = tmp_path / "exit2"
    run_cli(
        model_files, data_dir, out, "--beam_size", "2", "--ctc_weight", "0.5",
        "--nbest", "2", "--maxlenratio", "-5", "--exit_layer", "2",
    )
    for n in (1, 2):
        assert set(read(out / f"{n}best_recog" / "exit").values()) == {"2"}
        assert sorted(read(out / f"{n}best_recog" / "text")) == ["utt1", "utt2", "utt3"]
    assert set(read(out / "1best_recog" / "confidence").values()) == {""}


def test_cli_all_exits(model_files, data_dir, tmp_path):
    out = tmp_path / "all"
    run_cli(
        model_files, data_dir, out, "--beam_size", "1", "--ctc_weight", "1.0",
        "--all_exits", "true", "--exit_policy", "entropy",
    )
    dec = s2t(model_files, exit_layer=3, **GREEDY)
    w, _ = soundfile.read(data_dir / "utt1.wav", dtype="float32")
    for k in (1, 2, 3, 4):
        best = out / f"exit{k}" / "1best_recog"
        assert set(read(best / "exit").values()) == {str(k)}
        assert sorted(read(best / "text")) == ["utt1", "utt2", "utt3"]
        conf = read(best / "confidence")["utt1"].split()
        assert [int(c.split(":")[0]) for c in conf] == list(range(1, k + 1))
        timing = json.loads((out / f"exit{k}" / "timing.json").read_text())
        assert timing["wall_seconds"] > 0
    assert read(out / "exit3" / "1best_recog" / "token_int")["utt1"] == " ".join(
        map(str, dec(w)[0].token_int)
    )
    assert (out / "timing.json").is_file()


def test_cli_oracle(model_files, data_dir, tmp_path):
    out = tmp_path / "oracle"
    run_cli(
        model_files, data_dir, out, "--beam_size", "1", "--ctc_weight", "1.0",
        "--exit_policy", "oracle", "--ref_text", str(data_dir / "text"),
    )
    exits = read(out / "1best_recog" / "exit")
    assert sorted(exits) == ["utt1", "utt2", "utt3"]
    assert all(v in {"1", "2", "3", "4"} for v in exits.values())
    with pytest.raises(ValueError, match="needs --ref_text"):
        run_cli(model_files, data_dir, tmp_path / "x", "--exit_policy", "oracle")
    with pytest.raises(ValueError, match="needs --exit_threshold"):
        run_cli(model_files, data_dir, tmp_path / "y", "--exit_policy", "entropy")


def test_cli_refuses_a_wrong_sample_rate(model_files, data_dir, tmp_path):
    """An 8 kHz file with a 16 kHz model: an error naming the file before anything is
    decoded (the CLI does not resample); a key file that leaves it out decodes."""
    d = tmp_path / "mixed"
    d.mkdir()
    bad = d / "utt2_8k.wav"
    soundfile.write(bad, wave(1.0, 12)[::2], FS // 2)
    (d / "wav.scp").write_text(f"utt1 {data_dir / 'utt1.wav'}\nutt2 {bad}\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"utt2_8k\.wav \(utterance utt2 .*8000 Hz.*16000 Hz"):
        run_cli(model_files, d, out, *("--beam_size", "1", "--ctc_weight", "1.0"))
    assert not (out / "1best_recog").exists()
    (d / "keys").write_text("utt1\n")
    run_cli(model_files, d, out, "--beam_size", "1", "--ctc_weight", "1.0",
            "--key_file", str(d / "keys"))
    assert sorted(read(out / "1best_recog" / "token")) == ["utt1"]



def test_cli_never_replaces_a_folder_it_did_not_write(model_files, data_dir, tmp_path):
    """The output dir is replaced as a whole when a decode finishes: a non-empty folder
    without our .done marker is refused (nothing of the user's is deleted); our own earlier
    output is replaced by a rerun."""
    greedy = ("--beam_size", "1", "--ctc_weight", "1.0")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"mine exists, is not empty and was not written"):
        run_cli(model_files, data_dir, user, *greedy)
    assert (user / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    run_cli(model_files, data_dir, out, *greedy)
    assert (out / ".done").is_file()
    run_cli(model_files, data_dir, out, *greedy)  # a rerun replaces our own output
    assert (out / "1best_recog" / "text").is_file()

def test_tradeoff_from_all_exits_equals_policy_decode(peaky_files, data_dir, tmp_path, capsys):
    from espnet_early_exit.bin.tradeoff import main as tradeoff

    greedy = ("--beam_size", "1", "--ctc_weight", "1.0")
    run_cli(peaky_files, data_dir, tmp_path / "all", *greedy, "--all_exits", "true",
            "--exit_policy", "max_posterior")
    th = _pick_split_threshold(peaky_files)  # utterances leave at different exits
    for t in (th, 0.9):
        run_cli(peaky_files, data_dir, tmp_path / f"real{t}", *greedy,
                "--exit_policy", "max_posterior", "--exit_threshold", str(t))
    capsys.readouterr()
    tradeoff(["--all_exits_dir", str(tmp_path / "all"), "--thresholds", f"{th!r}", "0.9",
              "--ref_text", str(data_dir / "text"), "--write_dir", str(tmp_path / "sim")])
    table = capsys.readouterr().out
    assert "max_posterior_th0.9 " in table and "exit4" in table
    for t in (th, 0.9):
        sim = tmp_path / "sim" / f"max_posterior_th{t:g}" / "1best_recog"
        real = tmp_path / f"real{t}" / "1best_recog"
        for name in ("text", "token_int", "exit"):
            assert read(sim / name) == read(real / name), (t, name)
        for u, conf in read(real / "confidence").items():
            sim_conf = read(sim / "confidence")[u].split()
            assert [c.split(":")[0] for c in sim_conf] == [c.split(":")[0] for c in conf.split()]


def test_cli_parser_has_espnet_options_and_help():
    from espnet2.bin.asr_inference import get_parser as espnet_parser

    from espnet_early_exit.bin.asr_inference import get_parser

    parser = get_parser()
    ours = {a.dest for a in parser._actions}
    assert {a.dest for a in espnet_parser()._actions} <= ours
    assert {"exit_layer", "exit_policy", "exit_threshold", "exit_policy_nbest", "ref_text",
            "all_exits"} <= ours
    assert "--all_exits" in parser.format_help()  # ESPnet's own --help trips on a bare "%"


def test_package_exports_the_decoder():
    import espnet_early_exit

    assert espnet_early_exit.EarlyExitSpeech2Text is EarlyExitSpeech2Text


def test_frame_stride_policy(peaky_files):
    dec = s2t(peaky_files, exit_policy="max_posterior", exit_threshold=0.9,
              exit_policy_frame_stride=3, **GREEDY)
    model = dec.asr_model
    seen = {}
    handles = [
        model.ctc_at(k).ctc_lo.register_forward_hook(
            lambda m, inp, out, k=k: seen.setdefault(k, []).append(inp[0].size(1))
        )
        for k in (1, 2, 3, 4)
    ]
    best = dec(wave())[0]
    for h in handles:
        h.remove()
    with torch.no_grad():
        speech = torch.from_numpy(wave())[None]
        state = model.encode_begin(speech, torch.tensor([speech.size(1)]))
        _, out1, _ = model.encode_to(state, 1)
    n = out1.size(1)
    # exit 1 (rejected): head on every 3rd frame; exit 2 (accepted): 3rd frames, then all
    assert seen == {1: [(n + 2) // 3], 2: [(n + 2) // 3, n]}
    assert best.exit_layer == 2
    expected = dec.policy.confidence(model.ctc_at(1).log_softmax(out1)[0, ::3])
    assert best.confidences[1] == pytest.approx(expected)
    # the decode at the accepted exit is the full-frame one
    assert best.token_int == s2t(peaky_files, exit_layer=2, **GREEDY)(wave())[0].token_int
    for b, s in zip(dec.decode_batch(WAVES), [dec(w) for w in WAVES]):
        same(b, s)
    with pytest.raises(ValueError, match="not a frame mean"):
        s2t(peaky_files, exit_policy="nbest_posterior", exit_threshold=0.5,
            exit_policy_frame_stride=2)


def _agreement_exit(hyps, patience):
    """The rule of the agreement policy on per-exit greedy hypotheses (in exit order)."""
    streak = 0
    for i, k in enumerate(sorted(hyps)):
        streak = streak + 1 if i and hyps[k] == hyps[sorted(hyps)[i - 1]] else 0
        if streak >= patience:
            return k
    return max(hyps)


def test_agreement_policy_real_stopping_and_tradeoff(model_files, data_dir, tmp_path, capsys):
    from espnet_early_exit.bin.tradeoff import main as tradeoff

    greedy = ("--beam_size", "1", "--ctc_weight", "1.0")
    run_cli(model_files, data_dir, tmp_path / "all", *greedy, "--all_exits", "true",
            "--exit_policy", "agreement")
    per_exit = {k: read(tmp_path / "all" / f"exit{k}" / "1best_recog" / "token_int")
                for k in (1, 2, 3, 4)}
    tradeoff(["--all_exits_dir", str(tmp_path / "all"), "--thresholds", "1", "2",
              "--write_dir", str(tmp_path / "sim")])
    capsys.readouterr()
    for patience in (1, 2):
        real = tmp_path / f"real{patience}"
        run_cli(model_files, data_dir, real, *greedy, "--batch_size", "2",
                "--exit_policy", "agreement", "--exit_threshold", str(patience))
        exits = read(real / "1best_recog" / "exit")
        for u in ("utt1", "utt2", "utt3"):
            want = _agreement_exit({k: per_exit[k][u] for k in per_exit}, patience)
            assert int(exits[u]) == want, (patience, u)
        sim = tmp_path / "sim" / f"agreement_th{patience}" / "1best_recog"
        for name in ("text", "token_int", "exit", "confidence"):
            assert read(sim / name) == read(real / "1best_recog" / name), (patience, name)
    dec = s2t(model_files, exit_policy="agreement", exit_threshold=1,
              exit_policy_conf={"max_edits": 100}, **GREEDY)
    assert dec(wave())[0].exit_layer == 2  # any two hypotheses are within 100 edits


def test_policies_derived_from_one_pass_of_another_policy(peaky_files, data_dir, tmp_path):
    """A pass recorded with no policy: entropy / max_posterior / agreement at any threshold
    follow from its features, as decoding them does; flat (stage 12) layout, derived timing."""
    import shutil

    from espnet_early_exit.bin.tradeoff import main as tradeoff
    from espnet_early_exit.derive import load_all_exits

    greedy = ("--beam_size", "1", "--ctc_weight", "1.0")
    run_cli(peaky_files, data_dir, tmp_path / "all", *greedy, "--all_exits", "true")
    flat = tmp_path / "flat"  # stage 12's merged layout: exit<k>/<file>
    for k in (1, 2, 3, 4):
        shutil.copytree(tmp_path / "all" / f"exit{k}" / "1best_recog", flat / f"exit{k}")
        shutil.copy(tmp_path / "all" / f"exit{k}" / "timing.json", flat / f"exit{k}")
    assert load_all_exits(flat).flat and load_all_exits(flat).has_features()
    th = _pick_split_threshold(peaky_files)
    for policy, t in (("max_posterior", th), ("entropy", 0.5), ("agreement", 1.0)):
        tradeoff(["--all_exits_dir", str(flat), "--policy", policy, "--thresholds", repr(t),
                  "--write_dir", str(tmp_path / "sim"), "--dir_names", "x", "--quiet"])
        real = tmp_path / f"real_{policy}"
        run_cli(peaky_files, data_dir, real, *greedy, "--exit_policy", policy,
                "--exit_threshold", repr(t))
        for name in ("text", "token_int", "exit", "confidence"):
            assert read(tmp_path / "sim" / "x" / name) == read(real / "1best_recog" / name)
        timing = json.loads((tmp_path / "sim" / "x" / "timing.json").read_text())
        assert timing["wall_seconds"] > 0 and "derived" in timing["timing_method"]
        assert timing["audio_seconds"] == pytest.approx(3.3) and (tmp_path / "sim" / "x" / ".done").is_file()
    with pytest.raises(ValueError, match="not derivable"):
        tradeoff(["--all_exits_dir", str(flat), "--policy", "nbest_posterior",
                  "--thresholds", "0.5"])


def test_learned_policy_fit_decode_and_derive(peaky_files, data_dir, tmp_path):
    from espnet_early_exit.bin import fit_exit_policy
    from espnet_early_exit.bin.tradeoff import main as tradeoff

    greedy = ("--beam_size", "1", "--ctc_weight", "1.0")
    run_cli(peaky_files, data_dir, tmp_path / "all", *greedy, "--all_exits", "true")
    fit = tmp_path / "exit_policy.json"
    assert fit_exit_policy.main(["--all_exits_dir", str(tmp_path / "all"), "--out", str(fit),
                                 "--log_level", "WARNING"]) == 0
    conf = f"{{model: {fit}}}"
    for t in (0.3, 0.9):
        real = tmp_path / f"real{t}"
        run_cli(peaky_files, data_dir, real, *greedy, "--exit_policy", "learned",
                "--exit_threshold", str(t), "--exit_policy_conf", conf)
        tradeoff(["--all_exits_dir", str(tmp_path / "all"), "--policy", "learned",
                  "--policy_conf", conf, "--thresholds", str(t), "--quiet",
                  "--write_dir", str(tmp_path / "sim"), "--dir_names", f"l{t}"])
        for name in ("text", "exit"):
            assert read(tmp_path / "sim" / f"l{t}" / "1best_recog" / name) == read(
                real / "1best_recog" / name)
    with pytest.raises(FileNotFoundError):
        s2t(peaky_files, exit_policy="learned", exit_threshold=0.5, **GREEDY)  # none beside it
