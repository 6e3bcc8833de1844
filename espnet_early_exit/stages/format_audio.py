"""Stage 3 ("format"): cut and convert a Kaldi data dir's audio into 16-bit files under ``dump/``.

    python -m espnet_early_exit.bin.stage format_audio --data_dir data/test --out_dir dump/raw/test \
        [--fs 16000] [--audio_format flac] [--nj 4] [--resample] [--skip_bad] [--force]

Reads ``wav.scp`` (plain file paths, no pipes) and, when present, ``segments``
(``<utt> <rec> <start> <end>`` in seconds: samples ``[round(start*fs),
round(end*fs))`` are read, and only those, via ``soundfile`` seeking; ``end``
``-1`` means the end of the recording). Writes ``out_dir/data/<utt>.<fmt>`` (16-bit
PCM), ``out_dir/wav.scp`` (absolute paths), ``utt2num_samples``, ``text``,
``utt2spk`` (filtered to the utterances written), ``spk2utt`` (made from them),
``feats_type`` (``raw``) and ``audio_format``; ``stm``/``glm``/
``reco2file_and_channel`` are copied as they are when the data dir has them.

Defined behaviour:

- sample rate != ``--fs``: an error naming the file and its rate, unless
  ``--resample`` (soxr, high quality);
- unreadable, missing or corrupt audio: an error naming the file, unless
  ``--skip_bad`` (then a warning and a count);
- more than one channel: channel 0 is kept, with a warning;
- ``--nj N`` formats N utterances at a time (a thread pool; output identical to ``--nj 1``);
- a segment that is empty (or starts after the end of the recording): skipped with
  a warning; one that ends after it is cut at the end (warning if by more than 0.5 s);
- an utterance without a ``text`` line: skipped with a warning.

Atomic and idempotent: everything is written to ``<out_dir>.tmp`` and renamed to
``out_dir`` at the end; ``out_dir/.done`` records the options and a hash of
the input files, and a rerun with the same inputs does nothing (``--force``
redoes it; different inputs without ``--force`` are an error).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from espnet_early_exit.fileio import atomic_directory, format_table, read_table, spk2utt
from espnet_early_exit.stages.markers import (
    DONE_MARKER,
    pool_map,
    progress,
    read_done_marker,
    write_done_marker,
)

logger = logging.getLogger(__name__)

MAX_OVERSHOOT_S = 0.5
MAX_LOGGED = 10
COPIED_AS_IS = ("stm", "glm", "reco2file_and_channel")


class AudioFormatError(ValueError):
    """The data dir or one of its audio files cannot be formatted as asked (the CLI logs it, exit 1)."""


@dataclass(frozen=True)
class Job:
    """One utterance to write: ``[start, end)`` seconds of ``path`` (``None``: the whole file)."""

    utt_id: str
    path: str
    start: float | None = None
    end: float | None = None


@dataclass
class Outcome:
    utt_id: str
    num_samples: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    error: str | None = None  # unreadable audio / wrong rate
    skipped: str | None = None  # kind of a defined skip (empty segment)


def read_data_table(path: Path) -> dict[str, str]:
    """A table of the data dir (a repeated id is an error naming the file and line)."""
    return read_table(path, error=AudioFormatError)


def read_jobs(data_dir: Path) -> list[Job]:
    """The utterances of ``data_dir`` as :class:`Job`s (sorted by utterance id)."""
    wav_scp = read_data_table(data_dir / "wav.scp")
    for key, value in wav_scp.items():
        if not value.strip() or value.rstrip().endswith("|") or " " in value.strip():
            raise AudioFormatError(
                f"{data_dir / 'wav.scp'}: {key!r} -> {value!r} is not a plain file path (pipes are not supported)"
            )
    jobs = []
    if (data_dir / "segments").is_file():
        for utt_id, value in read_data_table(data_dir / "segments").items():
            fields = value.split()
            if len(fields) != 3:
                raise AudioFormatError(f"{data_dir / 'segments'}: bad line for {utt_id!r}: {value!r}")
            rec, start, end = fields[0], float(fields[1]), float(fields[2])
            if rec not in wav_scp:
                raise AudioFormatError(f"{data_dir / 'segments'}: {utt_id!r} refers to unknown recording {rec!r}")
            jobs.append(Job(utt_id, wav_scp[rec].strip(), start, None if end == -1 else end))
    else:
        jobs = [Job(utt_id, path.strip()) for utt_id, path in wav_scp.items()]
    for job in jobs:
        if "/" in job.utt_id:
            raise AudioFormatError(f"utterance id {job.utt_id!r} cannot be a file name")
    return sorted(jobs, key=lambda j: j.utt_id)


def read_audio(job: Job, outcome: Outcome) -> tuple[np.ndarray, int] | None:
    """Samples of ``job`` as float32 mono, and the file's rate; ``None`` if the segment is empty."""
    with soundfile.SoundFile(job.path) as f:
        rate, frames, channels = f.samplerate, f.frames, f.channels
        first = 0 if job.start is None else int(round(job.start * rate))
        last = frames if job.end is None else int(round(job.end * rate))
        if last > frames:
            overshoot = (last - frames) / rate
            if overshoot > MAX_OVERSHOOT_S:
                outcome.warnings.append(
                    ("segment_past_end", f"{job.utt_id}: ends {overshoot:.2f} s after the end of {job.path}; cut")
                )
            last = frames
        if last <= first:
            outcome.skipped = "empty_segment"
            outcome.warnings.append(
                ("empty_segment", f"{job.utt_id}: no samples in [{job.start}, {job.end}) of {job.path}")
            )
            return None
        f.seek(first)
        audio = f.read(last - first, dtype="float32", always_2d=True)
    if channels > 1:
        outcome.warnings.append(("multi_channel", f"{job.path} has {channels} channels; using channel 0"))
    return audio[:, 0], rate


