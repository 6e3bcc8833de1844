"""Pack a trained early-exit model into an ESPnet model-zoo zip.

Packing (:func:`pack_model`, ``python -m espnet_early_exit.bin.pack_model``) uses ESPnet's own
``espnet2.main_funcs.pack_funcs.pack`` (what ``python -m espnet2.bin.pack asr`` calls), so the
archive is an ordinary ESPnet model-zoo zip: ``meta.yaml`` + the files it lists under
``yaml_files`` / ``files`` + extra files. Around it this module

* stages the files under recipe-style names (``exp/<exp>/config.yaml``, ``exp/<exp>/<model>.pth``,
  ``data/token_list/<dir>/bpe.model``, ``exp/<exp>/RESULTS.md`` ...) and rewrites the copy of the
  config so that its ``bpemodel`` (and other inference-time file references) name the packed
  copies: ESPnet's unpacker turns exactly those names into the unpacked paths;
* adds a marker entry to ``meta.yaml``'s ``files`` (:data:`PLUGIN_KEY`, a small text file):
  ESPnet's stock ``Speech2Text.from_pretrained`` passes every key there to ``Speech2Text(...)``,
  which then fails at once with ``TypeError: ... unexpected keyword argument 'requires
  espnet_early_exit (pip install espnet-early-exit; ...)'`` instead of a puzzling error about
  ``--encoder ee_conformer`` (or, worse, nothing); our loader pops the key;
* records an ``ee_hf_ssl`` backbone's config in the packed config when training did not
  (``encoder_conf.backbone_config``, ``load_pretrained: false``): loading needs no hub;
* packs the ``learned`` exit policy's classifier (``exit_policy.json``, written beside the model
  file by ``python -m espnet_early_exit.bin.fit_exit_policy``) when there is one, as the member
  beside the model's (:func:`~espnet_early_exit.zoo.common.exit_policy_member`), so that
  unpacking puts it where the policy looks for it; it must load, and fit the model's exits;
* post-processes the zip (ESPnet's ``pack`` cannot add keys to ``meta.yaml``) to record the
  plugin's version next to ESPnet's and torch's, the model's exits and the packed exit policy;
  the output is written to a temporary file and renamed into place
  (:func:`espnet_early_exit.fileio.atomic_write`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

import espnet_early_exit
from espnet_early_exit.exit_classifier import ExitClassifier
from espnet_early_exit.fileio import atomic_write
from espnet_early_exit.zoo.archive import check_model_file, check_zip
from espnet_early_exit.zoo.common import (
    EXIT_POLICY_NAME,
    LOADER,
    MARKER_NAME,
    PIP_NAME,
    PLUGIN_KEY,
    PathLike,
    exit_policy_member,
    first_line,
    lexical_abs,
    unsafe_name_reason,
)
from espnet_early_exit.zoo.errors import ModelZooError

logger = logging.getLogger(__name__)

# config keys whose (string) values are files inference needs: packed and re-pointed
INFERENCE_FILE_KEYS = ("bpemodel", "token_list", "non_linguistic_symbols", "stats_file")
# extra files of an experiment dir packed when present (RESULTS.md's plots, costs, thresholds)
EXP_EXTRAS = (
    "RESULTS.md",
    "wer_vs_exit.png",
    "wer_vs_compute.png",
    "exit_costs.json",
    "selected_thresholds.json",
)


@dataclass
class _PackPlan:
    sources: Dict[str, Path]  # arcname -> source file
    config_arc: str
    model_arc: str
    repoint: Dict[Tuple[Any, str], str]  # (config key, old value) -> arcname
    extras: List[str]  # arcnames of the extra files
    exit_policy: Optional[dict] = None  # meta.yaml's record of the packed learned exit policy


@contextlib.contextmanager
def _chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _recipe_relative(path: PathLike) -> Optional[str]:
    """``path`` relative to the current dir (the recipe root) if it lies below it."""
    p = lexical_abs(path)
    cwd = lexical_abs(".")
    try:
        rel = p.relative_to(cwd)
    except ValueError:
        return None
    rel_s = rel.as_posix()
    return None if rel_s in ("", ".") or unsafe_name_reason(rel_s) else rel_s


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src = src.resolve()  # a symlink (valid.loss.ave.pth -> ..._3best.pth): its target's bytes
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _walk_strings(value, key=None):
    """Yield (key, string) for every string value of a dict in a nested config (list items
    have no key: a token list is not a list of paths)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(v, k)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk_strings(v, None)
    elif isinstance(value, str):
        yield key, value


