"""Stage 3 ("format"): cut and convert a Kaldi data dir's audio into 16-bit files under ``dump/``.

    python -m espnet_early_exit.bin.format_audio --data_dir data/test --out_dir dump/raw/test \
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

import argparse
import hashlib
import json
import logging
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile
from tqdm import tqdm

from espnet_early_exit.bin._cli import setup_logging
from espnet_early_exit.fileio import atomic_directory

logger = logging.getLogger("espnet_early_exit.bin.format_audio")

DONE_MARKER = ".done"
MAX_OVERSHOOT_S = 0.5
MAX_LOGGED = 10
COPIED_AS_IS = ("stm", "glm", "reco2file_and_channel")


class AudioFormatError(RuntimeError):
    """The data dir or one of its audio files cannot be formatted as asked."""


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


def read_table(path: Path) -> dict[str, str]:
    """``<id> <value>`` lines -> dict (in file order)."""
    table: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            key, _, value = line.rstrip("\n").partition(" ")
            if not key:
                continue
            if key in table:
                raise AudioFormatError(f"{path}:{lineno}: duplicate id {key!r}")
            table[key] = value
    return table


def read_jobs(data_dir: Path) -> list[Job]:
    """The utterances of ``data_dir`` as :class:`Job`s (sorted by utterance id)."""
    wav_scp = read_table(data_dir / "wav.scp")
    for key, value in wav_scp.items():
        if not value.strip() or value.rstrip().endswith("|") or " " in value.strip():
            raise AudioFormatError(
                f"{data_dir / 'wav.scp'}: {key!r} -> {value!r} is not a plain file path (pipes are not supported)"
            )
    jobs = []
    if (data_dir / "segments").is_file():
        for utt_id, value in read_table(data_dir / "segments").items():
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


def kaldi_lines(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{k} {v}\n" for k, v in sorted(pairs))


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
    marker = out_dir / DONE_MARKER
    if marker.is_file() and not force:
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("params") != params:
            raise AudioFormatError(
                f"{out_dir} was made from other inputs or options ({done.get('params')}); rerun with --force"
            )
        logger.info("%s is complete (%s exists); skipping (use --force to redo)", out_dir, DONE_MARKER)
        return dict(done.get("counts", {}))

    text = read_table(data_dir / "text")
    utt2spk = read_table(data_dir / "utt2spk")
    counts: Counter[str] = Counter()
    logged: Counter[str] = Counter()

    def warn(kind: str, message: str) -> None:
        counts[kind] += 1
        logged[kind] += 1
        if logged[kind] <= MAX_LOGGED:
            logger.warning("%s", message)

    jobs = []
    for job in read_jobs(data_dir):
        if job.utt_id not in text or job.utt_id not in utt2spk:
            warn("no_text", f"{job.utt_id}: no line in text/utt2spk; skipped")
        else:
            jobs.append(job)

    num_samples: dict[str, int] = {}
    with atomic_directory(out_dir) as tmp:
        (tmp / "data").mkdir()
        tasks = [(job, str(tmp / "data"), fs, resample, audio_format) for job in jobs]
        # Threads, not processes: decoding/encoding happens in libsndfile/soxr/numpy, which release
        # the GIL (2 threads ~ 2x here), and no worker has to fork a threaded process or re-import ESPnet.
        pool = ThreadPool(nj) if nj > 1 and len(jobs) > 1 else None
        try:
            outcomes = pool.imap(_format_star, tasks, chunksize=8) if pool else map(_format_star, tasks)
            for outcome in tqdm(outcomes, total=len(tasks), desc=f"format {data_dir.name}", unit="utt",
                                mininterval=1.0):
                for kind, message in outcome.warnings:
                    warn(kind, message)
                if outcome.error is not None:
                    if not skip_bad:
                        raise AudioFormatError(outcome.error)
                    warn("bad_audio", outcome.error + "; skipped (--skip_bad)")
                elif outcome.skipped is None:
                    num_samples[outcome.utt_id] = outcome.num_samples
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        if not num_samples:
            raise AudioFormatError(f"no utterance of {data_dir} could be written")

        written = sorted(num_samples)
        ext = audio_format
        files = {
            "wav.scp": kaldi_lines((u, str(out_dir / "data" / f"{u}.{ext}")) for u in written),
            "utt2num_samples": kaldi_lines((u, str(num_samples[u])) for u in written),
            "text": kaldi_lines((u, text[u]) for u in written),
            "utt2spk": kaldi_lines((u, utt2spk[u]) for u in written),
            "feats_type": "raw\n",
            "audio_format": f"{audio_format}\n",
        }
        spk2utt: dict[str, list[str]] = {}
        for u in written:
            spk2utt.setdefault(utt2spk[u], []).append(u)
        files["spk2utt"] = kaldi_lines((s, " ".join(us)) for s, us in spk2utt.items())
        for name, content in files.items():
            (tmp / name).write_text(content, encoding="utf-8")
        for name in COPIED_AS_IS:
            if (data_dir / name).is_file():
                shutil.copyfile(data_dir / name, tmp / name)
        counts["written"] = len(written)
        (tmp / DONE_MARKER).write_text(
            json.dumps({"params": params, "counts": dict(sorted(counts.items()))}, indent=1) + "\n",
            encoding="utf-8",
        )
    skipped = {k: v for k, v in counts.items() if k != "written"}
    if skipped:
        logger.warning("%s: skipped %s", data_dir, ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    logger.info("wrote %s (%d utterances)", out_dir, len(written))
    return dict(sorted(counts.items()))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Cut and convert a Kaldi data dir's audio to 16-bit files (stage 3, format).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dir (wav.scp, text, ...)")
    parser.add_argument("--out_dir", type=Path, required=True, help="output dir, e.g. dump/raw/<set>")
    parser.add_argument("--fs", type=int, default=16000, help="expected (or, with --resample, target) rate")
    parser.add_argument("--audio_format", default="flac", choices=("flac", "wav"))
    parser.add_argument("--nj", type=int, default=1, help="parallel workers (threads)")
    parser.add_argument("--resample", action="store_true", help="resample audio whose rate is not --fs")
    parser.add_argument("--skip_bad", action="store_true",
                        help="skip unreadable audio with a warning instead of failing")
    parser.add_argument("--force", action="store_true", help="redo a complete out_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging("INFO")
    try:
        format_data_dir(args.data_dir, args.out_dir, args.fs, args.audio_format, args.nj,
                        args.resample, args.skip_bad, args.force)
    except AudioFormatError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