def format_one(job: Job, out_data_dir: str, fs: int, resample: bool, audio_format: str) -> Outcome:
    """Read, check, (resample,) and write one utterance. Never raises for bad audio: see ``Outcome.error``."""
    outcome = Outcome(job.utt_id)
    try:
        result = read_audio(job, outcome)
    except Exception as e:  # soundfile: LibsndfileError/RuntimeError/OSError for missing or corrupt files
        outcome.error = f"cannot read audio file {job.path} (utterance {job.utt_id}): {e}"
        return outcome
    if result is None:
        return outcome
    audio, rate = result
    if rate != fs:
        if not resample:
            outcome.error = (
                f"audio file {job.path} (utterance {job.utt_id}) has sample rate {rate} Hz, "
                f"expected {fs} Hz; pass --resample to convert it"
            )
            return outcome
        import soxr  # installed with librosa (an espnet dependency)

        audio = soxr.resample(audio, rate, fs, quality="HQ")
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    if pcm.size == 0:
        outcome.skipped = "empty_segment"
        outcome.warnings.append(("empty_segment", f"{job.utt_id}: no samples left after resampling"))
        return outcome
    target = Path(out_data_dir) / f"{job.utt_id}.{audio_format}"
    soundfile.write(str(target), pcm, fs, format=audio_format.upper(), subtype="PCM_16")
    outcome.num_samples = int(pcm.size)
    return outcome


def _format_star(args: tuple) -> Outcome:
    return format_one(*args)


def input_digest(data_dir: Path) -> str:
    """Hash of the input files, so a changed data dir is noticed on rerun."""
    digest = hashlib.sha256()
    for name in ("wav.scp", "segments", "text", "utt2spk"):
        path = data_dir / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