def _replace_strings(value, key, mapping: Mapping[Tuple[Any, str], str]):
    if isinstance(value, dict):
        return {k: _replace_strings(v, k, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, None, mapping) for v in value]
    if isinstance(value, str) and (key, value) in mapping:
        return mapping[(key, value)]
    return value


class _Sources:
    """The files to pack, each under its archive name (recipe-relative where possible)."""

    def __init__(self, exp_dir: Path):
        self.exp_dir = exp_dir
        self.exp_arc = _recipe_relative(exp_dir) or f"exp/{lexical_abs(exp_dir).name or 'asr'}"
        self.files: Dict[str, Path] = {}

    def _arc_for(self, src: Path, default_dir: str) -> str:
        rel = _recipe_relative(src)
        if rel is None:
            try:  # below the experiment dir: keep the layout under exp/<name>/
                below = lexical_abs(src).relative_to(lexical_abs(self.exp_dir)).as_posix()
                rel = f"{self.exp_arc}/{below}"
            except ValueError:
                rel = f"{default_dir}/{src.name}"
        return rel

    def add(self, src: Path, default_dir: str, arc: Optional[str] = None) -> str:
        """Pack ``src`` (as ``arc`` if given, else under its recipe-relative name)."""
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"cannot pack {src}: no such file")
        arc = arc or self._arc_for(src, default_dir)
        if arc in self.files and self.files[arc].resolve() != src.resolve():
            raise ModelZooError(
                f"two different files would be packed as {arc}: {self.files[arc]} and {src}"
            )
        self.files[arc] = src
        return arc


def _repoint_inference_files(
    sources: _Sources, config_path: Path, config: dict, bpemodel: Optional[Path]
) -> Dict[Tuple[Any, str], str]:
    """Add the files the config names for inference; -> {(key, old value): arcname}."""
    repoint: Dict[Tuple[Any, str], str] = {}
    for key, value in _walk_strings(config):
        if key not in INFERENCE_FILE_KEYS or value.lower() in ("none", "null", ""):
            continue
        if key == "bpemodel" and bpemodel is not None:
            src = bpemodel
        else:
            src = Path(value)
            if not src.is_file():
                if key == "bpemodel":
                    raise FileNotFoundError(
                        f"{config_path}: bpemodel {value} does not exist (relative to "
                        f"{os.getcwd()}): run from the recipe dir or pass --bpemodel"
                    )
                raise FileNotFoundError(
                    f"{config_path}: {key} {value} does not exist (relative to {os.getcwd()}): "
                    "run from the recipe dir the model was trained in"
                )
        default_dir = "data/token_list" if key in ("bpemodel", "token_list") else sources.exp_arc
        repoint[(key, value)] = sources.add(src, default_dir)
    if bpemodel is not None and not any(k == "bpemodel" for k, _ in repoint):
        raise ModelZooError(
            f"--bpemodel {bpemodel} given, but {config_path} has no bpemodel entry "
            "(token_type is not bpe?)"
        )
    return repoint


