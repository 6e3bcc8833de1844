"""A value of a YAML config for the shell (the stage driver reads options of the training config)."""

from __future__ import annotations

from pathlib import Path


def config_get(config: Path, key: str, default: str | None) -> str:
    """A value of a YAML config, by dotted key (list items by index); lists print space-separated.

    A missing key gives ``default``, or a ``KeyError`` naming the file when there is none.
    """
    import yaml

    with open(config, encoding="utf-8") as f:
        value = yaml.safe_load(f) or {}
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            if default is None:
                raise KeyError(f"{config}: no {key}")
            return default
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)
