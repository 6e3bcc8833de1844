"""The Python helpers of the recipe stages (espnet_early_exit.stages) and their command line
``python -m espnet_early_exit.bin.stage``; stage 3 (format_audio) is in tests/test_format_audio.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import recipe_env

from espnet_early_exit.fileio import read_table
from espnet_early_exit.stages.config import config_get
from espnet_early_exit.stages.data_dirs import filter_dir, speed_perturb
from espnet_early_exit.stages.jobs import merge_decode, split_keys
from espnet_early_exit.stages.tokens import bpe_token_list, text_shape



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
    speed_perturb(data, out, tmp_path / "sp", ["0.9", "1.0", "1.1"], nj=1)
    utt2spk = read_table(out / "utt2spk")
    assert utt2spk == {"spk1-u1": "spk1", "sp0.9-spk1-u1": "sp0.9-spk1", "sp1.1-spk1-u1": "sp1.1-spk1"}
    wav = read_table(out / "wav.scp")
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
    speed_perturb(data, out, tmp_path / "sp", ["1.0", "0.5"], nj=1)
    segments = read_table(out / "segments")
    assert segments == {"talk-a": "talk 0.50 1.50", "sp0.5-talk-a": "sp0.5-talk-a 0.00 -1"}
    assert soundfile.info(read_table(out / "wav.scp")["sp0.5-talk-a"]).frames == 32000


def test_filter_dir_drops_short_long_and_empty(tmp_path: Path) -> None:
    src = write_dir(tmp_path / "org" / "train", {
        "wav.scp": "a /a.flac\nb /b.flac\nc /c.flac\nd /d.flac\n",
        "utt2num_samples": "a 800\nb 16000\nc 400000\nd 16000\n",
        "text": "a X\nb HELLO\nc LONG\nd \n", "utt2spk": "a s\nb s\nc s\nd s\n",
        "spk2utt": "s a b c d\n", "feats_type": "raw\n"})
    out = tmp_path / "train"
    filter_dir(src, out, 16000, 0.1, 20)
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
    bpe_token_list(text, out, 30, "unigram", 1.0, 100000000, "[unk]", "<blank>", "<unk>",
                                "<sos/eos>")
    tokens = (out / "tokens.txt").read_text().splitlines()
    assert tokens[:3] == ["<blank>", "<unk>", "[unk]"]
    assert tokens[-1] == "<sos/eos>"
    assert len(tokens) == 30 and "<s>" not in tokens and "</s>" not in tokens
    assert (out / "bpe.model").is_file()


def test_split_keys_and_merge_decode(tmp_path: Path) -> None:
    keys = tmp_path / "wav.scp"
    keys.write_text("".join(f"u{i} /x/{i}.flac\n" for i in range(5)))
    split_keys(keys, 2, str(tmp_path / "keys.JOB.scp"))
    parts = [(tmp_path / f"keys.{j}.scp").read_text().split("\n")[:-1] for j in (1, 2)]
    assert [len(p) for p in parts] == [3, 2] and sum(parts, []) == keys.read_text().split("\n")[:-1]

    outs = []
    for j, (utts, wall) in enumerate(((["u3", "u1"], 1.0), (["u2"], 0.5)), 1):
        out = write_dir(tmp_path / f"output.{j}" / "1best_recog", {
            "text": "".join(f"{u} HYP {u}\n" for u in utts), "exit": "".join(f"{u} 2\n" for u in utts)})
        (out.parent / "timing.json").write_text(json.dumps(
            {"rtf": wall / 2, "audio_seconds": 2.0, "wall_seconds": wall, "n_utt": len(utts)}))
        outs.append(out.parent)
    merge_decode(outs, tmp_path / "merged")
    merged = tmp_path / "merged"
    assert (merged / "text").read_text() == "u1 HYP u1\nu2 HYP u2\nu3 HYP u3\n"
    assert (merged / "exit").read_text() == "u1 2\nu2 2\nu3 2\n"
    timing = json.loads((merged / "timing.json").read_text())
    assert timing["wall_seconds"] == 1.5 and timing["audio_seconds"] == 4.0 and timing["n_utt"] == 3
    assert timing["rtf"] == pytest.approx(1.5 / 4.0)
    assert (merged / ".done").is_file()


def test_text_shape(tmp_path: Path) -> None:
    (tmp_path / "tokens.txt").write_text("<blank>\n<unk>\nA\n<sos/eos>\n")
    (tmp_path / "text_shape").write_text("u1 5\nu2 3\n\n")
    text_shape(tmp_path / "text_shape", tmp_path / "text_shape.char", tmp_path / "tokens.txt")
    assert (tmp_path / "text_shape.char").read_text() == "u1 5,4\nu2 3,4\n"


CONFIG = """\
encoder_conf:
  exit_layers: [2, 4, 6]
best_model_criterion:
- - valid
  - acc
  - max
frontend: null
"""


def test_config_get(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    assert config_get(config, "encoder_conf.exit_layers", None) == "2 4 6"
    assert config_get(config, "best_model_criterion.0", None) == "valid acc max"
    assert config_get(config, "frontend", None) == ""
    assert config_get(config, "normalize", "global_mvn") == "global_mvn"
    with pytest.raises(KeyError, match="no normalize"):
        config_get(config, "normalize", None)


def run_stage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espnet_early_exit.bin.stage", *args], env=recipe_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def test_cli_lists_its_commands_and_reads_configs(tmp_path: Path) -> None:
    proc = run_stage("--help")
    assert proc.returncode == 0
    for command in ("speed_perturb", "format_audio", "filter_dir", "bpe_token_list", "split_keys",
                    "merge_decode", "text_shape", "config_get"):
        assert command in proc.stdout, command
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    proc = run_stage("config_get", "--config", str(config), "encoder_conf.exit_layers")
    assert (proc.returncode, proc.stdout) == (0, "2 4 6\n")
    proc = run_stage("config_get", "--config", str(config), "--default", "x", "no.such")
    assert (proc.returncode, proc.stdout) == (0, "x\n")
    proc = run_stage("config_get", "--config", str(config), "no.such")
    assert proc.returncode == 1 and f"{config}: no no.such" in proc.stderr


def test_cli_errors_name_the_input(tmp_path: Path) -> None:
    src = write_dir(tmp_path / "org", {"wav.scp": "a /a.flac\n", "utt2num_samples": "a 800\n", "text": "a X\n",
                                       "utt2spk": "a s\n"})
    proc = run_stage("filter_dir", "--in_dir", str(src), "--out_dir", str(tmp_path / "out"), "--fs", "16000",
                     "--min_wav_duration", "0.1", "--max_wav_duration", "20")
    assert proc.returncode == 1 and "no utterance left after the duration filter" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