def _exit_policy_record(path: Path, config: dict) -> dict:
    """Check the learned exit policy found beside the model file -- it loads, and its exits are
    the model's -- before anything is written; -> its meta.yaml record (without ``file``)."""
    try:
        classifier = ExitClassifier.load(path)
        inputs = json.loads(path.read_text(encoding="utf-8")).get("inputs")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelZooError(
            f"{path} is not a valid learned exit policy ({type(e).__name__}: {first_line(e)}): "
            "fit it again (python -m espnet_early_exit.bin.fit_exit_policy) or move it away "
            "from the model file"
        ) from None
    layers = (config.get("encoder_conf") or {}).get("exit_layers")
    if isinstance(layers, (list, tuple)):
        try:
            classifier.check_exits(layers, path)
        except ValueError as e:
            raise ModelZooError(str(e)) from None
    return {"exits": sorted(classifier.models), "inputs": inputs,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _plan_pack(
    config_path: Path,
    model_path: Path,
    config: dict,
    bpemodel: Optional[Path],
    options: Sequence[Path],
    exp_extras: bool,
) -> _PackPlan:
    """What goes into the archive under which name, and how the config is re-pointed."""
    exp_dir = config_path.parent
    sources = _Sources(exp_dir)
    config_arc = sources.add(config_path, sources.exp_arc)
    model_arc = sources.add(model_path, sources.exp_arc)
    repoint = _repoint_inference_files(sources, config_path, config, bpemodel)

    extras: List[str] = []
    candidates = [Path(o) for o in options]
    if exp_extras:
        candidates += [exp_dir / name for name in EXP_EXTRAS if (exp_dir / name).is_file()]
    for src in candidates:
        if not src.is_file():
            raise FileNotFoundError(f"--option {src}: no such file")
        arc = sources.add(src, sources.exp_arc)
        if arc not in extras and arc not in repoint.values():
            extras.append(arc)

    exit_policy = None
    policy_path = model_path.parent / EXIT_POLICY_NAME  # where the learned policy looks
    if policy_path.is_file():
        exit_policy = _exit_policy_record(policy_path, config)
        arc = sources.add(policy_path, sources.exp_arc, arc=exit_policy_member(model_arc))
        exit_policy = {"file": arc, **exit_policy}
        if arc not in extras:
            extras.append(arc)
    return _PackPlan(sources.files, config_arc, model_arc, repoint, extras, exit_policy)


def _marker_text(config: dict) -> str:
    exits = (config.get("encoder_conf") or {}).get("exit_layers")
    return (
        "This ESPnet model is an early-exit ASR model (encoder "
        f"{config.get('encoder')!r}, exits {exits}).\n\n"
        "It needs the espnet_early_exit plugin, which registers its encoders and model with\n"
        "ESPnet. Stock ESPnet (Speech2Text.from_pretrained) cannot build it.\n\n"
        f"    pip install {PIP_NAME}\n\n"
        "    import espnet_early_exit\n"
        "    from espnet_early_exit import EarlyExitSpeech2Text\n"
        "    s2t = EarlyExitSpeech2Text.from_pretrained('<this zip or repo>', exit_layer=...)\n"
    )


def _extra_meta(config: dict, extras: List[str], exit_policy: Optional[dict] = None) -> dict:
    """The keys the plugin adds to meta.yaml: its version, the model's exits, the extra files
    and the packed learned exit policy (``early_exit.exit_policy``, when there is one)."""
    enc_conf = config.get("encoder_conf") or {}
    meta = {
        "espnet_early_exit": espnet_early_exit.__version__,
        "early_exit": {
            "model": config.get("model"),
            "encoder": config.get("encoder"),
            "exit_layers": enc_conf.get("exit_layers"),
            "token_type": config.get("token_type"),
            "requires": f"{PIP_NAME}>={espnet_early_exit.__version__}",
            "load_with": LOADER,
            "extra_files": extras,
        },
    }
    if exit_policy:
        meta["early_exit"]["exit_policy"] = exit_policy
    return meta


def _rewrite_meta(src_zip: Path, dst_zip: Path, extra_meta: dict) -> None:
    """Copy ``src_zip`` to ``dst_zip`` with ``extra_meta`` merged into its meta.yaml."""
    with zipfile.ZipFile(src_zip) as zin, zipfile.ZipFile(dst_zip, "w") as zout:
        for info in zin.infolist():
            out_info = zipfile.ZipInfo(info.filename, info.date_time)
            out_info.compress_type = info.compress_type
            out_info.external_attr = info.external_attr
            if info.filename == "meta.yaml":
                meta = yaml.safe_load(zin.read(info))
                meta.update(extra_meta)
                zout.writestr(out_info, yaml.safe_dump(meta, allow_unicode=True).encode())
                continue
            with zin.open(info) as fin, zout.open(
                out_info, "w", force_zip64=info.file_size > zipfile.ZIP64_LIMIT
            ) as fout:
                shutil.copyfileobj(fin, fout, 1024 * 1024)


def _stage(stage: Path, plan: _PackPlan, config: dict) -> None:
    """Lay the files out under their archive names (the config re-pointed, the marker)."""
    for arc, src in plan.sources.items():
        if arc == plan.config_arc:
            continue
        _link_or_copy(src, stage / arc)
    staged_config = _replace_strings(config, None, plan.repoint)
    (stage / plan.config_arc).parent.mkdir(parents=True, exist_ok=True)
    with open(stage / plan.config_arc, "w", encoding="utf-8") as f:
        yaml.safe_dump(staged_config, f, allow_unicode=True, sort_keys=False)
    (stage / MARKER_NAME).write_text(_marker_text(config), encoding="utf-8")


def _write_archive(out: Path, name: str, plan: _PackPlan, config: dict) -> None:
    """Write the packed model to ``out`` (ESPnet's pack, then our meta.yaml keys) and check it;
    temporary files beside it are named after ``name``."""
    from espnet2.main_funcs.pack_funcs import pack

    stage = Path(tempfile.mkdtemp(prefix=f".{name}.stage-", dir=out.parent))
    fd, espnet_zip = tempfile.mkstemp(prefix=f".{name}.", suffix=".espnet.zip", dir=out.parent)
    os.close(fd)
    try:
        _stage(stage, plan, config)
        printed = io.StringIO()
        with _chdir(stage), contextlib.redirect_stdout(printed):
            # ESPnet names members relative to the cwd: the staging dir gives clean names
            pack(
                files={"asr_model_file": plan.model_arc, PLUGIN_KEY: MARKER_NAME},
                yaml_files={"asr_train_config": plan.config_arc},
                option=[a for a in plan.sources if a not in (plan.config_arc, plan.model_arc)],
                outpath=espnet_zip,
            )
        logger.debug(printed.getvalue())
        _rewrite_meta(Path(espnet_zip), out, _extra_meta(config, plan.extras, plan.exit_policy))
        check_zip(out)  # what we publish must pass what we demand when loading
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        Path(espnet_zip).unlink(missing_ok=True)


def _read_ee_config(config_path: Path) -> dict:
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ModelZooError(f"{config_path} is not a training config (not a YAML mapping)")
    if config.get("model") != "ee_espnet":
        raise ModelZooError(
            f"{config_path}: model is {config.get('model')!r}, not an early-exit model "
            "(model: ee_espnet); pack other models with `python -m espnet2.bin.pack asr`"
        )
    return config


def _offline_config(config: dict) -> dict:
    """The config to pack: an ``ee_hf_ssl`` one gets its backbone's config recorded (if
    training did not), so that the packed model loads without the hub."""
    if config.get("encoder") != "ee_hf_ssl":
        return config
    from espnet_early_exit.encoders.hf_ssl import offline_encoder_conf

    try:
        encoder_conf = offline_encoder_conf(config.get("encoder_conf") or {})
    except (KeyError, OSError) as e:
        raise ModelZooError(
            f"cannot pack an ee_hf_ssl model that loads offline: {e} (pack it where the "
            "backbone's model_name_or_path can be read)"
        ) from e
    return dict(config, encoder_conf=encoder_conf)


def pack_model(
    asr_train_config: PathLike,
    asr_model_file: PathLike,
    outpath: PathLike,
    options: Iterable[PathLike] = (),
    bpemodel: Optional[PathLike] = None,
    exp_extras: bool = True,
) -> Path:
    """Pack a trained early-exit model into an ESPnet model-zoo zip (atomically).

    Args:
        asr_train_config: the experiment's ``config.yaml``.
        asr_model_file: the parameters (``valid.loss.ave.pth`` ...). A symlink is followed.
        outpath: the ``.zip`` to write (a temporary file is renamed onto it at the end).
        options: extra files to carry (ESPnet's ``--option``), e.g. more plots.
        bpemodel: the sentencepiece model, when the config's ``bpemodel`` path is not valid
            from the current directory (default: the config's).
        exp_extras: also pack ``RESULTS.md``, ``wer_vs_exit.png``, ``wer_vs_compute.png``,
            ``exit_costs.json`` and ``selected_thresholds.json`` from the config's dir, when
            present.

    A learned exit policy beside the model file (``exit_policy.json``, see
    ``python -m espnet_early_exit.bin.fit_exit_policy``) is always packed, beside the model's
    member (``exp/<exp>/exit_policy.json``) and recorded in meta.yaml
    (``early_exit.exit_policy``: ``file``, ``exits``, ``inputs``, ``sha256``); one that does not
    load, or was fitted for other exits, is refused (:class:`ModelZooError` naming it) before
    anything is written.

    Paths below the current directory keep their relative names in the archive (run it from
    the recipe dir, like ESPnet's asr.sh); others are named ``exp/<exp dir name>/...`` and
    ``data/token_list/...``. The packed copy of the config refers to the packed files.

    Returns the output path.
    """
    config_path = Path(asr_train_config)
    model_path = Path(asr_model_file)
    outpath = lexical_abs(outpath)
    if outpath.suffix != ".zip":
        raise ValueError(f"--outpath {outpath}: espnet_early_exit packs models as .zip")
    for p in (config_path, model_path):
        if not p.is_file():
            raise FileNotFoundError(f"no such file: {p}")
    config = _offline_config(_read_ee_config(config_path))
    check_model_file(model_path)  # what the loader will demand: refuse to publish otherwise

    plan = _plan_pack(
        config_path, model_path, config, Path(bpemodel) if bpemodel else None,
        [Path(o) for o in options], exp_extras,
    )
    if MARKER_NAME in plan.sources:
        raise ModelZooError(f"{MARKER_NAME} is reserved for the plugin's marker file")
    atomic_write(outpath, lambda tmp: _write_archive(Path(tmp), outpath.name, plan, config))
    logger.info(f"packed {outpath}: {', '.join(sorted(plan.sources))}")
    return outpath
