"""The paper's experiment grid: run every model of a grid through one recipe, then tabulate.

A grid file (``conf/grid/<recipe>.yaml``) names a recipe (its ``run.sh``) and a list of
experiments. :func:`run_grid` runs the recipe's stages 1-10 once per token setup (data, tokens
and statistics are shared), then stages 11-13 once per experiment with its own ``--asr_tag``,
and finally :func:`write_grid_md` writes ``<workdir>/<expdir>/grid_<name>/GRID.md``: per test
set, WER with rows = models and columns = exits (the shape of the paper's table), and the exit
policies' WER / compute trade-off (entropy against the posterior-based policies).

Grid file::

    name: mini_an4                     # GRID.md goes to <expdir>/grid_<name>/
    recipe: run.sh                     # relative to the recipe root (see below)
    title: ...                         # first line of GRID.md (optional)
    note: ...                          # a paragraph under it (optional)
    exits: [2, 4]                      # the table's columns (default: every exit seen)
    stats_config: conf/...yaml         # the config stages 1-10 run with (a filterbank front-end)
    ssl_models:                        # tiny random SSL models to build first (optional)
      - {family: wav2vec2, path: "{workdir}/ssl_models/tiny_wav2vec2"}
    defaults:                          # any experiment key, for every experiment
      asr_args: "--max_epoch 3"
      inference_config: conf/decode_ee_ctc_greedy.yaml
    experiments:
      - name: ee_ctc                   # exp dir: <expdir>/asr_<grid name>_<name>
        kind: ee_scratch_ctc
        label: "Conformer-CTC, EE from scratch"
        asr_config: conf/tuning/...yaml
        config_overrides: {...}        # merged into the config (dicts key by key)
        asr_args: "..."                # asr.sh --asr_args
        inference_config: ...          # asr.sh --inference_config
        inference_args: "..."          # asr.sh --inference_args
        exit_policies: "entropy:0.5 nbest_posterior:0.9"
        token_type: char               # + nbpe: its own token list and statistics
        recipe_args: [--batch_size, "1"]   # any other asr.sh options
      - {name: single_exit, kind: single_exit, asr_config: ..., depths: [2, 4]}
        # -> single_exit_d2, single_exit_d4: num_blocks k, exit_layers [k]
      - {name: ee_ft, kind: ee_finetuned, init_from: single_exit_d4, exit_layers: [2, 4]}
        # add_exits on that experiment's model (read as the stock single-exit model it is),
        # then training from its weights (--pretrained_model)
      - {name: w2v2_shared, kind: ssl_shared, asr_config: ...}   # share_exit_heads: true
      - {name: w2v2_indep, kind: ssl_indep, asr_config: ...}     # share_exit_heads: false

Paths in a grid file (``recipe``, ``stats_config``, ``asr_config``, ``inference_config``) are
absolute or relative to the recipe root, the folder :func:`load_grid` is given (the one with
``conf/``; ``bin/run_grid.py --root``, by default the checkout the command runs from).
Strings in ``config_overrides``, ``asr_args``, ``inference_args``, ``recipe_args`` and
``ssl_models`` may use ``{workdir}``, ``{expdir}``, ``{grid_dir}`` and ``{root}`` (also
spelled ``{repo}``).
"""

from __future__ import annotations

import copy
import logging
import math
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from espnet_early_exit.fileio import atomic_write_text
from espnet_early_exit.results import collect_results
from espnet_early_exit.selection import best_within_budget, row_wer

logger = logging.getLogger("grid")

KINDS = (
    "ee_scratch_ctc",
    "ee_scratch_aed",
    "single_exit",
    "stock",
    "ee_finetuned",
    "ssl_shared",
    "ssl_indep",
    "other",
)
EXPERIMENT_KEYS = {
    "name", "kind", "label", "asr_config", "config_overrides", "asr_args", "inference_config",
    "inference_args", "exit_policies", "token_type", "nbpe", "recipe_args", "depths", "depth",
    "init_from", "exit_layers", "add_exits_args", "decode",
}
INFERENCE_TAG = "grid"  # decode dirs: <exp>/decode_grid/<test_set>/
# exit-selection policies shown in the trade-off table, in this order
POLICY_ORDER = ("entropy", "max_posterior", "nbest_posterior", "oracle")
BUDGETS = (0.5, 0.75, 1.0)


