"""Faults: killed training and decoding, truncated checkpoints and models, a full disk, a second
training on one experiment dir. Each must lose nothing finished, leave nothing half-written that
a rerun would take for finished, and stop with a message naming the file (docs/reliability.md).

The decoding tests use a random tiny model (tests/test_inference.py's make_model_dir) laid out
as a recipe's working dir after stage 11 (``work`` fixture), and run the stage driver's stages
12-13 on it; the slow training test trains the tiny config on mini_an4.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile

from conftest import REPO, TINY_CONFIG, recipe_env
from test_inference import FS, make_model_dir, run_cli, wave
from test_train_mini_an4 import an4_data  # noqa: F401  (a fixture)

from espnet_early_exit.fileio import CorruptFileError
from espnet_early_exit.stages.jobs import job_done, job_ranges, merge_decode, pending_jobs

DRIVER = REPO / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"
GREEDY = ("--beam_size", "1", "--ctc_weight", "1.0")


def truncated(path: Path, out: Path) -> Path:
    """A copy of ``path`` cut to half its size, as a killed save or a full disk leaves it."""
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


# ------------------------------------------------------------------ truncated files
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("ee_model"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    scp, text = [], []
    for i, seconds in enumerate((1.0, 1.4, 0.9, 1.2)):
        path = d / f"utt{i}.wav"
        soundfile.write(path, wave(seconds, 10 + i), FS)
        scp.append(f"utt{i} {path}")
        text.append(f"utt{i} a b c")
    (d / "wav.scp").write_text("\n".join(scp) + "\n")
    (d / "text").write_text("\n".join(text) + "\n")
    return d


def test_truncated_model_file_is_named_at_load(model_files, tmp_path):
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    bad = truncated(Path(model_files[1]), tmp_path / "valid.loss.ave.pth")
    with pytest.raises(CorruptFileError, match=rf"model file {re.escape(str(bad))} is truncated"):
        EarlyExitSpeech2Text(model_files[0], str(bad))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(empty))} is empty"):
        EarlyExitSpeech2Text(model_files[0], str(empty))


def test_model_file_of_another_config_is_refused(model_files, tmp_path):
    """ESPnet loads with strict=False: a model without the config's per-exit decoders would
    decode with random ones. Refused, naming both files; a size mismatch too."""
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    last = make_model_dir(tmp_path / "last", exit_decoders="last")  # one decoder, not four
    with pytest.raises(ValueError, match=rf"{re.escape(last[1])} is not a model of "
                                         rf"{re.escape(model_files[0])}: \d+ parameters of the "
                                         r"config are not in the file"):
        EarlyExitSpeech2Text(model_files[0], last[1], beam_size=1, ctc_weight=1.0)
    import yaml

    conf = yaml.safe_load(Path(model_files[0]).read_text())
    conf["encoder_conf"]["linear_units"] = 96
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(conf))
    with pytest.raises(ValueError, match=rf"{re.escape(model_files[1])} is not a model of "
                                         rf"{re.escape(str(other))}: .*size mismatch"):
        EarlyExitSpeech2Text(str(other), model_files[1], beam_size=1, ctc_weight=1.0)


def test_truncated_checkpoint_is_named_at_resume(tmp_path):
    """ESPnet's trainer resumes from <output_dir>/checkpoint.pth: a cut one stops with its name."""
    import torch

    from espnet_early_exit.task import EarlyExitASRTask, EarlyExitTrainer

    assert EarlyExitASRTask.trainer is EarlyExitTrainer
    whole = tmp_path / "whole.pth"
    torch.save({"model": {"w": torch.zeros(4096)}}, whole)
    bad = truncated(whole, tmp_path / "checkpoint.pth")
    with pytest.raises(CorruptFileError, match=rf"checkpoint {re.escape(str(bad))} is truncated "
                                               r"or corrupt .*remove it"):
        EarlyExitTrainer.resume(checkpoint=bad, model=None, reporter=None, optimizers=[],
                                schedulers=[], scaler=None)


