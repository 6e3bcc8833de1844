"""Safe-loading checks of a packed model, done before anything is unpacked or unpickled.

Models come from strangers: the zip must be a valid zip whose CRCs check (``testzip``), with no
member that is absolute, has a drive letter, a backslash or ``..``, or is a symlink / special
file; ``meta.yaml`` must be a plain mapping whose listed files are safe relative paths present in
the archive; and every ``.pth`` must load with ``torch.load(..., map_location="cpu",
weights_only=True)`` (a pickle that would run code is refused here, whatever
``ESPNET_ALLOW_UNSAFE_TORCH_LOAD`` says) and hold only tensors.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path
from typing import List, Mapping, Optional, Set, Tuple

import yaml

from espnet_early_exit.checkpoints import unwrap_state_dict
from espnet_early_exit.zoo.common import (
    MAX_META_BYTES,
    MAX_UNPACKED_BYTES,
    PathLike,
    first_line,
    unsafe_name_reason,
)
from espnet_early_exit.zoo.errors import (
    CorruptArchiveError,
    IncompleteArchiveError,
    ModelZooError,
    UnsafeArchiveError,
    UnsafeModelFileError,
)


def _member_type_reason(info: zipfile.ZipInfo) -> Optional[str]:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == 0 or kind in (stat.S_IFREG, stat.S_IFDIR):
        return None
    if kind == stat.S_IFLNK:
        return "symbolic link"
    return "not a regular file (device, fifo or socket)"


def check_model_file(path: PathLike) -> Set[str]:
    """Load ``path`` with ``torch.load(map_location="cpu", weights_only=True)``; return its keys.

    Refuses (:class:`UnsafeModelFileError`) a file that needs full unpickling -- a pickle that
    would import or call anything besides tensors and plain containers, e.g. ``os.system`` --
    without running it, and a file that is not a mapping of names to tensors. ESPnet's wrappers
    (``{"module": ...}``, ``{"state_dict": ...}``) are unwrapped as ESPnet does.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, TypeError, AttributeError, ValueError,
            EOFError, ImportError, KeyError, IndexError, zipfile.BadZipFile) as e:
        raise UnsafeModelFileError(
            f"refusing to load {path}: it does not load with torch.load(weights_only=True), "
            "so unpickling it could run code or it is damaged; espnet_early_exit loads only "
            f"plain tensor checkpoints ({type(e).__name__}: {first_line(e)})"
        ) from None
    obj = unwrap_state_dict(obj)
    if not isinstance(obj, Mapping) or not obj:
        raise UnsafeModelFileError(
            f"{path} is not a model state dict (got {type(obj).__name__}"
            f"{' (empty)' if isinstance(obj, Mapping) else ''})"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UnsafeModelFileError(
            f"{path} is not a plain state dict: entries {bad[:5]!r} are not name -> tensor"
        )
    return set(obj.keys())


def read_meta(text: bytes, where: str) -> dict:
    """Parse and check a meta.yaml: ``yaml_files`` / ``files`` mappings of safe relative paths."""
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise IncompleteArchiveError(f"{where}: meta.yaml is not valid YAML ({first_line(e)})")
    if not isinstance(meta, dict):
        raise IncompleteArchiveError(f"{where}: meta.yaml is not a mapping")
    for section in ("yaml_files", "files"):
        entries = meta.get(section)
        if not isinstance(entries, dict):
            raise IncompleteArchiveError(f"{where}: meta.yaml has no '{section}' mapping")
        for key, value in entries.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise IncompleteArchiveError(
                    f"{where}: meta.yaml {section} entry {key!r}: {value!r} is not text"
                )
            why = unsafe_name_reason(value)
            if why:
                raise UnsafeArchiveError(
                    f"{where}: meta.yaml lists {key}: {value!r}, refused ({why}): a packed "
                    "model may only refer to files inside itself"
                )
    if "asr_train_config" not in meta["yaml_files"] or "asr_model_file" not in meta["files"]:
        raise IncompleteArchiveError(
            f"{where}: meta.yaml lists no asr_train_config / asr_model_file: not an ASR model"
        )
    return meta


def listed(meta: dict) -> List[Tuple[str, str]]:
    """The ``(key, relative path)`` pairs of every file a checked meta.yaml lists."""
    return list(meta["yaml_files"].items()) + list(meta["files"].items())


def check_archive(path: PathLike, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> dict:
    """Validate a packed model before anything is extracted; return its meta.yaml.

    Raises :class:`CorruptArchiveError` (not a zip, truncated, CRC mismatch),
    :class:`UnsafeArchiveError` (a member or meta.yaml path that is absolute, has a drive
    letter, a backslash or ``..``, a symlink or special-file member, duplicate names) or
    :class:`IncompleteArchiveError` (no meta.yaml, or a file it lists is not in the archive),
    each naming the file and the member.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model archive: {path}")
    if path.suffix != ".zip":
        raise ModelZooError(f"{path}: espnet_early_exit loads packed models as .zip files")
    return check_zip(path, max_unpacked_bytes)


def _check_members(path: Path, infos: List[zipfile.ZipInfo], max_unpacked_bytes: int) -> Set[str]:
    names: Set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        why = unsafe_name_reason(name) or _member_type_reason(info)
        if why:
            raise UnsafeArchiveError(f"{path}: refusing archive member {name!r}: {why}")
        if name in names:
            raise UnsafeArchiveError(f"{path}: archive member {name!r} appears twice")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"{path}: archive member {name!r} is encrypted")
        names.add(name)
        total += info.file_size
    if total > max_unpacked_bytes:
        raise UnsafeArchiveError(
            f"{path}: would unpack to {total / 1024**3:.1f} GiB (limit "
            f"{max_unpacked_bytes / 1024**3:.0f} GiB)"
        )
    return names


def check_zip(path: Path, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> dict:
    """:func:`check_archive` for a zip file whatever its name (packing checks its temporary
    output); return its meta.yaml."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
        raise CorruptArchiveError(
            f"{path} is not a valid zip archive (corrupt, truncated or another format): "
            f"{first_line(e)}"
        ) from None
    with zf:
        infos = zf.infolist()
        names = _check_members(path, infos, max_unpacked_bytes)
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
                NotImplementedError) as e:
            raise CorruptArchiveError(f"{path} is corrupt: {first_line(e)}") from None
        if bad is not None:
            raise CorruptArchiveError(
                f"{path} is corrupt: member {bad!r} fails its CRC check (damaged download?)"
            )
        # the meta.yaml ESPnet's unpacker would use: the first member named meta.yaml
        meta_info = next((i for i in infos if Path(i.filename).name == "meta.yaml"), None)
        if meta_info is None:
            raise IncompleteArchiveError(f"{path}: no meta.yaml in the archive")
        if meta_info.file_size > MAX_META_BYTES:
            raise IncompleteArchiveError(f"{path}: meta.yaml is implausibly large")
        meta = read_meta(zf.read(meta_info), str(path))
    missing = [f"{k}: {v}" for k, v in listed(meta) if v not in names]
    if missing:
        raise IncompleteArchiveError(
            f"{path}: meta.yaml lists {', '.join(missing)}, but the archive lacks "
            f"{'it' if len(missing) == 1 else 'them'}"
        )
    return meta


def check_model_dir(root: PathLike) -> dict:
    """The checks of :func:`check_archive` for an unpacked repository (a Hub snapshot)."""
    root = Path(root)
    meta_path = root / "meta.yaml"
    if not meta_path.is_file():
        raise IncompleteArchiveError(f"{root}: no meta.yaml (not a packed ESPnet model)")
    if meta_path.stat().st_size > MAX_META_BYTES:
        raise IncompleteArchiveError(f"{root}: meta.yaml is implausibly large")
    meta = read_meta(meta_path.read_bytes(), str(root))
    missing = [f"{k}: {v}" for k, v in listed(meta) if not (root / v).is_file()]
    if missing:
        raise IncompleteArchiveError(
            f"{root}: meta.yaml lists {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} missing"
        )
    return meta


def meta_bytes(archive: PathLike) -> bytes:
    """The raw meta.yaml of a checked archive (the first member named meta.yaml)."""
    with zipfile.ZipFile(archive) as zf:
        info = next(i for i in zf.infolist() if Path(i.filename).name == "meta.yaml")
        return zf.read(info)


def safe_extract(archive: Path, dest: Path) -> List[str]:
    """Extract a checked archive member by member (raw: the config is not rewritten); return
    the sorted member names."""
    check_archive(archive)
    out = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = dest / info.filename
            if dest.resolve() not in target.resolve().parents:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} escapes {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1024 * 1024)
            out.append(info.filename)
    return sorted(out)