@dataclass
class Experiment:
    name: str
    kind: str
    label: str
    asr_config: Optional[str] = None
    config_overrides: Dict[str, Any] = field(default_factory=dict)
    asr_args: str = ""
    inference_config: Optional[str] = None
    inference_args: str = ""
    exit_policies: str = ""
    token_type: Optional[str] = None
    nbpe: Optional[int] = None
    recipe_args: List[str] = field(default_factory=list)
    depth: Optional[int] = None  # single_exit
    init_from: Optional[str] = None  # ee_finetuned
    exit_layers: Optional[List[int]] = None  # ee_finetuned
    add_exits_args: List[str] = field(default_factory=list)
    decode: bool = True


@dataclass
class Grid:
    name: str
    recipe: Path
    experiments: List[Experiment]
    title: str = ""
    note: str = ""
    exits: Optional[List[int]] = None
    stats_config: Optional[str] = None
    ssl_models: List[Dict[str, Any]] = field(default_factory=list)
    path: Optional[Path] = None
    root: Optional[Path] = None  # what the grid file's relative paths start from


# --------------------------------------------------------------------------------------
# grid files
# --------------------------------------------------------------------------------------
def _root_path(p: Optional[str], root: Path) -> Optional[str]:
    """A config path of a grid file: absolute, or relative to the recipe root."""
    if p is None or p == "" or "{" in str(p):
        return p
    path = Path(p)
    return str(path if path.is_absolute() else root / path)