# ------------------------------------------------------------------ a full disk while decoding
def test_disk_full_while_decoding_leaves_no_finished_output(model_files, data_dir, tmp_path,
                                                            monkeypatch):
    """A write fails (ENOSPC) in the middle of the outputs, then at the last file: no output dir,
    no .tmp, no .done; the job stays pending; a rerun with space writes the whole output."""
    from espnet_early_exit.bin import asr_inference

    out = tmp_path / "output.1"
    keys = tmp_path / "keys.1.scp"
    keys.write_text("".join(f"utt{i}\n" for i in range(4)))
    write_nbest, calls = asr_inference._write_nbest, []

    def full_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_nbest(*args, **kwargs)

    def full_at_the_end(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "timing.json")

    for name, failing in (("_write_nbest", full_after_two), ("_write_timing", full_at_the_end)):
        with monkeypatch.context() as m:
            m.setattr(asr_inference, name, failing)
            with pytest.raises(OSError, match="No space left"):
                run_cli(model_files, data_dir, out, *GREEDY, "--key_file", str(keys))
        assert not out.exists() and not (tmp_path / "output.1.tmp").exists(), name
        assert pending_jobs(str(tmp_path / "output.JOB"), str(tmp_path / "keys.JOB.scp"), 1) == [1]
    run_cli(model_files, data_dir, out, *GREEDY, "--key_file", str(keys))
    assert job_done(out, keys) and len((out / "1best_recog" / "text").read_text().splitlines()) == 4
    assert pending_jobs(str(tmp_path / "output.JOB"), str(tmp_path / "keys.JOB.scp"), 1) == []


@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs of 64 KiB mounted at tmp_path/disk (root only; skipped where mount is refused)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)  # -l: even with a file open


def test_real_full_disk_while_decoding(model_files, data_dir, small_disk):
    """The same on a real full file system: a tmpfs filled up to its last pages."""
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk, then free a few pages
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - 3 * 4096))
    out = small_disk / "output.1"
    with pytest.raises(OSError) as err:
        run_cli(model_files, data_dir, out, *GREEDY)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # nothing else left
    filler.unlink()
    run_cli(model_files, data_dir, out, *GREEDY)
    assert job_done(out, None)


