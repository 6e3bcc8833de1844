"""Publish a packed model: a Hugging Face model repository folder, and its upload.

:func:`prepare_hf_repo` (``python -m espnet_early_exit.bin.upload_model``) writes a Hugging Face
model repository folder in ESPnet's model-zoo style (the unpacked archive + a model card
``README.md``, see :mod:`espnet_early_exit.zoo.card`); :func:`upload_hf_repo` uploads it with
``huggingface_hub.HfApi().upload_folder``, the token read from an environment variable only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import yaml

import espnet_early_exit
from espnet_early_exit.fileio import replace_dir
from espnet_early_exit.zoo.archive import check_archive, safe_extract
from espnet_early_exit.zoo.card import CARD_STAMP, render_model_card
from espnet_early_exit.zoo.common import PathLike, lexical_abs
from espnet_early_exit.zoo.errors import ModelZooError

logger = logging.getLogger(__name__)

_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_repo_id(hf_repo: str) -> None:
    if not _HF_REPO_RE.match(hf_repo or ""):
        raise ValueError(f"--hf_repo {hf_repo!r}: expected <user or organisation>/<name>")


def _read_text(*candidates: Optional[Path]) -> Optional[str]:
    for p in candidates:
        if p is not None and p.is_file():
            return p.read_text(encoding="utf-8")
    return None


def _guess_corpus(exp_dir: Path) -> Optional[str]:
    for p in [lexical_abs(exp_dir), *lexical_abs(exp_dir).parents, lexical_abs(".")]:
        if p.name == "asr1" and p.parent.parent.name == "egs2":
            return p.parent.name
    return None


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an existing ``target`` must be an earlier output of ours."""
    if target.exists():
        readme = target / "README.md"
        ours = readme.is_file() and CARD_STAMP in readme.read_text(encoding="utf-8",
                                                                   errors="replace")
        if not target.is_dir() or (any(target.iterdir()) and not ours):
            raise ModelZooError(
                f"{target} exists and was not written by prepare_hf_repo: not replacing it "
                "(choose another --out_dir or remove it)"
            )
    replace_dir(new, target)


def _selected_thresholds(exp_dir: Path, config_dir: Path) -> Optional[dict]:
    text = _read_text(exp_dir / "selected_thresholds.json",
                      config_dir / "selected_thresholds.json")
    thresholds = json.loads(text) if text else None
    if thresholds is not None and not isinstance(thresholds, dict):
        raise ModelZooError("selected_thresholds.json is not a {policy: {...}} mapping")
    return thresholds


def prepare_hf_repo(
    packed: PathLike,
    exp_dir: PathLike,
    hf_repo: str,
    out_dir: Optional[PathLike] = None,
    training_data: Optional[str] = None,
    license: str = "cc-by-4.0",
    language: Optional[str] = "en",
    datasets: Optional[Sequence[str]] = None,
) -> Path:
    """Write a Hugging Face model repository folder for a packed model; return it.

    The folder (default ``<exp_dir>/hf_repo``) holds the packed archive's files unpacked as they
    are (``meta.yaml``, ``exp/<exp>/config.yaml``, the model, ``data/token_list/...``, RESULTS.md
    ...) -- the layout espnet_model_zoo resolves for a Hub repository -- and ``README.md``, the
    model card: front matter (tags, licence, datasets), the model, how to load it, the exit
    policy thresholds chosen on dev (``<exp_dir>/selected_thresholds.json``), the tables of
    RESULTS.md, the training data and its licence (``training_data``), citations.
    It is built in a temporary folder and renamed into place.
    """
    packed = Path(packed)
    exp_dir = Path(exp_dir)
    _check_repo_id(hf_repo)
    meta = check_archive(packed)
    out_dir = Path(out_dir) if out_dir is not None else exp_dir / "hf_repo"
    out_dir = lexical_abs(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        files = safe_extract(packed, work)
        if "README.md" in files:
            raise ModelZooError(f"{packed} has a README.md at its root: it would be replaced")
        config_rel = meta["yaml_files"]["asr_train_config"]
        with open(work / config_rel, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        config_dir = (work / config_rel).parent
        results_md = _read_text(config_dir / "RESULTS.md", exp_dir / "RESULTS.md")
        thresholds = _selected_thresholds(exp_dir, config_dir)
        if datasets is None:
            corpus = _guess_corpus(exp_dir)
            datasets = [corpus] if corpus else []
        card = render_model_card(
            hf_repo, meta, config, files, results_md, thresholds,
            training_data=training_data, license=license, language=language,
            datasets=datasets,
        )
        (work / "README.md").write_text(card, encoding="utf-8")
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info(f"wrote Hugging Face repository folder {out_dir}")
    return out_dir


def upload_hf_repo(
    folder: PathLike,
    hf_repo: str,
    token_env: str = "HF_TOKEN",
    commit_message: Optional[str] = None,
    private: bool = False,
):
    """Create ``hf_repo`` (if needed) and upload ``folder`` with ``HfApi().upload_folder``.

    The token is read from the environment variable ``token_env`` only; it is handed to
    ``HfApi`` and never logged, written or put in the commit message.
    Returns huggingface_hub's CommitInfo.
    """
    folder = Path(folder)
    _check_repo_id(hf_repo)
    if not (folder / "README.md").is_file() or not (folder / "meta.yaml").is_file():
        raise ModelZooError(f"{folder} is not a prepared repository (README.md, meta.yaml)")
    if not _ENV_NAME_RE.match(token_env or "") or (
        token_env.startswith("hf_") and len(token_env) >= 30  # the shape of an HF token
    ):
        # do not echo it: it may be the token itself, given by mistake
        raise ValueError(
            "--token_env must name an environment variable that holds the token (e.g. "
            "HF_TOKEN), not the token itself"
        )
    token = os.environ.get(token_env)
    if not token:
        raise ModelZooError(
            f"no Hugging Face token: the environment variable {token_env} is not set or empty "
            "(export it, or use --dry_run true to only write the folder)"
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="espnet_early_exit",
                library_version=espnet_early_exit.__version__)
    del token
    api.create_repo(repo_id=hf_repo, repo_type="model", private=private, exist_ok=True)
    logger.info(f"uploading {folder} to https://huggingface.co/{hf_repo}")
    return api.upload_folder(
        repo_id=hf_repo,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message
        or f"Upload early-exit ASR model (espnet_early_exit {espnet_early_exit.__version__})",
    )