def load_grid(path, root) -> Grid:
    """Read and check a grid file; single_exit entries with ``depths`` are expanded.

    ``root``: the recipe root its relative paths (recipe, configs) start from.
    """
    path = Path(path)
    root = Path(root).resolve()
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    for key in ("name", "recipe", "experiments"):
        if key not in raw:
            raise ValueError(f"{path}: no {key!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(raw["name"])):
        raise ValueError(f"{path}: name {raw['name']!r}: letters, digits, _ . - only")
    defaults = dict(raw.get("defaults") or {})
    experiments: List[Experiment] = []
    for i, entry in enumerate(raw["experiments"]):
        e = {**copy.deepcopy(defaults), **entry}
        unknown = set(e) - EXPERIMENT_KEYS
        if unknown:
            raise ValueError(f"{path}: experiment {i}: unknown keys {sorted(unknown)}")
        if "name" not in e or not re.fullmatch(r"[A-Za-z0-9_.-]+", str(e["name"])):
            raise ValueError(f"{path}: experiment {i}: a name of letters, digits, _ . - is required")
        kind = e.get("kind", "other")
        if kind not in KINDS:
            raise ValueError(f"{path}: {e['name']}: kind {kind!r} is not one of {', '.join(KINDS)}")
        recipe_args = e.get("recipe_args") or []
        if isinstance(recipe_args, str):
            recipe_args = shlex.split(recipe_args)
        add_exits_args = e.get("add_exits_args") or []
        if isinstance(add_exits_args, str):
            add_exits_args = shlex.split(add_exits_args)
        base = dict(
            kind=kind,
            asr_config=_root_path(e.get("asr_config"), root),
            config_overrides=dict(e.get("config_overrides") or {}),
            asr_args=str(e.get("asr_args") or ""),
            inference_config=_root_path(e.get("inference_config"), root),
            inference_args=str(e.get("inference_args") or ""),
            exit_policies=str(e.get("exit_policies") or ""),
            token_type=e.get("token_type"),
            nbpe=e.get("nbpe"),
            recipe_args=[str(a) for a in recipe_args],
            init_from=e.get("init_from"),
            exit_layers=[int(k) for k in e["exit_layers"]] if e.get("exit_layers") else None,
            add_exits_args=[str(a) for a in add_exits_args],
            decode=bool(e.get("decode", kind != "stock")),
        )
        if kind == "single_exit":
            depths = e.get("depths") or ([e["depth"]] if e.get("depth") else None)
            if not depths:
                raise ValueError(f"{path}: {e['name']}: single_exit needs depths: [k, ...] (or depth: k)")
            for k in (int(k) for k in depths):
                name = f"{e['name']}_d{k}" if "depths" in e else e["name"]
                label = str(e.get("label") or "single-exit (no-EE), {k} blocks")
                label = label.replace("{k}", str(k)) if "{k}" in label else f"{label}, {k} blocks"
                experiments.append(Experiment(name=name, label=label, depth=k, **base))
        else:
            if kind != "ee_finetuned" and not base["asr_config"]:
                raise ValueError(f"{path}: {e['name']}: asr_config is required")
            if kind == "ee_finetuned" and (not base["init_from"] or not base["exit_layers"]):
                raise ValueError(f"{path}: {e['name']}: ee_finetuned needs init_from and exit_layers")
            experiments.append(
                Experiment(name=str(e["name"]), label=str(e.get("label") or e["name"]), **base)
            )
    names = [x.name for x in experiments]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{path}: experiment names repeat: {dup}")
    for x in experiments:
        if x.kind == "ee_finetuned":
            src = next((y for y in experiments if y.name == x.init_from), None)
            if src is None:
                raise ValueError(f"{path}: {x.name}: init_from {x.init_from!r} is not an experiment")
            if names.index(src.name) > names.index(x.name):
                raise ValueError(f"{path}: {x.name}: init_from {src.name!r} must come before it")
            if src.kind not in ("single_exit", "stock"):
                raise ValueError(
                    f"{path}: {x.name}: init_from {src.name!r} must be a single_exit or stock experiment"
                )
    recipe = Path(raw["recipe"])
    recipe = recipe if recipe.is_absolute() else root / recipe
    return Grid(
        name=str(raw["name"]),
        recipe=recipe,
        experiments=experiments,
        title=str(raw.get("title") or f"Experiment grid {raw['name']}"),
        note=str(raw.get("note") or "").strip(),
        exits=[int(k) for k in raw["exits"]] if raw.get("exits") else None,
        stats_config=_root_path(raw.get("stats_config"), root),
        ssl_models=list(raw.get("ssl_models") or []),
        path=path,
        root=root,
    )


# --------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------
def deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """``over`` merged into a copy of ``base``: dicts key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _expand(value: Any, ctx: Dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in ctx.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _expand(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, ctx) for v in value]
    return value


def single_exit_overrides(config: Dict[str, Any], depth: int) -> Dict[str, Any]:
    """The config changes that make a model with one exit after block ``depth`` (no-EE)."""
    enc = config.get("encoder_conf") or {}
    over: Dict[str, Any] = {"encoder_conf": {"exit_layers": [depth]}}
    if config.get("encoder") != "ee_hf_ssl":
        over["encoder_conf"]["num_blocks"] = depth
    elif enc.get("exit_layers") and depth != max(enc["exit_layers"]):
        raise ValueError("single_exit on ee_hf_ssl: the backbone's depth is fixed; use its last layer")
    if "exit_weights" in (config.get("model_conf") or {}):
        over["model_conf"] = {"exit_weights": [1.0]}
    return over


EE_ONLY_ENCODER_KEYS = ("exit_layers", "exit_norm")
EE_ONLY_MODEL_KEYS = ("share_exit_heads", "exit_decoders", "exit_weights")


def stock_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """The stock ESPnet config of a single-exit early-exit config (``ee_conformer`` ->
    ``conformer``, ``ee_espnet`` -> ``espnet``): the same architecture and weight names."""
    enc = str(config.get("encoder"))
    if not enc.startswith("ee_") or enc == "ee_hf_ssl":
        raise ValueError(f"encoder {enc!r}: no stock ESPnet version")
    exits = (config.get("encoder_conf") or {}).get("exit_layers") or []
    if len(exits) != 1:
        raise ValueError(f"a stock model has one exit; this config has exit_layers {exits}")
    new = copy.deepcopy(config)
    new["encoder"] = enc[3:]
    new["encoder_conf"] = {
        k: v for k, v in (config.get("encoder_conf") or {}).items() if k not in EE_ONLY_ENCODER_KEYS
    }
    new["model"] = "espnet"
    new["model_conf"] = {
        k: v for k, v in (config.get("model_conf") or {}).items() if k not in EE_ONLY_MODEL_KEYS
    }
    return new


def experiment_config(x: Experiment, base: Dict[str, Any], ctx: Dict[str, str]) -> Dict[str, Any]:
    """The training config of an experiment: base + the kind's changes + config_overrides."""
    config = copy.deepcopy(base)
    if x.kind == "single_exit":
        config = deep_merge(config, single_exit_overrides(config, x.depth))
    elif x.kind in ("ssl_shared", "ssl_indep"):
        config = deep_merge(config, {"model_conf": {"share_exit_heads": x.kind == "ssl_shared"}})
    config = deep_merge(config, _expand(x.config_overrides, ctx))
    if x.kind == "stock":
        config = stock_config(config)
    return config


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------
def _option(args: Sequence[str], name: str) -> Optional[str]:
    """The last value of ``--name V`` / ``--name=V`` in a recipe argument list."""
    value = None
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
    return value


class GridRunner:
    def __init__(self, grid: Grid, recipe_args: Sequence[str] = (), only: Sequence[str] = (),
                 dry_run: bool = False, log=print, jobs: int = 1):
        self.grid = grid
        self.jobs = max(1, int(jobs))
        self.recipe_args = list(recipe_args)
        self.dry_run = dry_run
        self.log = log
        cwd = Path.cwd()
        wd = _option(self.recipe_args, "workdir")
        self.workdir = (cwd / wd).resolve() if wd else grid.recipe.resolve().parent
        ed = _option(self.recipe_args, "expdir")  # asr.sh: relative to the calling dir
        self.expdir = (cwd / ed).resolve() if ed else self.workdir / "exp"
        # make both absolute, so that every recipe call (and --only runs from elsewhere) agree
        for i, a in enumerate(self.recipe_args):
            if i > 0 and self.recipe_args[i - 1] in ("--workdir", "--expdir"):
                self.recipe_args[i] = str((cwd / a).resolve())
        self.recipe_args = [
            f"{a.split('=', 1)[0]}={(cwd / a.split('=', 1)[1]).resolve()}"
            if a.startswith(("--workdir=", "--expdir=")) else a
            for a in self.recipe_args
        ]
        self.grid_dir = self.expdir / f"grid_{grid.name}"
        self.ctx = {"workdir": str(self.workdir), "expdir": str(self.expdir),
                    "grid_dir": str(self.grid_dir), "root": str(grid.root),
                    "repo": str(grid.root)}
        names = [x.name for x in grid.experiments]
        for n in only:
            if n not in names:
                raise ValueError(f"--only {n}: not an experiment of {grid.path} ({', '.join(names)})")
        self.only = set(only) or set(names)

    # paths ------------------------------------------------------------------------------
    def asr_tag(self, x: Experiment) -> str:
        return f"{self.grid.name}_{x.name}"

    def exp_dir(self, x: Experiment) -> Path:
        return self.expdir / f"asr_{self.asr_tag(x)}"

    def experiment(self, name: str) -> Experiment:
        return next(x for x in self.grid.experiments if x.name == name)

    # helpers ----------------------------------------------------------------------------
    def _token_args(self, x: Optional[Experiment]) -> List[str]:
        out: List[str] = []
        if x is not None and x.token_type:
            out += ["--token_type", str(x.token_type)]
        if x is not None and x.nbpe:
            out += ["--nbpe", str(x.nbpe)]
        return out

    def run_recipe(self, args: List[str], log_name: str) -> None:
        cmd = ["bash", str(self.grid.recipe), *self.recipe_args, *args]
        logf = self.grid_dir / "logs" / f"{log_name}.log"
        logf.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"  $ {' '.join(shlex.quote(c) for c in cmd)}")
        if self.dry_run:
            return
        start = time.monotonic()
        with open(logf, "w", encoding="utf-8") as f:
            f.write("# " + " ".join(shlex.quote(c) for c in cmd) + "\n")
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(Path.cwd()))
        if proc.returncode != 0:
            tail = logf.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
            raise RuntimeError(
                f"{log_name}: the recipe failed (exit code {proc.returncode}); the last lines of "
                f"{logf}:\n" + "\n".join(tail)
            )
        self.log(f"  done in {time.monotonic() - start:.0f} s (log: {logf})")

    def build_ssl_models(self) -> None:
        from espnet_early_exit.encoders.hf_ssl import make_tiny_ssl

        for spec in self.grid.ssl_models:
            spec = _expand(dict(spec), self.ctx)
            path = Path(spec.pop("path"))
            if (path / "config.json").is_file():
                continue
            self.log(f"tiny random SSL model {spec.get('family', 'wav2vec2')} -> {path}")
            if not self.dry_run:
                make_tiny_ssl(path, **spec)

    def prepare(self) -> None:
        """Stages 1-10 once per token setup (with the grid's stats_config)."""
        setups: List[Tuple[str, ...]] = []
        for x in self.grid.experiments:
            if x.name not in self.only:
                continue
            t = tuple(self._token_args(x))
            if t not in setups:
                setups.append(t)
        for t in setups:
            args = ["--stage", "1", "--stop_stage", "10", *t]
            if self.grid.stats_config:
                args += ["--asr_config", self.grid.stats_config]
            self.log(f"data, tokens, statistics{(' (' + ' '.join(t) + ')') if t else ''}")
            self.run_recipe(args, "prepare" + "".join("_" + a.strip("-") for a in t))

    def write_config(self, x: Experiment) -> Tuple[Path, Optional[Path]]:
        """The experiment's training config under grid_dir/configs (+ init weights)."""
        init = None
        if x.kind == "ee_finetuned":
            base_path, init = self.add_exits(x)
        else:
            base_path = Path(x.asr_config)
        with open(base_path, encoding="utf-8") as f:
            base = yaml.safe_load(f) or {}
        config = experiment_config(x, base, self.ctx)
        out = self.grid_dir / "configs" / f"{x.name}.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        text = (f"# grid {self.grid.name}, experiment {x.name} ({x.kind}): written by "
                f"espnet_early_exit.grid from {base_path}\n"
                + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            out.write_text(text, encoding="utf-8")
        return out, init

    def add_exits(self, x: Experiment) -> Tuple[Path, Path]:
        """Early-exit config + init weights from the init_from experiment's single-exit model."""
        from espnet_early_exit.finetune import pick_model_file

        src = self.experiment(x.init_from)
        src_dir = self.exp_dir(src)
        out_dir = self.grid_dir / "init" / x.name
        if (out_dir / ".done").is_file():
            return out_dir / "config.yaml", out_dir / "init.pth"
        self.log(f"  add_exits: {src_dir} -> {out_dir} (exits {x.exit_layers})")
        if self.dry_run:
            return Path(src.asr_config), out_dir / "init.pth"
        if not (src_dir / ".train.done").is_file():
            raise RuntimeError(f"{x.name}: {src_dir} is not trained (run {src.name} first)")
        with open(src_dir / "config.yaml", encoding="utf-8") as f:
            src_config = yaml.safe_load(f)
        if src_config.get("model") == "ee_espnet":  # our single-exit model: read as stock ESPnet
            src_config = stock_config(src_config)
        out_dir.mkdir(parents=True, exist_ok=True)
        stock_path = out_dir / "source_stock_config.yaml"
        with open(stock_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(src_config, f, sort_keys=False, allow_unicode=True)
        cmd = [sys.executable, "-m", "espnet_early_exit.bin.add_exits",
               "--src", str(pick_model_file(src_dir)), "--src_config", str(stock_path),
               "--exit_layers", *[str(k) for k in x.exit_layers], "--out_dir", str(out_dir),
               *x.add_exits_args]
        logf = self.grid_dir / "logs" / f"{x.name}_add_exits.log"
        with open(logf, "w", encoding="utf-8") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(self.workdir))
        if proc.returncode != 0:
            raise RuntimeError(f"{x.name}: add_exits failed, see {logf}:\n"
                               + "\n".join(logf.read_text().splitlines()[-20:]))
        (out_dir / ".done").touch()
        return out_dir / "config.yaml", out_dir / "init.pth"

    def run_experiment(self, x: Experiment) -> None:
        config, init = self.write_config(x)
        stop = 13 if x.decode else 11
        args = ["--stage", "11", "--stop_stage", str(stop), *self._token_args(x),
                "--asr_config", str(config), "--asr_tag", self.asr_tag(x),
                "--inference_tag", INFERENCE_TAG, "--exit_policies", x.exit_policies]
        if x.asr_args:
            args += ["--asr_args", _expand(x.asr_args, self.ctx)]
        if x.inference_config:
            args += ["--inference_config", x.inference_config]
        if x.inference_args:
            args += ["--inference_args", _expand(x.inference_args, self.ctx)]
        if init is not None:
            args += ["--pretrained_model", str(init)]
        args += _expand(x.recipe_args, self.ctx)
        self.run_recipe(args, x.name)

    def _run_parallel(self, todo: List[Experiment]) -> None:
        """Up to ``jobs`` experiments at a time; a fine-tuned one waits for its source."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        finished = {x.name: threading.Event() for x in todo}
        ok: Dict[str, bool] = {}

        def work(i: int, x: Experiment) -> None:
            try:
                if x.init_from in finished:
                    finished[x.init_from].wait()
                    if not ok.get(x.init_from):
                        raise RuntimeError(f"{x.name}: its source {x.init_from} failed")
                self.log(f"[{i}/{len(todo)}] {x.name} ({x.kind}): {x.label} -> {self.exp_dir(x)}")
                self.run_experiment(x)
                ok[x.name] = True
            finally:
                finished[x.name].set()

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(work, i, x) for i, x in enumerate(todo, 1)]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise RuntimeError("\n\n".join(str(e) for e in errors))

    def run(self) -> Path:
        start = time.monotonic()
        self.log(f"grid {self.grid.name}: {len(self.grid.experiments)} experiments, recipe "
                 f"{self.grid.recipe}, working dir {self.workdir}")
        self.grid_dir.mkdir(parents=True, exist_ok=True)
        self.build_ssl_models()
        self.prepare()
        todo = [x for x in self.grid.experiments if x.name in self.only]
        if self.jobs <= 1 or self.dry_run:
            for i, x in enumerate(todo, 1):
                self.log(f"[{i}/{len(todo)}] {x.name} ({x.kind}): {x.label} -> {self.exp_dir(x)}")
                self.run_experiment(x)
        else:
            self._run_parallel(todo)
        md = self.grid_dir / "GRID.md"
        if not self.dry_run:
            write_grid_md(self.grid, {x.name: self.exp_dir(x) for x in self.grid.experiments}, md,
                          elapsed_s=time.monotonic() - start)
            self.log(f"wrote {md} ({time.monotonic() - start:.0f} s)")
        return md


# --------------------------------------------------------------------------------------
# GRID.md
# --------------------------------------------------------------------------------------
def _fmt(x: Optional[float], spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _pick_decode(rows) -> Optional[str]:
    decodes = sorted({r.decode for r in rows})
    if f"decode_{INFERENCE_TAG}" in decodes:
        return f"decode_{INFERENCE_TAG}"
    return decodes[-1] if decodes else None


def grid_tables(grid: Grid, exp_dirs: Dict[str, Path]) -> Dict[str, Any]:
    """``{"exits": [...], "test_sets": {ts: {"wer": {name: {k: wer}}, "policies": [...]}}}``."""
    per_exp: Dict[str, list] = {}
    for x in grid.experiments:
        d = exp_dirs.get(x.name)
        if not x.decode or d is None or not Path(d).is_dir():
            continue
        rows = collect_results(d)
        dec = _pick_decode(rows)
        per_exp[x.name] = [r for r in rows if r.decode == dec]
    exits = grid.exits or sorted({r.exit for rs in per_exp.values() for r in rs if r.is_fixed})
    test_sets = sorted({r.test_set for rs in per_exp.values() for r in rs})
    out: Dict[str, Any] = {"exits": exits, "test_sets": {}}
    for ts in test_sets:
        wer: Dict[str, Dict[int, Optional[float]]] = {}
        policies = []
        n_utt = n_ref = None
        for name, rows in per_exp.items():
            rs = [r for r in rows if r.test_set == ts]
            wer[name] = {r.exit: row_wer(r) for r in rs if r.is_fixed}
            for r in rs:
                if r.wer and n_utt is None:
                    n_utt, n_ref = r.wer.get("n_utt"), r.wer.get("n_ref")
                if not r.is_fixed:
                    policies.append(dict(model=name, policy=r.policy, threshold=r.threshold,
                                         threshold_str=r.threshold_str, wer=row_wer(r),
                                         avg_exit=r.avg_exit, avg_share=r.avg_share))
        out["test_sets"][ts] = {"wer": wer, "policies": policies, "n_utt": n_utt, "n_ref": n_ref}
    return out


def _policy_key(p: Dict[str, Any]):
    order = POLICY_ORDER.index(p["policy"]) if p["policy"] in POLICY_ORDER else len(POLICY_ORDER)
    return (order, p["policy"], p["threshold"] if p["threshold"] is not None else math.inf)


def render_grid_md(grid: Grid, exp_dirs: Dict[str, Path], elapsed_s: Optional[float] = None) -> str:
    tables = grid_tables(grid, exp_dirs)
    exits = tables["exits"]
    kinds = {x.name: x.kind for x in grid.experiments}
    out = ["<!-- Generated by espnet_early_exit.grid -->", f"# {grid.title}", ""]
    if grid.note:
        out += [grid.note, ""]
    out += [
        f"Grid file: `{grid.path}`; recipe: `{grid.recipe}`.",
        "WER in % at each exit (greedy or beam decoding as the grid's inference config says). "
        "A single-exit (no-EE) baseline fills only its own depth's column; `-`: the model has no "
        "exit there (or it was not decoded).",
        "",
    ]
    if not tables["test_sets"]:
        out += ["No scored decode dirs found.", ""]
    for ts, t in tables["test_sets"].items():
        size = f" ({t['n_utt']} utterances, {t['n_ref']} words)" if t["n_utt"] is not None else ""
        out += [f"## {ts}{size}", "", "### WER per exit", ""]
        out.append("|model|kind|" + "|".join(f"exit {k}" for k in exits) + "|")
        out.append("|---|---|" + "---|" * len(exits))
        for x in grid.experiments:
            if x.name not in t["wer"]:
                continue
            cells = [_fmt(t["wer"][x.name].get(k)) for k in exits]
            out.append(f"|{x.label} (`{x.name}`)|{x.kind}|" + "|".join(cells) + "|")
        out.append("")
        pols = t["policies"]
        out += ["### Exit selection: entropy vs posterior", ""]
        if not pols:
            out += ["No policy decodes (set `exit_policies` for the early-exit experiments).", ""]
            continue
        out += [
            "Each point: one policy at one threshold. Avg compute share = the mean over utterances "
            "of the compute share (GFLOPs relative to the full encoder, exit_costs.json) of the "
            "exit each utterance took.",
            "",
            "|model|policy|threshold|WER|avg exit|avg compute share|",
            "|---|---|---|---|---|---|",
        ]
        for x in grid.experiments:
            for p in sorted((p for p in pols if p["model"] == x.name), key=_policy_key):
                out.append("|{}|{}|{}|{}|{}|{}|".format(
                    f"`{x.name}`", p["policy"], p["threshold_str"] or "-", _fmt(p["wer"]),
                    _fmt(p["avg_exit"], ".2f"), _fmt(p["avg_share"], ".3f")))
        out += ["", "Best WER within a compute budget (lowest WER among the thresholds whose avg "
                "compute share is at most the budget; picked on this set itself):", ""]
        policy_names = sorted({p["policy"] for p in pols if p["threshold"] is not None},
                              key=lambda n: _policy_key({"policy": n, "threshold": 0}))
        out.append("|model|budget|" + "|".join(policy_names) + "|")
        out.append("|---|---|" + "---|" * len(policy_names))
        for x in grid.experiments:
            mine = [p for p in pols if p["model"] == x.name and p["threshold"] is not None]
            if not mine:
                continue
            for b in BUDGETS:
                cells = []
                for n in policy_names:
                    best = best_within_budget(
                        [p for p in mine if p["policy"] == n], b, wer=lambda p: p["wer"],
                        share=lambda p: p["avg_share"], tiebreak=lambda p: p["threshold"])
                    cells.append(f"{_fmt(best['wer'])} ({best['threshold_str']})" if best else "-")
                out.append(f"|`{x.name}`|{b:g}|" + "|".join(cells) + "|")
        out.append("")
    missing = [x for x in grid.experiments if not x.decode]
    if missing:
        out += ["Trained, not decoded: " + ", ".join(f"{x.label} (`{x.name}`)" for x in missing), ""]
    out += ["## Experiments", "", "|name|kind|experiment dir|", "|---|---|---|"]
    for x in grid.experiments:
        out.append(f"|`{x.name}`|{kinds[x.name]}|`{exp_dirs.get(x.name, '-')}`|")
    out.append("")
    if elapsed_s is not None:
        out += [f"Grid run time: {elapsed_s:.0f} s.", ""]
    return "\n".join(out)


def write_grid_md(grid: Grid, exp_dirs: Dict[str, Path], path, elapsed_s: Optional[float] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_grid_md(grid, exp_dirs, elapsed_s))
    return path
