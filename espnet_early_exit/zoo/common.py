"""What packing, loading and publishing share: the plugin's marker, limits, path helpers."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Optional, Union

from espnet_early_exit.exit_classifier import DEFAULT_NAME as EXIT_POLICY_NAME

PathLike = Union[str, Path]

# The key of the marker entry in meta.yaml's `files`. Stock ESPnet turns it into a keyword
# argument of Speech2Text(...), so this sentence is what a user of stock ESPnet reads.
PLUGIN_KEY = (
    "requires espnet_early_exit: pip install espnet-early-exit, then use "
    "espnet_early_exit.EarlyExitSpeech2Text.from_pretrained"
)
PLUGIN_KEY_PREFIX = "requires espnet_early_exit"
MARKER_NAME = "ESPNET_EARLY_EXIT.txt"
PIP_NAME = "espnet-early-exit"
LOADER = "espnet_early_exit.EarlyExitSpeech2Text.from_pretrained"

MAX_UNPACKED_BYTES = 64 * 1024**3  # refuse archives that claim to expand beyond this
MAX_META_BYTES = 1024**2


def unsafe_name_reason(name: str) -> Optional[str]:
    """Why an archive member / meta.yaml path is refused (None: acceptable)."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in the name"
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "drive letter"
    if "\\" in name:
        return "backslash in the name (a Windows path?)"
    if ".." in name.split("/"):
        return "'..' in the path"
    return None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def lexical_abs(path: PathLike) -> Path:
    """``path`` made absolute without resolving symlinks."""
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


def exit_policy_member(model_member: str) -> str:
    """The archive member of a packed model's learned exit policy: ``exit_policy.json`` in the
    directory of the model file's member (``exp/asr_x/valid.loss.ave.pth`` ->
    ``exp/asr_x/exit_policy.json``), so that unpacking puts it where the ``learned`` policy
    looks: beside the model file."""
    return posixpath.join(posixpath.dirname(model_member), EXIT_POLICY_NAME)


def packed_exit_policy(meta: dict) -> Optional[dict]:
    """meta.yaml's record of the packed learned exit policy, ``early_exit.exit_policy``
    (``file``: its member, ``exits``, ``inputs``, ``sha256``), or None."""
    ee = meta.get("early_exit")
    record = ee.get("exit_policy") if isinstance(ee, dict) else None
    return record if isinstance(record, dict) else None
