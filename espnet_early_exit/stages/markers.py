"""What every stage output shares: the ``.done`` marker, a pool of workers, a progress bar.

A stage writes its output directory with :func:`espnet_early_exit.fileio.atomic_directory` and,
last thing inside that block, the marker (:func:`write_done_marker`): a directory with a marker
is complete, and the marker records what it was made from (options, counts).
"""

from __future__ import annotations

import json
import multiprocessing
from contextlib import contextmanager
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

DONE_MARKER = ".done"


def write_done_marker(directory: Path, info: Mapping[str, Any]) -> Path:
    """Write ``directory/.done`` holding ``info`` as JSON (keys sorted; paths and the like as text)."""
    marker = Path(directory) / DONE_MARKER
    marker.write_text(json.dumps(dict(info), indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return marker


def read_done_marker(directory: Path) -> dict[str, Any] | None:
    """The content of ``directory/.done``; ``None`` without a marker, ``{}`` for an unreadable one."""
    marker = Path(directory) / DONE_MARKER
    if not marker.is_file():
        return None
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return content if isinstance(content, dict) else {}


@contextmanager
def pool_map(function: Callable, tasks: Sequence, nj: int, threads: bool) -> Iterator[Iterable]:
    """``with pool_map(f, tasks, nj, threads) as results:`` iterate ``f(task)`` in task order.

    ``nj`` workers (threads, or processes when ``threads`` is false) when ``nj > 1`` and there is
    more than one task, else in this process; the pool is stopped when the block ends.
    """
    pool = None
    if nj > 1 and len(tasks) > 1:
        pool = ThreadPool(nj) if threads else multiprocessing.Pool(nj)
    try:
        yield pool.imap(function, tasks, chunksize=8) if pool is not None else map(function, tasks)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def progress(items: Iterable, total: int, desc: str, mininterval: float = 2.0) -> Iterator:
    """``items`` with a progress bar (tqdm) on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is an espnet dependency
        return iter(items)
    return iter(tqdm(items, total=total, desc=desc, unit="utt", mininterval=mininterval))
