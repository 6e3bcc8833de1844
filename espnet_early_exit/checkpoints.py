"""A model file loaded with its training config: one clear error naming both when they differ.

ESPnet's ``build_model_from_file`` loads the weights with ``strict=False``: a model file of
another config whose parameter names differ (another ``exit_decoders``, fewer exits) loads with
the missing parameters left at their random initial values, silently; a size mismatch raises
torch's long ``state_dict`` error that names neither file. :func:`model_file_errors` and
:func:`check_model_keys` around the load turn both into one ``ValueError`` naming the files
(and a truncated file into :class:`~espnet_early_exit.fileio.CorruptFileError`, before torch).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

from espnet_early_exit.fileio import check_torch_file


def unwrap_state_dict(obj: Any) -> Any:
    """The state dict inside ESPnet's wrappers (``{"module": ...}``, ``{"state_dict": ...}``),
    unwrapped as ESPnet's ``build_model_from_file`` does; anything else as it is."""
    for wrapper in ("module", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    return obj


def _not_its_model(config: Any, model_file: Any, why: str) -> ValueError:
    return ValueError(f"{model_file} is not a model of {config}: {why} (was it trained with "
                      "another config? give the config.yaml of its experiment dir)")


@contextmanager
def model_file_errors(config: Any, model_file: Optional[Any]) -> Iterator[None]:
    """Around ESPnet's loading of ``model_file`` with ``config``."""
    if model_file is not None:
        check_torch_file(model_file)
    try:
        yield
    except RuntimeError as e:
        if model_file is None or "state_dict" not in str(e):
            raise
        lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        raise _not_its_model(config, model_file, "; ".join(lines[:3])[:600]) from e


def check_model_keys(model, model_file: Optional[Any], config: Any) -> None:
    """Stop when ``model_file``'s parameter names are not those of ``model`` (built from
    ``config``); reads the names only (memory-mapped, weights_only)."""
    if model_file is None:
        return
    import torch

    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # torch's legacy (non-zip) format cannot be memory-mapped
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    state = unwrap_state_dict(state)
    expected, found = set(model.state_dict()), set(state)
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        why = ", ".join(part for part in (
            f"{len(missing)} parameters of the config are not in the file (e.g. {missing[:3]})"
            if missing else "",
            f"{len(extra)} in the file are not in the config (e.g. {extra[:3]})" if extra else "",
        ) if part)
        raise _not_its_model(config, model_file, why)
