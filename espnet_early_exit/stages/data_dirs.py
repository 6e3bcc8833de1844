"""Stage 2 (speed perturbation) and stage 4 (duration filter): Kaldi data dir in, data dir out."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Sequence

from espnet_early_exit.fileio import atomic_directory, read_table, spk2utt, write_table
from espnet_early_exit.stages.markers import pool_map, progress, read_done_marker, write_done_marker

logger = logging.getLogger(__name__)

# (utt id, audio file, start s or None, end s or None, speed factor, output file)
PerturbTask = tuple[str, str, "float | None", "float | None", float, str]


def read_data_table(path: Path) -> dict[str, str]:
    """A table of a data dir in file order; a repeated id keeps its last line."""
    return read_table(path, duplicates="last")


def write_spk2utt(path: Path, utt2spk: dict[str, str]) -> None:
    write_table(path, {spk: " ".join(utts) for spk, utts in spk2utt(utt2spk).items()})


# --------------------------------------------------------------------------------------
# stage 2: speed perturbation


def perturb_one(task: PerturbTask) -> tuple[str, int]:
    """Read one utterance (a segment or the whole file), change its speed, write it as flac.

    Speed factor f (sox ``speed f``): the samples are taken as if recorded at ``rate * f`` and
    resampled to ``rate``, so the audio lasts ``1/f`` as long and its pitch moves by ``f``.
    """
    import numpy as np
    import soundfile
    import soxr

    utt_id, path, start, end, factor, out_path = task
    with soundfile.SoundFile(path) as f:
        rate = f.samplerate
        first = 0 if start is None else int(round(start * rate))
        last = f.frames if end is None or end < 0 else min(f.frames, int(round(end * rate)))
        if last <= first:
            return utt_id, 0
        f.seek(first)
        audio = f.read(last - first, dtype="float32", always_2d=True)[:, 0]
    perturbed = soxr.resample(audio, rate * factor, rate, quality="HQ")
    pcm = np.clip(np.round(perturbed * 32768.0), -32768, 32767).astype(np.int16)
    soundfile.write(out_path, pcm, rate, format="FLAC", subtype="PCM_16")
    return utt_id, int(pcm.size)


def factor_name(factor: str) -> str:
    """ESPnet's prefix: ``0.9`` -> ``sp0.9``."""
    return f"sp{factor}"


def perturb_folder(folder: Path, factor: str, sources: dict[str, tuple[str, float | None, float | None]],
                   utts: Sequence[str], nj: int) -> None:
    """Write ``folder/sp<f>-<utt>.flac`` for every utterance, unless a complete folder is there."""
    done = read_done_marker(folder)
    if done is not None and done.get("utts") == len(utts):
        logger.info("%s is complete; reusing it", folder)
        return
    prefix = factor_name(factor)
    with atomic_directory(folder) as tmp:
        tasks = [(u, *sources[u], float(factor), str(tmp / f"{prefix}-{u}.flac")) for u in utts]
        empty = []
        with pool_map(perturb_one, tasks, nj, threads=False) as results:
            for utt, n in progress(results, len(tasks), f"speed {factor}"):
                if n == 0:
                    empty.append(utt)
        if empty:
            raise ValueError(f"empty audio for {len(empty)} utterances, e.g. {empty[0]}")
        write_done_marker(tmp, {"utts": len(utts), "factor": factor})


