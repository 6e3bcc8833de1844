"""Parallel jobs of stages 10 and 12: splitting a key file over jobs, merging their decoding outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from espnet_early_exit.fileio import atomic_directory
from espnet_early_exit.stages.markers import write_done_marker

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


def merge_decode(part_dirs: Sequence[Path], out_dir: Path) -> None:
    """Merge the decoding outputs of the jobs (``1best_recog/*`` or files at the top, plus
    ``exit``, ``confidence``, ``timing.json``) into ``out_dir``, lines sorted by utterance id."""
    part_dirs = [Path(p) for p in part_dirs]
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
