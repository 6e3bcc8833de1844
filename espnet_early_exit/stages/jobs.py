"""Parallel jobs of stages 10 and 12: splitting a key file over jobs, merging their decoding outputs.

A decoding job's output dir is complete when it holds the job's ``.done`` marker
(:func:`write_job_marker`, written by ``asr_inference`` last, inside its atomic output dir),
which records the digest of the job's key file: a rerun of stage 12 decodes only the jobs
without a marker for the same keys (:func:`pending_jobs`), and the merge of the jobs refuses a
part without one (``require_done``), so a killed or failed job is never merged nor scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from espnet_early_exit.fileio import atomic_directory
from espnet_early_exit.stages.markers import read_done_marker, write_done_marker

logger = logging.getLogger(__name__)

TABLE_FILES = ("text", "token", "token_int", "score", "exit", "confidence", "features")


def split_keys(key_file: Path, nj: int, out_template: str) -> None:
    """Split the lines of ``key_file`` into ``nj`` contiguous parts ``out_template`` (JOB -> 1..nj);
    part sizes differ by at most one line (as Kaldi's split_scp.pl)."""
    lines = Path(key_file).read_text(encoding="utf-8").splitlines(keepends=True)
    nj = max(1, min(nj, len(lines)))
    base, extra = divmod(len(lines), nj)
    start = 0
    for j in range(1, nj + 1):
        size = base + (1 if j <= extra else 0)
        out = Path(out_template.replace("JOB", str(j)))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(lines[start:start + size]), encoding="utf-8")
        start += size


def key_digest(key_file: Optional[Path]) -> Optional[str]:
    """sha256 of a job's key file (``None`` without one: the job decodes every utterance)."""
    if key_file is None:
        return None
    return hashlib.sha256(Path(key_file).read_bytes()).hexdigest()


def write_job_marker(out_dir: Path, key_file: Optional[Path], info: Mapping[str, Any]) -> Path:
    """Mark a decoding job's output dir complete: its ``.done`` with the key file's digest."""
    return write_done_marker(out_dir, dict(info, key_file=key_file, keys_sha256=key_digest(key_file)))


def job_done(out_dir: Path, key_file: Optional[Path]) -> bool:
    """Whether ``out_dir`` is the complete output of a job over ``key_file``'s utterances."""
    marker = read_done_marker(out_dir)
    return bool(marker) and marker.get("keys_sha256") == key_digest(key_file)


def pending_jobs(out_template: str, key_template: str, nj: int) -> List[int]:
    """The job numbers (1..nj) whose output (``out_template``, JOB -> number) is not complete."""
    return [j for j in range(1, nj + 1)
            if not job_done(Path(out_template.replace("JOB", str(j))),
                            Path(key_template.replace("JOB", str(j))))]


def job_ranges(jobs: Iterable[int]) -> List[Tuple[int, int]]:
    """Runs of consecutive job numbers, ``[(first, last), ...]`` (for ``JOB=first:last``)."""
    ranges: List[Tuple[int, int]] = []
    for j in sorted(jobs):
        if ranges and ranges[-1][1] == j - 1:
            ranges[-1] = (ranges[-1][0], j)
        else:
            ranges.append((j, j))
    return ranges


def merge_timing(parts: Sequence[dict]) -> dict:
    """Sum the per-job timings: numbers are added (wall and audio seconds, counts), and the real
    time factor is recomputed as wall / audio."""
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    wall = next((merged[k] for k in ("wall_seconds", "wall", "wall_s", "wall_time") if k in merged), None)
    audio = next((merged[k] for k in ("audio_seconds", "audio", "audio_s", "audio_duration") if k in merged), None)
    if wall is not None and audio:
        merged["rtf"] = wall / audio
    else:
        merged.pop("rtf", None)  # a sum of ratios means nothing
    merged["num_jobs"] = len(parts)
    return merged


def merged_lines(part_dirs: Sequence[Path], name: str) -> list[str] | None:
    """The lines of ``name`` (``1best_recog/<name>`` or ``<name>``) of every job, sorted by id;
    ``None`` when no job has the file."""
    lines: list[str] = []
    found = False
    for part in part_dirs:
        for candidate in (part / "1best_recog" / name, part / name):
            if candidate.is_file():
                lines += candidate.read_text(encoding="utf-8").splitlines(keepends=True)
                found = True
                break
    if not found:
        return None
    lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    lines.sort(key=lambda line: line.split(" ", 1)[0])
    return lines


def merge_decode(part_dirs: Sequence[Path], out_dir: Path, require_done: bool = False) -> None:
    """Merge the decoding outputs of the jobs (``1best_recog/*`` or files at the top, plus
    ``exit``, ``confidence``, ``timing.json``) into ``out_dir``, lines sorted by utterance id.
    ``require_done``: every part must hold its job's ``.done`` marker (a complete job)."""
    part_dirs = [Path(p) for p in part_dirs]
    unfinished = [str(p) for p in part_dirs if require_done and read_done_marker(p) is None]
    if unfinished:
        raise FileNotFoundError(f"not merging {out_dir}: the output of these jobs is not complete "
                                f"(no .done; the job was stopped or failed): {', '.join(unfinished)}")
    with atomic_directory(out_dir) as tmp:
        for name in TABLE_FILES:
            lines = merged_lines(part_dirs, name)
            if lines is not None:
                (tmp / name).write_text("".join(lines), encoding="utf-8")
        if not (tmp / "text").is_file():
            raise FileNotFoundError(f"no text (nor 1best_recog/text) in {part_dirs[0]}")
        timings = [json.loads((p / "timing.json").read_text()) for p in part_dirs if (p / "timing.json").is_file()]
        if timings:
            (tmp / "timing.json").write_text(json.dumps(merge_timing(timings), indent=1) + "\n", encoding="utf-8")
        write_done_marker(tmp, {"parts": [str(p) for p in part_dirs]})
    logger.info("merged %d job outputs into %s", len(part_dirs), out_dir)