def speed_perturb(data_dir: Path, out_dir: Path, audio_dir: Path, factors: Sequence[str], nj: int) -> None:
    """Write ``out_dir``: the utterances of ``data_dir`` once per factor.

    Factor 1.0 keeps the original utterances (same ids, same audio); any other factor f adds
    ``sp<f>-<utt>`` (speaker ``sp<f>-<spk>``) whose audio is written to ``audio_dir/sp<f>/``.
    When ``data_dir`` has ``segments``, the perturbed utterances are whole files and get the
    segment ``<utt> <utt> 0.00 -1`` (the whole recording).
    """
    data_dir, out_dir, audio_dir = Path(data_dir), Path(out_dir), Path(audio_dir).resolve()
    wav = read_data_table(data_dir / "wav.scp")
    text = read_data_table(data_dir / "text")
    utt2spk = read_data_table(data_dir / "utt2spk")
    segments = read_data_table(data_dir / "segments") if (data_dir / "segments").is_file() else None
    sources: dict[str, tuple[str, float | None, float | None]] = {}
    if segments is not None:
        for utt, value in segments.items():
            rec, start, end = value.split()
            sources[utt] = (wav[rec], float(start), float(end))
    else:
        sources = {utt: (path, None, None) for utt, path in wav.items()}
    utts = sorted(u for u in sources if u in text and u in utt2spk)

    out: dict[str, dict[str, str]] = {"wav.scp": {}, "text": {}, "utt2spk": {}, "segments": {}}
    counts: dict[str, int] = {}
    for factor in factors:
        if float(factor) <= 0:
            raise ValueError(f"speed factor must be > 0, got {factor}")
        counts[factor] = len(utts)
        if float(factor) == 1.0:
            for utt in utts:
                out["text"][utt], out["utt2spk"][utt] = text[utt], utt2spk[utt]
            if segments is not None:
                out["segments"].update({u: segments[u] for u in utts})
                out["wav.scp"].update({rec: wav[rec] for rec in {segments[u].split()[0] for u in utts}})
            else:
                out["wav.scp"].update({u: wav[u] for u in utts})
            continue
        prefix = factor_name(factor)
        folder = audio_dir / prefix
        perturb_folder(folder, factor, sources, utts, nj)
        for utt in utts:
            new = f"{prefix}-{utt}"
            out["text"][new] = text[utt]
            out["utt2spk"][new] = f"{prefix}-{utt2spk[utt]}"
            out["wav.scp"][new] = str(folder / f"{new}.flac")
            if segments is not None:
                out["segments"][new] = f"{new} 0.00 -1"

    with atomic_directory(out_dir) as tmp:
        for name, table in out.items():
            if name != "segments" or segments is not None:
                write_table(tmp / name, table)
        write_spk2utt(tmp / "spk2utt", out["utt2spk"])
        write_done_marker(tmp, {"data_dir": str(data_dir.resolve()), "factors": list(factors), "counts": counts})
    logger.info("wrote %s: %d utterances (%s)", out_dir, len(out["text"]),
                ", ".join(f"x{f}: {n}" for f, n in counts.items()))


# --------------------------------------------------------------------------------------
# stage 4: duration filter


def filter_dir(in_dir: Path, out_dir: Path, fs: int, min_s: float, max_s: float) -> None:
    """Copy the dump dir ``in_dir`` to ``out_dir`` keeping utterances with
    ``min_s * fs < samples < max_s * fs`` and a non-empty transcript (as ESPnet's stage 4)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    num_samples = read_data_table(in_dir / "utt2num_samples")
    text = read_data_table(in_dir / "text")
    wav = read_data_table(in_dir / "wav.scp")
    utt2spk = read_data_table(in_dir / "utt2spk")
    lo, hi = int(min_s * fs), int(max_s * fs)
    short = {u for u, n in num_samples.items() if int(n) <= lo}
    long_ = {u for u, n in num_samples.items() if int(n) >= hi}
    empty = {u for u in wav if not text.get(u, "").strip()}
    keep = sorted(u for u in wav if u in num_samples and u not in short | long_ | empty and u in utt2spk)
    if not keep:
        raise ValueError(f"{in_dir}: no utterance left after the duration filter "
                         f"({min_s} s < duration < {max_s} s)")
    counts = {"input": len(wav), "kept": len(keep), "too_short": len(short), "too_long": len(long_),
              "empty_text": len(empty)}
    with atomic_directory(out_dir) as tmp:
        for name, table in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk),
                            ("utt2num_samples", num_samples)):
            write_table(tmp / name, {u: table[u] for u in keep})
        write_spk2utt(tmp / "spk2utt", {u: utt2spk[u] for u in keep})
        for name in ("feats_type", "audio_format", "stm", "glm", "reco2file_and_channel"):
            if (in_dir / name).is_file():
                shutil.copyfile(in_dir / name, tmp / name)
        write_done_marker(tmp, {"in_dir": str(in_dir.resolve()), "fs": fs, "min_wav_duration": min_s,
                                "max_wav_duration": max_s, "counts": counts})
    logger.info("%s -> %s: kept %d of %d utterances (%d <= %.2f s, %d >= %.2f s, %d with empty text)",
                in_dir, out_dir, len(keep), len(wav), len(short), min_s, len(long_), max_s, len(empty))
