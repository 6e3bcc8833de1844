"""Atomic outputs: a directory is filled under a temporary name and renamed into place, so an
interrupted stage never leaves a half-written result. Light (standard library only): the corpus
scripts in local/ and the package's CLIs share it."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield ``<final>.tmp`` to fill; on success it replaces ``final`` in one rename.

    A stale ``.tmp`` from an interrupted run is removed first. On error the
    temporary dir is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = final.with_name(final.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
