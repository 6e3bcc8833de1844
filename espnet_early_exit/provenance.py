"""Where a measured number came from: the command, the code, the machine and the date.

Every results file under ``docs/results/`` (the benchmarks, the FSDD study) starts with this
record and is written by :func:`write_results` (JSON, atomically). ``tools/render_docs.py``
renders the numbers of README.md and docs/*.md from those files only.

Standard library only (torch is read when it is already importable).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_early_exit.fileio import PathLike, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def git_output(repo: PathLike, *args: str) -> Optional[str]:
    """The output of ``git ARGS`` run in ``repo``; None when git fails or is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit(repo: PathLike = REPO) -> Dict[str, object]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ``repo``."""
    sha = git_output(repo, "rev-parse", "HEAD")
    status = git_output(repo, "status", "--porcelain", "--untracked-files=no")
    return {"commit": sha.strip() if sha else None,
            "dirty": None if status is None else bool(status.strip())}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: Optional[int] = None, device: str = "cpu") -> Dict[str, object]:
    """The machine a measurement ran on: CPU model and count, torch threads, versions, device."""
    info: Dict[str, object] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": f"CPU ({cpu_model()})",
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def command_line(argv: Optional[Sequence[str]] = None, repo: PathLike = REPO) -> str:
    """The command as one would type it from the repository root: ``python <script> args``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(Path(repo).resolve())
    except ValueError:
        pass
    return shlex.join(["python", str(script)] + argv[1:])


def record(kind: str, argv: Optional[Sequence[str]] = None, threads: Optional[int] = None,
           device: str = "cpu", repo: PathLike = REPO) -> Dict[str, object]:
    """The head of a results file: what produced it, from which code, where and when."""
    return {
        "kind": kind,
        "command": command_line(argv, repo),
        "git": git_commit(repo),
        "machine": machine(threads, device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(path: PathLike, payload: Dict[str, object]) -> Path:
    """``payload`` as indented JSON at ``path`` (atomic; parent folders are created)."""
    return atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def read_results(path: PathLike) -> Dict[str, object]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


__all__: List[str] = ["git_commit", "cpu_model", "machine", "command_line", "record",
                      "write_results", "read_results"]
