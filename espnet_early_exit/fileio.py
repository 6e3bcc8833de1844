"""Files: Kaldi tables and atomic outputs, written once for the whole project.

Kaldi tables are ``<id> <value>`` lines (``text``, ``wav.scp``, ``utt2spk``, a decode dir's
``exit``...). Atomic outputs: a file or a directory is written under a temporary name in the same
folder and renamed into place, so an interrupted stage never leaves a half-written result that a
rerun would take for finished.

Light (standard library only): the corpus modules in ``local/``, the stage helpers, scoring and
packing all use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Tuple, Type, Union

PathLike = Union[str, "os.PathLike[str]"]

TMP_SUFFIX = ".tmp"


# --------------------------------------------------------------------------------------
# Kaldi tables
# --------------------------------------------------------------------------------------
def read_table(
    path: PathLike,
    *,
    empty_lines: str = "skip",
    duplicates: str = "error",
    error: Type[Exception] = ValueError,
    missing_ok: bool = False,
) -> Dict[str, str]:
    """Read ``<id> <value>`` lines into a dict in file order.

    The id is the first whitespace-delimited field; the value is the rest of the line after the
    whitespace that follows it (it may be empty or hold spaces). ``empty_lines``: ``"skip"`` or
    ``"error"``; ``duplicates`` (a repeated id): ``"error"`` or ``"last"`` (the last one wins).
    Errors are raised as ``error`` (a ValueError subclass of the caller's, e.g. CorpusError) and
    name the file and line. ``missing_ok``: a missing file reads as an empty table.
    """
    if empty_lines not in ("skip", "error"):
        raise ValueError(f"empty_lines must be 'skip' or 'error', not {empty_lines!r}")
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', not {duplicates!r}")
    path = Path(path)
    if missing_ok and not path.is_file():
        return {}
    table: Dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\r\n").split(maxsplit=1)
            if not parts:
                if empty_lines == "error":
                    raise error(f"{path}:{lineno}: empty line")
                continue
            key = parts[0]
            if key in table and duplicates == "error":
                raise error(f"{path}:{lineno}: duplicated id {key!r}")
            table[key] = parts[1] if len(parts) > 1 else ""
    return table


def format_table(pairs: Union[Mapping[str, str], Iterable[Tuple[str, str]]]) -> str:
    """``<id> <value>`` lines sorted by id (Python str order = C locale byte order for UTF-8)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return "".join(f"{key} {value}\n" for key, value in sorted(items))


def write_table(path: PathLike, pairs: Union[Mapping[str, str], Iterable[Tuple[str, str]]]) -> None:
    """Write a Kaldi table (sorted by id) atomically."""
    atomic_write_text(path, format_table(pairs))


def spk2utt(utt2spk: Mapping[str, str]) -> Dict[str, List[str]]:
    """``{utt: spk}`` -> ``{spk: [utts...]}``; speakers and their utterances sorted."""
    out: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk):
        out.setdefault(utt2spk[utt], []).append(utt)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------
# atomic outputs
# --------------------------------------------------------------------------------------
def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_savefig(fig, path: PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def replace_dir(new: PathLike, target: PathLike) -> Path:
    """Put the directory ``new`` at ``target`` (same filesystem), replacing what is there.

    The old ``target`` is first renamed aside, so ``target`` always holds either the old or the
    new tree, never a mix; the old one is removed afterwards.
    """
    new, target = Path(new), Path(target)
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old / target.name, target)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, target)
    return target


@contextmanager
def atomic_directory(final: PathLike) -> Iterator[Path]:
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
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------
# torch files, checked before they are loaded
# --------------------------------------------------------------------------------------
class CorruptFileError(ValueError):
    """A checkpoint or model file that is truncated or not what it should be."""


def check_torch_file(path: PathLike, what: str = "model file", hint: str = "") -> Path:
    """Stop with one message naming ``path`` when it cannot be a whole ``torch.save`` file.

    torch.save writes a zip archive whose directory comes last, so a file cut short (a killed
    save, a full disk, a partial copy) has none: checked here by reading the directory only.
    A file in torch's legacy (non-zip) format is only checked for being non-empty.
    """
    import zipfile

    path = Path(path)
    reason = ""
    if not path.is_file():
        reason = "does not exist"
    elif path.stat().st_size == 0:
        reason = "is empty"
    else:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        if is_zip:
            try:
                with zipfile.ZipFile(path) as z:
                    z.infolist()
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                reason = f"is truncated or corrupt ({e})"
    if reason:
        raise CorruptFileError(f"{what} {path} {reason}" + (f"; {hint}" if hint else ""))
    return path
