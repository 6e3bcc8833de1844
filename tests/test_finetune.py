"""From a trained single-exit ESPnet model to an early-exit one (finetune.py, bin/add_exits.py).

The source is a real stock ESPnet Conformer trained for one epoch by `python -m
espnet2.bin.asr_train` on a few synthetic 16 kHz utterances made here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]
TEXTS = {"utt1": "AB BA", "utt2": "ABC", "utt3": "CAB A", "utt4": "BC"}
STOCK_CONF = """
encoder: conformer
encoder_conf:
    output_size: 32
    attention_heads: 2
    linear_units: 64
    num_blocks: 3
    input_layer: conv2d
    normalize_before: true
    macaron_style: true
    pos_enc_layer_type: rel_pos
    selfattention_layer_type: rel_selfattn
    rel_pos_type: latest
    activation_type: swish
    use_cnn_module: true
    cnn_module_kernel: 7
decoder: transformer
decoder_conf:
    attention_heads: 2
    linear_units: 64
    num_blocks: 1
model_conf:
    ctc_weight: 0.3
    lsm_weight: 0.1
frontend_conf:
    n_fft: 512
    hop_length: 160
    n_mels: 20
batch_type: folded
batch_size: 2
max_epoch: 1
num_workers: 0
num_att_plot: 0
best_model_criterion:
-   - valid
    - acc
    - max
keep_nbest_models: 1
optim: adam
optim_conf:
    lr: 0.001
