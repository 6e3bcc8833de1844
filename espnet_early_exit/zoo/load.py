"""Load a packed model safely: fetch / unpack it, check it, build a class from its files.

Loading (:func:`unpack_model`, :func:`from_pretrained`, used by
``EarlyExitSpeech2Text.from_pretrained``) goes through espnet_model_zoo's ``ModelDownloader``:
a local zip is unpacked offline into its cache dir; a model-zoo name, URL or Hugging Face repo id
is downloaded (needs the network). Before anything is unpacked or unpickled the archive passes
the checks of :mod:`espnet_early_exit.zoo.archive`; after unpacking every listed file must
exist and every ``.pth`` must be a plain tensor checkpoint. A packed learned exit policy
(``exit_policy.json``, packed beside the model's member) is unpacked beside the model file, where
``exit_policy="learned"`` finds it by name; a model packed without one still loads, and asking it
for the ``learned`` policy is an error that says so.

This module does not know the inference class: :func:`from_pretrained` builds the class it is
given (``EarlyExitSpeech2Text.from_pretrained`` passes itself).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Set, Tuple

import espnet_early_exit
from espnet_early_exit.zoo.archive import (
    check_archive,
    check_model_dir,
    check_model_file,
    listed,
    meta_bytes,
)
from espnet_early_exit.zoo.common import (
    EXIT_POLICY_NAME,
    PIP_NAME,
    PLUGIN_KEY_PREFIX,
    PathLike,
    first_line,
    packed_exit_policy,
)
from espnet_early_exit.zoo.errors import IncompleteArchiveError, ModelZooError

logger = logging.getLogger(__name__)

_HF_PREFIX = "https://huggingface.co/"
_HF_MARKERS = ("https://huggingface.co/", "https://huggingface.co", "huggingface.co")


def _drop_stale_cache(downloader, archive: Path, meta: bytes) -> None:
    """espnet_model_zoo caches a local zip's unpacked files by the zip's path: after the zip
    is replaced (re-packed), its cache would still be used. Remove it when meta.yaml differs."""
    from espnet_model_zoo.downloader import str_to_hash

    outdir = Path(downloader.cachedir) / str_to_hash(Path(archive).absolute())
    cached = outdir / "meta.yaml"
    if cached.is_file() and cached.read_bytes() != meta:
        logger.info(f"{archive} changed since it was unpacked: unpacking it again")
        shutil.rmtree(outdir, ignore_errors=True)


def _check_unpacked(info: Dict[str, str], meta: dict, where: str) -> None:
    missing = [f"{k}: {info.get(k)}" for k, _ in listed(meta)
               if k not in info or not Path(info[k]).is_file()]
    if missing:
        raise IncompleteArchiveError(
            f"{where}: after unpacking, files listed in meta.yaml are missing: "
            f"{', '.join(missing)}"
        )


def _check_exit_policy(info: Dict[str, str], meta: dict, where: str) -> None:
    """A learned exit policy recorded in meta.yaml must have been unpacked beside the model."""
    record = packed_exit_policy(meta)
    if record and not (Path(info["asr_model_file"]).parent / EXIT_POLICY_NAME).is_file():
        raise IncompleteArchiveError(
            f"{where}: meta.yaml records a learned exit policy ({record.get('file')}), but "
            f"after unpacking there is no {EXIT_POLICY_NAME} beside the model file "
            f"{info['asr_model_file']}"
        )


def _check_learned_request(model_tag: PathLike, info: Dict[str, str], kwargs: dict) -> None:
    """``exit_policy="learned"`` of a packed model that carries no fitted policy: say so."""
    if kwargs.get("exit_policy") != "learned":
        return
    conf = kwargs.get("exit_policy_conf")
    name = (conf.get("model") if isinstance(conf, dict) else None) or EXIT_POLICY_NAME
    if Path(name).is_file() or (Path(info["asr_model_file"]).parent / name).is_file():
        return
    raise FileNotFoundError(
        f"{model_tag}: exit_policy 'learned' needs a fitted exit policy, and this packed model "
        f"carries none ({name} is not beside its model file): fit one beside the model file "
        "(python -m espnet_early_exit.bin.fit_exit_policy --model_file ...) and pack the "
        "model again, give exit_policy_conf={'model': <path to an exit_policy.json>}, or use "
        "another policy"
    )


def _version_tuple(v: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(v))[:3])


def _check_plugin_version(meta: dict, where: str) -> None:
    packed = meta.get("espnet_early_exit")
    if packed and _version_tuple(packed) > _version_tuple(espnet_early_exit.__version__):
        logger.warning(
            f"{where} was packed with espnet_early_exit {packed}, newer than this "
            f"{espnet_early_exit.__version__}: if loading fails, pip install -U {PIP_NAME}"
        )


def _downloader(cachedir: Optional[PathLike]):
    try:
        from espnet_model_zoo.downloader import ModelDownloader
    except ImportError as e:  # pragma: no cover
        raise ModelZooError(
            "loading a packed model needs espnet_model_zoo: pip install espnet_model_zoo"
        ) from e
    return ModelDownloader(cachedir)


def _unpack_local(d, local: Path) -> Tuple[dict, dict]:
    """Check a local zip, then let the downloader unpack it; -> (its files, meta.yaml)."""
    if local.is_dir():
        raise ModelZooError(
            f"{local} is a directory: give the packed .zip, or load the files directly "
            "with EarlyExitSpeech2Text(asr_train_config=..., asr_model_file=...)"
        )
    meta = check_archive(local)
    _drop_stale_cache(d, local, meta_bytes(local))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Expanding a local model")
        info = d.download_and_unpack(str(local.absolute()))
    return info, meta


def _unpack_remote(d, tag: str) -> Tuple[dict, dict]:
    """A model-zoo name, a URL or a Hugging Face repo id ("user/name[@revision]"): fetch it
    (network), check what arrived, then let the downloader unpack / resolve it."""
    from espnet_model_zoo.downloader import is_url

    if tag.endswith(".zip") and not is_url(tag):
        raise FileNotFoundError(f"no such model archive: {tag}")
    url = d.get_url(tag)
    try:
        if url in _HF_MARKERS or url.startswith(_HF_PREFIX) or tag.startswith(_HF_PREFIX):
            repo_id = next(
                (s[len(_HF_PREFIX):] for s in (url, tag) if s.startswith(_HF_PREFIX)), tag
            )
            # the snapshot only: download_and_unpack would also write resolved configs
            # next to the files meta.yaml names, before we could check those names
            fetched = Path(d.huggingface_download(name=repo_id))
        else:
            fetched = Path(d.download(tag))
    except Exception as e:  # noqa: BLE001 - requests / huggingface_hub errors vary
        raise ModelZooError(
            f"{tag!r} is not a local file, and fetching it as a model-zoo name, URL or "
            f"Hugging Face repository failed ({type(e).__name__}: {first_line(e)})"
        ) from e
    meta = check_model_dir(fetched) if fetched.is_dir() else check_archive(fetched)
    return d.download_and_unpack(tag), meta


def _unpack(model_tag: PathLike, cachedir: Optional[PathLike]) -> Tuple[Dict[str, str], Set[str]]:
    """-> (the checked files as Speech2Text keyword arguments, the model's state-dict keys)."""
    tag = os.fspath(model_tag)
    local = Path(tag).expanduser()
    d = _downloader(cachedir)
    if local.exists():
        info, meta = _unpack_local(d, local)
        where = str(local)
    else:
        info, meta = _unpack_remote(d, tag)
        where = tag
    info = dict(info)
    _check_unpacked(info, meta, where)
    _check_exit_policy(info, meta, where)
    _check_plugin_version(meta, where)
    for key in [k for k in info if k.startswith(PLUGIN_KEY_PREFIX)]:
        info.pop(key)
    keys: Set[str] = set()
    for key in ("asr_model_file", "lm_file"):
        if info.get(key):
            found = check_model_file(info[key])
            if key == "asr_model_file":
                keys = found
    return info, keys


def unpack_model(model_tag: PathLike, cachedir: Optional[PathLike] = None) -> Dict[str, str]:
    """Fetch / unpack a packed model safely; return the keyword arguments for Speech2Text.

    ``model_tag``: a local ``.zip`` (unpacked offline), or an espnet_model_zoo name, a URL or a
    Hugging Face repo id ``user/name[@revision]`` (downloaded: needs the network).
    ``cachedir``: espnet_model_zoo's cache (default ``~/.cache/espnet_model_zoo``; Hugging Face
    downloads go to huggingface_hub's cache unless it is given).
    Returns e.g. ``{"asr_train_config": ..., "asr_model_file": ...}`` (the plugin's marker
    entry removed). See :func:`~espnet_early_exit.zoo.archive.check_archive` and
    :func:`~espnet_early_exit.zoo.archive.check_model_file` for the checks.
    """
    return _unpack(model_tag, cachedir)[0]


def from_pretrained(cls: Callable[..., Any], model_tag: Optional[PathLike] = None,
                    **kwargs: Any):
    """Build ``cls`` from a packed model: ``cls(**unpacked files, **kwargs)``.

    ``EarlyExitSpeech2Text.from_pretrained(tag, exit_layer=6)`` calls this with itself as
    ``cls``; ``espnet_early_exit.from_pretrained(tag, ...)`` is the same. ``kwargs`` go to the
    constructor (``exit_layer``, ``exit_policy``, ``exit_threshold``, ``beam_size``,
    ``device`` ...) except ``cachedir`` (see :func:`unpack_model`). Without a tag:
    ``cls(**kwargs)``.
    """
    if cls is None:
        raise TypeError(
            "zoo.from_pretrained needs the class to build; use "
            "espnet_early_exit.from_pretrained(tag, ...) or "
            "EarlyExitSpeech2Text.from_pretrained(tag, ...)"
        )
    cachedir = kwargs.pop("cachedir", None)
    if model_tag is None:
        return cls(**kwargs)
    given = [k for k in ("asr_train_config", "asr_model_file") if kwargs.get(k) is not None]
    if given:
        raise ValueError(f"give either a model tag or {' and '.join(given)}, not both")
    for key in ("asr_train_config", "asr_model_file"):  # None: the CLI's unset options
        kwargs.pop(key, None)
    info, state_keys = _unpack(model_tag, cachedir)
    _check_learned_request(model_tag, info, kwargs)
    obj = cls(**info, **kwargs)
    model = getattr(obj, "asr_model", None)
    if model is not None and state_keys:
        # ESPnet loads with strict=False: parameters a file lacks stay at their random init
        missing = sorted(set(model.state_dict()) - state_keys)
        if missing:
            logger.warning(
                f"{model_tag}: {len(missing)} parameters of the model are not in the packed "
                f"weights and keep their initial values, e.g. {missing[:3]}"
            )
    return obj