# ------------------------------------------------------------------ merging jobs
def test_unfinished_job_is_pending_and_never_merged(tmp_path):
    for j in (1, 2, 3):
        (tmp_path / f"keys.{j}.scp").write_text(f"u{j}\n")
        recog = tmp_path / f"output.{j}" / "1best_recog"
        recog.mkdir(parents=True)
        (recog / "text").write_text(f"u{j} HYP\n")
    from espnet_early_exit.stages.jobs import write_job_marker

    write_job_marker(tmp_path / "output.1", tmp_path / "keys.1.scp", {"n_utt": 1})
    write_job_marker(tmp_path / "output.3", tmp_path / "keys.3.scp", {"n_utt": 1})
    out_t, key_t = str(tmp_path / "output.JOB"), str(tmp_path / "keys.JOB.scp")
    assert pending_jobs(out_t, key_t, 3) == [2]
    (tmp_path / "keys.3.scp").write_text("u3\nu4\n")  # other keys (another --inference_nj)
    assert pending_jobs(out_t, key_t, 3) == [2, 3]
    assert job_ranges([2, 3, 5, 1, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    parts = [tmp_path / f"output.{j}" for j in (1, 2, 3)]
    with pytest.raises(FileNotFoundError, match=r"not complete.*output\.2"):
        merge_decode(parts, tmp_path / "merged", require_done=True)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merged.tmp").exists()


# ------------------------------------------------------------------ the stage driver
@pytest.fixture()
def work(tmp_path, model_files):
    """A recipe working dir after stage 11: dump/raw/test (6 utterances), exp/asr_tiny."""
    test = tmp_path / "dump" / "raw" / "test"
    test.mkdir(parents=True)
    scp, text = [], []
    for i in range(6):
        path = test / f"utt{i}.wav"
        soundfile.write(path, wave(2.0 + 0.3 * i, 20 + i), FS)
        scp.append(f"utt{i} {path}")
        text.append(f"utt{i} a b c")
    (test / "wav.scp").write_text("\n".join(scp) + "\n")
    (test / "text").write_text("\n".join(text) + "\n")
    (test / ".done").write_text("{}\n")
    exp = tmp_path / "exp" / "asr_tiny"
    exp.mkdir(parents=True)
    shutil.copy(model_files[0], exp / "config.yaml")
    shutil.copy(model_files[1], exp / "model.pth")
    return tmp_path


def driver(work: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = ["bash", str(DRIVER), "--workdir", str(work), "--train_set", "train", "--valid_set",
           "dev", "--test_sets", "test", "--asr_tag", "tiny", "--token_type", "char",
           "--inference_asr_model", "model.pth", "--inference_nj", "2", "--inference_args", "--beam_size 2 --ctc_weight 0.3 --maxlenratio 0.5",
           *args]
    return subprocess.run(cmd, env=recipe_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          start_new_session=True)


KILLER = """#!/usr/bin/env bash
# decode_cmd of the test: job 1 runs to its end; job 2 starts, and once it writes its output
# the whole run (driver, jobs, this script) gets kill -9
set -u
real={run_local}
gpu=("$1" "$2"); shift 2
range=$1; shift
log=$1
out="$(dirname "$log")/output.2.tmp"
if [ "$range" != "JOB=1:2" ]; then exec "$real" "${{gpu[@]}}" "$range" "$@"; fi
"$real" "${{gpu[@]}}" JOB=1:1 "$@" || exit 1
"$real" "${{gpu[@]}}" JOB=2:2 "$@" &
for _ in $(seq 3000); do [ -d "$out" ] && break; sleep 0.02; done
echo killing >"{marker}"
kill -9 0
"""


@pytest.mark.slow
def test_killed_decoding_reruns_only_unfinished_jobs(work, tmp_path):
    """kill -9 of stage 12 while job 2 of 2 writes: nothing merged, nothing scored; the rerun of
    the same command decodes job 2 only, merges, scores every utterance."""
    killer = tmp_path / "kill_mid_job.sh"
    marker = tmp_path / "killed"
    killer.write_text(KILLER.format(run_local=DRIVER.parent / "scripts" / "run_local.sh",
                                    marker=marker))
    killer.chmod(0o755)
    killed = driver(work, "--stage", "12", "--stop_stage", "13", "--decode_cmd", str(killer))
    assert killed.returncode == -signal.SIGKILL and marker.is_file(), killed.stdout[-3000:]
    test = work / "exp" / "asr_tiny" / "decode_inference_beam_size2_ctc_weight0.3_maxlenratio0.5" \
        "_asr_model_model" / "test"
    logdir = test / "logdir" / "exits"  # one pass over all exits (stage 12's default)
    assert (logdir / "output.1" / ".done").is_file() and not (logdir / "output.2").exists()
    assert not list(test.glob("*/.done")) and not list(test.glob("**/score_wer"))
    job1 = [(p, p.stat().st_mtime_ns) for p in (logdir / "output.1" / ".done",
                                               logdir / "asr_inference.1.log")]

    # stage 13 alone scores nothing of it
    scored = driver(work, "--stage", "13", "--stop_stage", "13")
    assert not list(test.glob("**/score_wer")), scored.stdout[-3000:]

    rerun = driver(work, "--stage", "12", "--stop_stage", "13")
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert "Stage 12: decoding test (exits, jobs 2:2 of 2;" in rerun.stdout
    assert [(p, p.stat().st_mtime_ns) for p, _ in job1] == job1  # job 1 was not run again
    for k in (1, 2, 3, 4):
        result = json.loads((test / f"exit{k}" / "score_wer" / "result.json").read_text())
        assert result["n_utt"] == 6, k
    again = driver(work, "--stage", "12", "--stop_stage", "12")
    assert "Stage 12: done already" in again.stdout, again.stdout[-2000:]


def test_second_training_on_one_exp_dir_is_refused_fast(work):
    """Stage 11 while another training holds <exp>/.train.lock: refused, naming the lock."""
    import fcntl

    stats = work / "exp" / "asr_stats_raw_char"
    stats.mkdir(parents=True)
    (stats / ".done").write_text("{}\n")
    with open(work / "exp" / "asr_tiny" / ".train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = driver(work, "--stage", "11", "--stop_stage", "11", "--inference_asr_model", "x.pth")
    assert proc.returncode != 0
    assert "another training is running in" in proc.stdout and ".train.lock" in proc.stdout
    assert not (work / "exp" / "asr_tiny" / "train.log").exists()


# ------------------------------------------------------------------ a killed training
@pytest.fixture(scope="module")
def an4_stats(an4_data):
    """mini_an4 (tests/test_train_mini_an4.py's fixture) and collect_stats output."""
    root = an4_data
    proc = subprocess.run(train_cmd(root, "--collect_stats", "true", "--train_shape_file",
                                    f"{root}/data/train/wav.scp", "--valid_shape_file",
                                    f"{root}/data/dev/wav.scp", "--output_dir", f"{root}/stats"),
                          env=recipe_env(OMP_NUM_THREADS="2"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def train_cmd(root: Path, *args: str) -> list:
    return [sys.executable, "-m", "espnet_early_exit.bin.asr_train", "--use_preprocessor", "true",
            "--token_type", "char", "--token_list", str(root / "tokens.txt"),
            "--non_linguistic_symbols", "none", "--cleaner", "none", "--g2p", "none",
            "--config", str(TINY_CONFIG), "--ngpu", "0", "--num_workers", "0",
            "--train_data_path_and_name_and_type", f"{root}/data/train/wav.scp,speech,sound",
            "--train_data_path_and_name_and_type", f"{root}/data/train/text,text,text",
            "--valid_data_path_and_name_and_type", f"{root}/data/dev/wav.scp,speech,sound",
            "--valid_data_path_and_name_and_type", f"{root}/data/dev/text,text,text", *args]


@pytest.mark.slow
def test_killed_training_resumes_and_finishes(an4_stats, tmp_path):
    """kill -9 in the middle of epoch 2 of 3; the same command again resumes from epoch 1's
    checkpoint, trains epochs 2 and 3 only and leaves a model that loads and decodes; a
    truncated checkpoint.pth then stops the command with one error naming it."""
    root, exp = an4_stats, tmp_path / "exp"
    cmd = train_cmd(root, "--max_epoch", "3", "--resume", "true", "--output_dir", str(exp),
                    "--fold_length", "80000", "--fold_length", "150",
                    "--train_shape_file", f"{root}/stats/train/speech_shape",
                    "--train_shape_file", f"{root}/stats/train/text_shape",
                    "--valid_shape_file", f"{root}/stats/valid/speech_shape",
                    "--valid_shape_file", f"{root}/stats/valid/text_shape")
    env = recipe_env(OMP_NUM_THREADS="2")
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not re.search(r"2epoch:train:\d+-\d+batch", log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (exp / "1epoch.pth").is_file() and not (exp / "2epoch.pth").exists()

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"The training was resumed using {exp}/checkpoint.pth" in second.stderr
    done = re.findall(r"(\d+)epoch results", second.stderr)
    assert done == ["2", "3"], second.stderr[-3000:]
    assert (exp / "3epoch.pth").is_file() and (exp / "valid.loss.ave.pth").is_file()
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    dec = EarlyExitSpeech2Text(str(exp / "config.yaml"), str(exp / "valid.loss.ave.pth"),
                               beam_size=1, ctc_weight=1.0)
    assert dec(wave(1.0))[0].exit_layer == 4

    truncated(exp / "checkpoint.pth", exp / "checkpoint.cut")
    (exp / "checkpoint.cut").replace(exp / "checkpoint.pth")
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode != 0
    assert f"checkpoint {exp}/checkpoint.pth is truncated or corrupt" in third.stderr