"""


def data_opts() -> list:
    return [
        "--use_preprocessor", "true", "--token_type", "char", "--token_list", "data/tokens.txt",
        "--num_workers", "0",
        "--train_data_path_and_name_and_type", "data/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", "data/train/text,text,text",
        "--valid_data_path_and_name_and_type", "data/valid/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", "data/valid/text,text,text",
    ]


def shape_opts() -> list:
    return [
        "--fold_length", "80000", "--fold_length", "150",
        "--train_shape_file", "exp/stats/train/speech_shape",
        "--train_shape_file", "exp/stats/train/text_shape",
        "--valid_shape_file", "exp/stats/valid/speech_shape",
        "--valid_shape_file", "exp/stats/valid/text_shape",
    ]


def run(cmd, cwd: Path, log: Path):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, log.read_text()[-3000:]


def make_data(root: Path) -> None:
    """data/{train,valid}/{wav.scp,text} of synthetic 16 kHz utterances + data/tokens.txt."""
    import soundfile

    rng = np.random.default_rng(0)
    for split, utts in (("train", ["utt1", "utt2", "utt3"]), ("valid", ["utt4"])):
        d = root / "data" / split
        d.mkdir(parents=True)
        scp, text = [], []
        for i, utt in enumerate(utts):
            n = 16000 + 4000 * i
            t = np.arange(n) / 16000
            wav = 0.1 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(n)
            path = root / "wav" / f"{utt}.wav"
            path.parent.mkdir(exist_ok=True)
            soundfile.write(path, wav.astype(np.float32), 16000)
            scp.append(f"{utt} {path}")
            text.append(f"{utt} {TEXTS[utt]}")
        (d / "wav.scp").write_text("\n".join(scp) + "\n")
        (d / "text").write_text("\n".join(text) + "\n")
    (root / "data" / "tokens.txt").write_text("\n".join(TOKENS) + "\n")


@pytest.fixture(scope="module")
def stock_exp(tmp_path_factory) -> Path:
    """A recipe dir whose exp/asr holds a stock ESPnet conformer trained for one epoch."""
    root = tmp_path_factory.mktemp("stock")
    make_data(root)
    (root / "conf.yaml").write_text(STOCK_CONF)
    train = [sys.executable, "-m", "espnet2.bin.asr_train", "--config", "conf.yaml", "--ngpu", "0"]
    run(train + data_opts() + ["--collect_stats", "true", "--output_dir", "exp/stats",
                               "--train_shape_file", "data/train/wav.scp",
                               "--valid_shape_file", "data/valid/wav.scp"],
        root, root / "stats.log")
    run(train + data_opts() + shape_opts() + [
        "--normalize", "global_mvn", "--normalize_conf",
        "stats_file=exp/stats/train/feats_stats.npz", "--output_dir", "exp/asr"],
        root, root / "train.log")
    assert (root / "exp" / "asr" / "valid.acc.ave.pth").exists()
    return root


def speech_batch(root: Path):
    import soundfile

    wavs = [soundfile.read(root / "wav" / f"{u}.wav", dtype="float32")[0] for u in ("utt3", "utt1")]
    lens = torch.tensor([len(w) for w in wavs])
    x = torch.zeros(2, int(lens.max()))
    for b, w in enumerate(wavs):
        x[b, : len(w)] = torch.from_numpy(w)
    return x, lens


def load_models(root: Path, out: Path):
    """(source model, early-exit model with init.pth), both in eval mode."""
    from espnet2.tasks.asr import ASRTask

    from espnet_early_exit.task import EarlyExitASRTask

    src, _ = ASRTask.build_model_from_file(
        root / "exp" / "asr" / "config.yaml", root / "exp" / "asr" / "valid.acc.ave.pth", "cpu"
    )
    ee, _ = EarlyExitASRTask.build_model_from_file(out / "config.yaml", None, "cpu")
    missing, unexpected = ee.load_state_dict(torch.load(out / "init.pth"), strict=False)
    assert unexpected == []
    return src.eval(), ee.eval(), missing


def decoder_out(decoder, enc, lens, model):
    from espnet2.legacy.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos

    ys = torch.tensor([[3, 4, 2, 5], [4, 3, -1, -1]])
    ys_in, _ = add_sos_eos(ys, model.sos, model.eos, model.ignore_id)
    return decoder(enc, lens, ys_in, torch.tensor([5, 3]))[0]


# ------------------------------------------------------------------ exp dir, copies
def test_exp_dir_to_early_exit_model_reproduces_the_source(stock_exp, tmp_path, monkeypatch):
    from espnet_early_exit.finetune import add_exits

    monkeypatch.chdir(stock_exp)  # relative paths of the source config, as in a recipe
    out = tmp_path / "ee_init"
    report = add_exits(stock_exp / "exp" / "asr", [1, 2, 3], out)
    assert Path(report["source_model"]).name == "valid.acc.ave.pth"
    assert report["verified_max_abs_diff"] < 1e-5 and report["fresh"] == []

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["encoder"] == "ee_conformer" and config["model"] == "ee_espnet"
    assert config["encoder_conf"]["exit_layers"] == [1, 2, 3]
    assert config["encoder_conf"]["num_blocks"] == 3
    assert config["model_conf"]["exit_decoders"] == "per_exit"
    assert config["model_conf"]["ctc_weight"] == 0.3
    assert config["normalize_conf"]["stats_file"] == str(out / "feats_stats.npz")
    for key in ("output_dir", "train_shape_file", "fold_length", "init_param"):
        assert key not in config

    src, ee, missing = load_models(stock_exp, out)
    assert missing == []
    x, lens = speech_batch(stock_exp)
    with torch.no_grad():
        enc, enc_lens = src.encode(x, lens)
        exits, olens = ee.encode_exits(x, lens)
        k, last = exits[-1]
        assert k == 3 and torch.equal(enc_lens, olens)
        torch.testing.assert_close(last, enc, rtol=0, atol=1e-5)
        torch.testing.assert_close(ee.ctc_at(3).log_softmax(last), src.ctc.log_softmax(enc),
                                   rtol=0, atol=1e-5)
        want = decoder_out(src.decoder, enc, enc_lens, src)
        for k in (1, 2, 3):  # the last exit's decoder and the per-exit copies
            torch.testing.assert_close(decoder_out(ee.decoder_at(k), last, olens, ee), want,
                                       rtol=0, atol=1e-5)
    # earlier exits start as copies of the source's head and output norm
    for k in ("1", "2"):
        assert torch.equal(ee.exit_ctc_heads[k].ctc_lo.weight, src.ctc.ctc_lo.weight)
        assert torch.equal(ee.encoder.exit_norms[k].weight, src.encoder.after_norm.weight)
    assert ee.ctc_at(1) is not ee.ctc  # ... but are their own modules


def test_single_exit_early_exit_model_as_source(stock_exp, tmp_path, monkeypatch):
    """The no-EE baseline trained through our own code (ee_espnet, exit_layers [N]) is a
    source too; a model that already has several exits is refused."""
    import shutil

    from espnet_early_exit.finetune import add_exits, convert_config

    monkeypatch.chdir(stock_exp)
    src = stock_exp / "exp" / "asr"
    single = tmp_path / "asr_single"
    single.mkdir()
    config = convert_config(yaml.safe_load((src / "config.yaml").read_text()), [3],
                            exit_decoders="last")
    (single / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copyfile(src / "valid.acc.ave.pth", single / "valid.acc.ave.pth")
    report = add_exits(single, [1, 2, 3], tmp_path / "ee_init")
    assert report["verified_max_abs_diff"] < 1e-5 and report["fresh"] == []
    assert any(k.startswith("exit_ctc_heads.1.") for k in report["copied"])
    new = yaml.safe_load((tmp_path / "ee_init" / "config.yaml").read_text())
    assert new["encoder"] == "ee_conformer" and new["encoder_conf"]["exit_layers"] == [1, 2, 3]

    multi = convert_config(yaml.safe_load((src / "config.yaml").read_text()), [2, 3])
    with pytest.raises(ValueError, match=r"exit_layers: \[2, 3\].*single-exit"):
        convert_config(multi, [1, 2, 3])


def test_fresh_and_shared_heads(stock_exp, tmp_path, monkeypatch):
    from espnet_early_exit.finetune import add_exits

    monkeypatch.chdir(stock_exp)
    out = tmp_path / "fresh"
    report = add_exits(stock_exp / "exp" / "asr", [2, 3], out, init_exit_heads="fresh",
                       exit_decoders="last")
    init = torch.load(out / "init.pth")
    assert "exit_ctc_heads.2.ctc_lo.weight" in report["fresh"]
    assert "exit_ctc_heads.2.ctc_lo.weight" not in init
    assert "encoder.exit_norms.2.weight" in report["fresh"]
    src, ee, missing = load_models(stock_exp, out)
    assert set(missing) == set(report["fresh"])
    assert not torch.equal(ee.exit_ctc_heads["2"].ctc_lo.weight, src.ctc.ctc_lo.weight)
    assert ee.decoder_at(2) is None and ee.decoder_at(3) is ee.decoder
    assert torch.equal(ee.ctc.ctc_lo.weight, src.ctc.ctc_lo.weight)

    out = tmp_path / "shared"
    add_exits(stock_exp / "exp" / "asr", [1, 3], out, share_exit_heads=True,
              exit_decoders="shared", exit_norm="shared")
    src, ee, missing = load_models(stock_exp, out)
    assert missing == [] and len(ee.exit_ctc_heads) == 0 and len(ee.exit_att_decoders) == 0
    assert ee.ctc_at(1) is ee.ctc and ee.decoder_at(1) is ee.decoder
    x, lens = speech_batch(stock_exp)
    with torch.no_grad():  # shared norm: exit 1 = the source's block-1 output + after_norm
        exits, _ = ee.encode_exits(x, lens, up_to=1)
        state = src.encoder  # the stock encoder run to block 1 by hand
        feats, flens = src._extract_feats(x, lens)
        feats, flens = src.normalize(feats, flens)
        from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask

        masks = ~make_pad_mask(flens)[:, None, :]
        h, masks = state.embed(feats, masks)
        h, masks = state.encoders[0](h, masks)
        torch.testing.assert_close(exits[0][1], state.after_norm(h[0]), rtol=0, atol=1e-5)


# ------------------------------------------------------------------ packed zip
@pytest.mark.parametrize("unpacker", ["model_zoo", "espnet_pack_funcs"])
def test_packed_zip_source(stock_exp, tmp_path, monkeypatch, unpacker):
    from espnet_early_exit.finetune import add_exits

    zip_path = stock_exp / "exp" / "packed.zip"
    if not zip_path.exists():
        run([sys.executable, "-m", "espnet2.bin.pack", "asr",
             "--asr_train_config", "exp/asr/config.yaml",
             "--asr_model_file", "exp/asr/valid.acc.ave.pth",
             "--option", "exp/stats/train/feats_stats.npz", "--outpath", "exp/packed.zip"],
            stock_exp, stock_exp / "pack.log")
    if unpacker == "espnet_pack_funcs":  # espnet_model_zoo not installed
        monkeypatch.setitem(sys.modules, "espnet_model_zoo.downloader", None)
    monkeypatch.chdir(tmp_path)  # nothing resolves relative to the recipe dir here
    out = tmp_path / "ee_zip"
    report = add_exits(zip_path, [2, 3], out)
    assert report["verified_max_abs_diff"] < 1e-5
    assert Path(report["source_model"]).is_relative_to(out / "src_unpacked")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["normalize_conf"]["stats_file"] == str(out / "feats_stats.npz")


def test_zip_source_needs_an_unpack_dir(tmp_path):
    """resolve_source never unpacks into a temporary dir that nobody removes."""
    from espnet_early_exit.finetune import resolve_source

    zip_path = tmp_path / "packed.zip"
    zip_path.write_bytes(b"")
    with pytest.raises(ValueError, match="unpack_dir"):
        resolve_source(zip_path)


# ------------------------------------------------------------------ interCTC as early exit
def test_interctc_config_to_ee():
    from espnet_early_exit.finetune import interctc_config_to_ee

    stock = yaml.safe_load(STOCK_CONF)
    stock["encoder_conf"]["interctc_layer_idx"] = [2, 1]
    stock["model_conf"]["interctc_weight"] = 0.5
    stock["output_dir"] = "exp/asr_interctc"
    ee = interctc_config_to_ee(stock)
    assert ee["encoder"] == "ee_conformer" and ee["model"] == "ee_espnet"
    assert ee["encoder_conf"]["exit_layers"] == [1, 2, 3]
    assert ee["encoder_conf"]["exit_norm"] == "shared"
    assert "interctc_layer_idx" not in ee["encoder_conf"]
    assert ee["model_conf"]["share_exit_heads"] is True
    assert ee["model_conf"]["exit_decoders"] == "last"
    assert "interctc_weight" not in ee["model_conf"] and "output_dir" not in ee
    assert stock["encoder_conf"]["interctc_layer_idx"] == [2, 1]  # the input is left alone
    with pytest.raises(ValueError, match="stock 'conformer'"):
        interctc_config_to_ee({**stock, "encoder": "transformer"})
    stock["encoder_conf"]["interctc_use_conditioning"] = True
    with pytest.raises(ValueError, match="self-conditioning"):
        interctc_config_to_ee(stock)


def test_interctc_exp_decodes_as_early_exit(stock_exp, tmp_path, monkeypatch):
    """A stock conformer with interCTC (no extra weights: after_norm + the one ctc head) becomes
    an ee_conformer whose exits give the stock model's intermediate greedy CTC outputs."""
    import shutil

    from espnet_early_exit.finetune import interctc_to_ee

    monkeypatch.chdir(stock_exp)  # the config's relative paths, as in a recipe
    src = tmp_path / "asr_interctc"
    src.mkdir()
    config = yaml.safe_load((stock_exp / "exp" / "asr" / "config.yaml").read_text())
    config["encoder_conf"]["interctc_layer_idx"] = [1, 2]
    config["model_conf"]["interctc_weight"] = 0.5
    (src / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copyfile(stock_exp / "exp" / "asr" / "valid.acc.ave.pth", src / "valid.acc.ave.pth")
    out = tmp_path / "asr_interctc_as_ee"
    report = interctc_to_ee(src, out, "valid.acc.ave.pth",
                            verify_wav_scp=stock_exp / "data" / "valid" / "wav.scp")
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    assert report["identical"], report
    assert sorted(report["ee_greedy"]) == [1, 2, 3]
    assert report["last_layer_max_abs_diff"] < 1e-4
    assert (out / "valid.acc.ave.pth").is_file()


# ------------------------------------------------------------------ choices and errors
def test_model_file_order(tmp_path):
    from espnet_early_exit.finetune import pick_model_file

    names = ["latest.pth", "valid.loss.best.pth", "valid.acc.best.pth", "valid.loss.ave.pth",
             "valid.acc.ave.pth"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    for name in reversed(names):
        assert pick_model_file(tmp_path).name == name
        (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match="valid.acc.ave.pth"):
        pick_model_file(tmp_path)


def test_bad_requests_are_clear_errors(stock_exp, tmp_path, monkeypatch):
    from espnet_early_exit.finetune import add_exits, convert_config

    monkeypatch.chdir(stock_exp)
    src = stock_exp / "exp" / "asr"
    with pytest.raises(ValueError, match=r"outside 1\.\.3"):
        add_exits(src, [2, 4], tmp_path / "a")
    with pytest.raises(ValueError, match="must include the last block 3"):
        add_exits(src, [1, 2], tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no_such_exp"):
        add_exits(stock_exp / "no_such_exp", [3], tmp_path / "c")
    config = yaml.safe_load((src / "config.yaml").read_text())
    with pytest.raises(ValueError, match="encoder: 'rnn' has no early-exit version"):
        convert_config({**config, "encoder": "rnn"}, [3])
    with pytest.raises(ValueError, match="every exit needs a CTC head"):
        convert_config({**config, "model_conf": {"ctc_weight": 0.0}}, [3])
    with pytest.raises(ValueError, match="only the stock `espnet` model or a single-exit"):
        convert_config({**config, "model": "maskctc"}, [3])


# ------------------------------------------------------------------ the documented commands
@pytest.mark.slow
def test_cli_then_training_with_init_param(stock_exp, tmp_path):
    out = tmp_path / "asr_ee_init"
    run([sys.executable, "-m", "espnet_early_exit.bin.add_exits", "--src", "exp/asr",
         "--exit_layers", "1", "2", "3", "--out_dir", str(out), "--share_exit_heads", "false",
         "--exit_decoders", "per_exit", "--init_exit_heads", "copy"],
        stock_exp, tmp_path / "add_exits.log")
    assert (out / "init.pth").exists() and (out / "add_exits.json").exists()
    log = tmp_path / "train.log"
    run([sys.executable, "-m", "espnet_early_exit.bin.asr_train", "--config",
         str(out / "config.yaml"), "--init_param", str(out / "init.pth"), "--ngpu", "0"]
        + data_opts() + shape_opts() + ["--output_dir", str(tmp_path / "exp_ee")],
        stock_exp, log)
    text = log.read_text()
    assert "Loading pretrained params from" in text and "loss_ctc_exit1" in text
    assert (tmp_path / "exp_ee" / "valid.acc.ave.pth").exists()