class _Warnings:
    """Counts warnings by kind and logs the first ``MAX_LOGGED`` of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_LOGGED:
            logger.warning("%s", message)


def check_done(out_dir: Path, params: dict[str, Any], force: bool) -> dict[str, int] | None:
    """The counts of a complete earlier run with the same ``params``; ``None`` when it must be done."""
    done = None if force else read_done_marker(out_dir)
    if done is None:
        return None
    if done.get("params") != params:
        raise AudioFormatError(
            f"{out_dir} was made from other inputs or options ({done.get('params')}); rerun with --force"
        )
    logger.info("%s is complete (%s exists); skipping (use --force to redo)", out_dir, DONE_MARKER)
    return dict(done.get("counts", {}))


def run_jobs(jobs: list[Job], out_data_dir: Path, options: dict[str, Any], warn: _Warnings,
             desc: str) -> dict[str, int]:
    """Format every job into ``out_data_dir``; returns ``{utt: number of samples}`` of those written."""
    tasks = [(job, str(out_data_dir), options["fs"], options["resample"], options["audio_format"])
             for job in jobs]
    num_samples: dict[str, int] = {}
    # Threads, not processes: decoding/encoding happens in libsndfile/soxr/numpy, which release
    # the GIL (2 threads ~ 2x here), and no worker has to fork a threaded process or re-import ESPnet.
    with pool_map(_format_star, tasks, options["nj"], threads=True) as outcomes:
        for outcome in progress(outcomes, len(tasks), desc, mininterval=1.0):
            for kind, message in outcome.warnings:
                warn(kind, message)
            if outcome.error is not None:
                if not options["skip_bad"]:
                    raise AudioFormatError(outcome.error)
                warn("bad_audio", outcome.error + "; skipped (--skip_bad)")
            elif outcome.skipped is None:
                num_samples[outcome.utt_id] = outcome.num_samples
    return num_samples


def write_outputs(tmp: Path, out_dir: Path, data_dir: Path, num_samples: dict[str, int],
                  tables: dict[str, dict[str, str]], audio_format: str) -> None:
    """The Kaldi files of the formatted dir (paths point at ``out_dir``, its final place)."""
    written = sorted(num_samples)
    utt2spk = {u: tables["utt2spk"][u] for u in written}
    files = {
        "wav.scp": format_table((u, str(out_dir / "data" / f"{u}.{audio_format}")) for u in written),
        "utt2num_samples": format_table((u, str(num_samples[u])) for u in written),
        "text": format_table((u, tables["text"][u]) for u in written),
        "utt2spk": format_table(utt2spk),
        "spk2utt": format_table((s, " ".join(us)) for s, us in spk2utt(utt2spk).items()),
        "feats_type": "raw\n",
        "audio_format": f"{audio_format}\n",
    }
    for name, content in files.items():
        (tmp / name).write_text(content, encoding="utf-8")
    for name in COPIED_AS_IS:
        if (data_dir / name).is_file():
            shutil.copyfile(data_dir / name, tmp / name)


def format_data_dir(
    data_dir: Path,
    out_dir: Path,
    fs: int = 16000,
    audio_format: str = "flac",
    nj: int = 1,
    resample: bool = False,
    skip_bad: bool = False,
    force: bool = False,
) -> dict[str, int]:
    """Format ``data_dir`` into ``out_dir``; returns counts (``written`` and each skip kind)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir).resolve()
    if audio_format not in ("flac", "wav"):
        raise AudioFormatError(f"--audio_format must be flac or wav, not {audio_format!r}")
    for name in ("wav.scp", "text", "utt2spk"):
        if not (data_dir / name).is_file():
            raise AudioFormatError(f"{data_dir / name} does not exist (is {data_dir} a Kaldi data dir?)")
    params = {"data_dir": str(data_dir.resolve()), "fs": fs, "audio_format": audio_format,
              "resample": resample, "skip_bad": skip_bad, "inputs_sha256": input_digest(data_dir)}
    done = check_done(out_dir, params, force)
    if done is not None:
        return done

    tables = {name: read_data_table(data_dir / name) for name in ("text", "utt2spk")}
    warn = _Warnings()
    jobs = []
    for job in read_jobs(data_dir):
        if job.utt_id not in tables["text"] or job.utt_id not in tables["utt2spk"]:
            warn("no_text", f"{job.utt_id}: no line in text/utt2spk; skipped")
        else:
            jobs.append(job)

    options = {"fs": fs, "resample": resample, "audio_format": audio_format, "nj": nj, "skip_bad": skip_bad}
    counts = warn.counts
    with atomic_directory(out_dir) as tmp:
        (tmp / "data").mkdir()
        num_samples = run_jobs(jobs, tmp / "data", options, warn, f"format {data_dir.name}")
        if not num_samples:
            raise AudioFormatError(f"no utterance of {data_dir} could be written")
        write_outputs(tmp, out_dir, data_dir, num_samples, tables, audio_format)
        counts["written"] = len(num_samples)
        write_done_marker(tmp, {"params": params, "counts": dict(sorted(counts.items()))})
    skipped = {k: v for k, v in counts.items() if k != "written"}
    if skipped:
        logger.warning("%s: skipped %s", data_dir, ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    logger.info("wrote %s (%d utterances)", out_dir, len(num_samples))
    return dict(sorted(counts.items()))
