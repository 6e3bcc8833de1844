"""Results of an experiment dir: the scored decode dirs, RESULTS.md and the plots.

:func:`collect_results` scans ``<exp_dir>/decode_*/<test_set>/<name>/`` for the scores that
:mod:`espnet_early_exit.scoring` wrote (``score_{wer,cer}/result.json``) and reads, per dir,
its exit (``exit<k>/``) or policy and threshold (``<policy>_th<threshold>/``), the exits the
utterances took (``exit``), the compute costs of the exits (``exit_costs.json`` of the
experiment) and the real-time factor (``timing.json``). :func:`make_results` writes
``RESULTS.md``, ``wer_vs_exit.png`` and ``wer_vs_compute.png`` from them (stage 13 of asr.sh).
Choosing a threshold under a compute budget is :mod:`espnet_early_exit.selection`.

This module imports neither torch nor espnet (matplotlib only when plotting).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from espnet_early_exit.fileio import atomic_savefig, atomic_write_text, read_table
from espnet_early_exit.provenance import git_output

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# --------------------------------------------------------------------------------------
# collecting results of an experiment dir
# --------------------------------------------------------------------------------------
_EXIT_DIR_RE = re.compile(r"^exit(\d+)$")
_POLICY_DIR_RE = re.compile(r"^(?P<policy>.+)_th(?P<thr>[-+0-9.eE]+)$")


@dataclass
class ScoredDir:
    """One scored output dir ``decode_*/<test_set>/<name>/``."""

    decode: str
    test_set: str
    name: str
    path: Path
    exit: Optional[int] = None  # fixed exit k (exit<k>/)
    policy: Optional[str] = None  # dynamic policy name
    threshold: Optional[float] = None
    threshold_str: Optional[str] = None
    wer: Optional[dict] = None  # score_wer/result.json
    cer: Optional[dict] = None  # score_cer/result.json
    avg_exit: Optional[float] = None
    avg_share: Optional[float] = None
    rtf: Optional[float] = None
    n_exit_utts: int = 0

    @property
    def is_fixed(self) -> bool:
        return self.exit is not None


def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_exit_costs(exp_dir: PathLike) -> Dict[int, dict]:
    """``{exit_k: {"exit","params","gflops","share"}}`` from ``exit_costs.json`` ({} if absent)."""
    data = _read_json(Path(exp_dir) / "exit_costs.json")
    if not data:
        return {}
    return {int(e["exit"]): e for e in data.get("exits", [])}


def read_exit_file(path: PathLike) -> Dict[str, int]:
    """``<uttid> <exit_layer>`` lines -> dict (a line without a value is skipped)."""
    out: Dict[str, int] = {}
    for utt, value in read_table(path, duplicates="last").items():
        if value:
            v = float(value.split()[0])
            out[utt] = int(v) if v.is_integer() else v
    return out


def _add_policy_exits(sd: ScoredDir, costs: Dict[int, dict]) -> None:
    """Average exit and compute share of a policy dir from its ``exit`` file."""
    exits = read_exit_file(sd.path / "exit")
    sd.n_exit_utts = len(exits)
    if not exits:
        return
    sd.avg_exit = sum(exits.values()) / len(exits)
    shares = [costs[e]["share"] for e in exits.values() if e in costs]
    if costs and len(shares) == len(exits):
        sd.avg_share = sum(shares) / len(shares)
    elif costs:
        unknown = sorted({e for e in exits.values() if e not in costs})
        logger.warning("%s/exit: exits %s not in exit_costs.json", sd.path, unknown)


def _scored_dir(dec: Path, ts: Path, d: Path, costs: Dict[int, dict]) -> Optional[ScoredDir]:
    """The :class:`ScoredDir` of one output dir, or None when it holds no score."""
    wer = _read_json(d / "score_wer" / "result.json")
    cer = _read_json(d / "score_cer" / "result.json")
    if wer is None and cer is None:
        return None
    sd = ScoredDir(dec.name, ts.name, d.name, d, wer=wer, cer=cer)
    m = _EXIT_DIR_RE.match(d.name)
    if m:
        sd.exit = int(m.group(1))
    else:
        m = _POLICY_DIR_RE.match(d.name)
        thr = None
        if m:
            try:
                thr = float(m.group("thr"))
            except ValueError:
                thr = None
        if thr is not None:
            sd.policy, sd.threshold, sd.threshold_str = m.group("policy"), thr, m.group("thr")
        else:
            sd.policy = d.name
        if (d / "exit").is_file():
            _add_policy_exits(sd, costs)
    timing = _read_json(d / "timing.json")
    if timing and timing.get("rtf") is not None:
        sd.rtf = float(timing["rtf"])
    if sd.is_fixed and sd.exit in costs:
        sd.avg_exit = float(sd.exit)
        sd.avg_share = float(costs[sd.exit]["share"])
    return sd


def collect_results(exp_dir: PathLike) -> List[ScoredDir]:
    """Every scored dir under ``exp_dir/decode_*/<test_set>/``, sorted.

    ``exit<k>`` dirs are fixed exits; ``<policy>_th<threshold>`` dirs are policies at a
    threshold; any other scored dir (e.g. ``oracle``) is a policy without threshold.
    For policies, the ``exit`` file gives the average exit and (through
    ``exit_costs.json``) the average compute share, an unweighted mean over
    utterances; ``timing.json`` (``{"rtf": float}``) gives the RTF.
    """
    exp_dir = Path(exp_dir)
    costs = load_exit_costs(exp_dir)
    found: List[ScoredDir] = []
    for dec in sorted(p for p in exp_dir.glob("decode_*") if p.is_dir()):
        for ts in sorted(p for p in dec.iterdir() if p.is_dir()):
            for d in sorted(p for p in ts.iterdir() if p.is_dir()):
                sd = _scored_dir(dec, ts, d, costs)
                if sd is not None:
                    found.append(sd)
    found.sort(key=lambda s: (s.decode, s.test_set, not s.is_fixed, s.exit or 0, s.policy or "",
                              s.threshold if s.threshold is not None else math.inf))
    return found


# --------------------------------------------------------------------------------------
# RESULTS.md and plots
# --------------------------------------------------------------------------------------
def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _sdi(res: Optional[dict]) -> str:
    if not res or not res.get("n_ref"):
        return "-"
    n = res["n_ref"]
    return "/".join(f"{100.0 * res[key] / n:.2f}" for key in ("sub", "del", "ins"))


def _metric(res: Optional[dict], key: str) -> Optional[float]:
    return None if not res or res.get(key) is None else float(res[key])


def _environment_lines(exp_dir: Path, costs: Dict[int, dict]) -> List[str]:
    config = exp_dir / "config.yaml"
    env = [
        f"- date: `{datetime.datetime.now().astimezone().strftime('%a %b %d %H:%M:%S %Z %Y')}`",
        f"- python version: `{platform.python_version()}`",
        f"- espnet version: `espnet {_version('espnet') or 'not installed'}`",
        f"- pytorch version: `torch {_version('torch') or 'not installed'}`",
        f"- espnet_early_exit version: `{_version('espnet-early-exit') or 'not installed'}`",
    ]
    gh = (git_output(Path.cwd(), "rev-parse", "HEAD") or "").strip()
    if gh:
        env.append(f"- Git hash: `{gh}`")
    env.append(f"- model config: `{config if config.is_file() else '-'}`")
    env.append(
        f"- exit costs: `{exp_dir / 'exit_costs.json'}`" if costs
        else "- exit costs: `-` (exit_costs.json missing: cost columns show -)"
    )
    return env


def _fixed_exit_table(fixed: List[ScoredDir], costs: Dict[int, dict]) -> List[str]:
    out = [
        "|exit|WER|CER|Sub/Del/Ins (WER)|encoder params (M)|compute (GFLOPs)|share of full encoder|",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(fixed, key=lambda r: r.exit):
        c = costs.get(r.exit)
        out.append("|{}|{}|{}|{}|{}|{}|{}|".format(
            r.exit, _fmt(_metric(r.wer, "wer")), _fmt(_metric(r.cer, "cer")), _sdi(r.wer),
            _fmt(c["params"] / 1e6) if c and c.get("params") is not None else "-",
            _fmt(c.get("gflops")) if c else "-",
            _fmt(c.get("share"), ".3f") if c else "-",
        ))
    return out


def _policy_table(pol: List[ScoredDir]) -> List[str]:
    out = [
        "|policy|threshold|WER|CER|avg exit|avg compute share|RTF|",
        "|---|---|---|---|---|---|---|",
    ]
    for r in pol:
        out.append("|{}|{}|{}|{}|{}|{}|{}|".format(
            r.policy, r.threshold_str if r.threshold_str is not None else "-",
            _fmt(_metric(r.wer, "wer")), _fmt(_metric(r.cer, "cer")),
            _fmt(r.avg_exit), _fmt(r.avg_share, ".3f"), _fmt(r.rtf, ".4f"),
        ))
    return out


def _test_set_section(ts: str, rs: List[ScoredDir], costs: Dict[int, dict]) -> List[str]:
    first = next((r.wer for r in rs if r.wer), None)
    size = f" ({first['n_utt']} utts, {first['n_ref']} words)" if first else ""
    out = ["", f"### {ts}{size}", ""]
    fixed = [r for r in rs if r.is_fixed]
    if fixed:
        out += _fixed_exit_table(fixed, costs)
    pol = [r for r in rs if not r.is_fixed]
    if pol:
        out += [""] + _policy_table(pol)
    return out


def render_results_md(
    exp_dir: PathLike, rows: List[ScoredDir], plots: Sequence[str] = (), notes: Sequence[str] = ()
) -> str:
    """RESULTS.md text for :func:`collect_results` rows; ``notes`` (e.g. the guarantee of a
    risk-controlled threshold) are listed under "Selected thresholds"."""
    exp_dir = Path(exp_dir)
    costs = load_exit_costs(exp_dir)
    out = [
        "<!-- Generated by espnet_early_exit.bin.make_results -->",
        f"# RESULTS: {exp_dir.name}",
        "## Environments",
        *_environment_lines(exp_dir, costs),
        "",
        "## Decode dirs",
    ]
    groups: Dict[Tuple[str, str], List[ScoredDir]] = {}
    for r in rows:
        groups.setdefault((r.decode, r.test_set), []).append(r)
    decodes = sorted({r.decode for r in rows})
    for dec in decodes:
        sets = sorted({ts for (d, ts) in groups if d == dec})
        desc = ", ".join(
            f"{ts} ({sum(r.is_fixed for r in groups[(dec, ts)])} exits, "
            f"{sum(not r.is_fixed for r in groups[(dec, ts)])} policy points)"
            for ts in sets
        )
        out.append(f"- `{exp_dir / dec}`: {desc}")
    if not rows:
        out.append("- none found (no decode_*/<test_set>/*/score_wer/result.json)")
    out.append("")

    for dec in decodes:
        out.append(f"## {dec}")
        for (d, ts), rs in sorted(groups.items()):
            if d == dec:
                out += _test_set_section(ts, rs, costs)
        out.append("")

    out += [
        "WER/CER in %; Sub/Del/Ins as % of reference words. Compute share: encoder compute of an",
        "exit relative to the full encoder (exit_costs.json); for policies the unweighted mean over",
        "utterances of the share of the exit each one took. RTF from timing.json.",
        "",
    ]
    if notes:
        out += ["## Selected thresholds", "", *(f"- {n}" for n in notes), ""]
    for p in plots:
        out.append(f"![{Path(p).stem}]({Path(p).name})")
    return "\n".join(out).rstrip() + "\n"


def _series_label(r: ScoredDir, many_decodes: bool) -> str:
    return f"{r.decode}/{r.test_set}" if many_decodes else r.test_set


def plot_wer_vs_exit(rows: List[ScoredDir], path: PathLike) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    path = Path(path)
    many = len({r.decode for r in rows}) > 1
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    series: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.is_fixed and r.wer is not None:
            series.setdefault(_series_label(r, many), []).append((r.exit, float(r.wer["wer"])))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("exit (encoder layer)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER at each exit")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
        ks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ks)
    else:
        ax.text(0.5, 0.5, "no fixed-exit results", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    atomic_savefig(fig, path)
    return path


def plot_wer_vs_compute(rows: List[ScoredDir], path: PathLike) -> Path:
    """One panel per (decode dir, test set): fixed exits as one line, each policy as
    another line over its thresholds.  Without exit_costs.json the fixed exits use
    exit/max_exit as share and policies are left out."""
    from matplotlib.figure import Figure

    path = Path(path)
    many = len({r.decode for r in rows}) > 1
    groups: Dict[Tuple[str, str], List[ScoredDir]] = {}
    for r in rows:
        if r.wer is not None:
            groups.setdefault((r.decode, r.test_set), []).append(r)
    n = max(len(groups), 1)
    fig = Figure(figsize=(6, 4 * n))
    for idx, ((dec, ts), rs) in enumerate(sorted(groups.items())):
        ax = fig.add_subplot(n, 1, idx + 1)
        fixed = sorted((r for r in rs if r.is_fixed), key=lambda r: r.exit)
        have_costs = any(r.avg_share is not None for r in fixed)
        if have_costs:
            pts = [(r.avg_share, float(r.wer["wer"]), r.exit) for r in fixed if r.avg_share is not None]
            xlabel = "compute share of the full encoder"
        else:
            kmax = max((r.exit for r in fixed), default=1) or 1
            pts = [(r.exit / kmax, float(r.wer["wer"]), r.exit) for r in fixed]
            xlabel = "exit / last exit (exit_costs.json missing)"
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="black", label="fixed exits")
            for x, y, k in pts:
                ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        pols: Dict[str, List[Tuple[float, float]]] = {}
        for r in rs:
            if not r.is_fixed and r.avg_share is not None:
                pols.setdefault(r.policy, []).append((r.avg_share, float(r.wer["wer"])))
        for name, ppts in sorted(pols.items()):
            ppts.sort()
            ax.plot([p[0] for p in ppts], [p[1] for p in ppts], marker="x", linestyle="--", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("WER (%)")
        ax.set_title(f"{dec}/{ts}" if many else ts)
        ax.grid(True, alpha=0.3)
        if pts or pols:
            ax.legend(fontsize=8)
    if not groups:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    atomic_savefig(fig, path)
    return path


def make_results(
    exp_dir: PathLike, out_md: Optional[PathLike] = None, notes: Sequence[str] = ()
) -> List[Path]:
    """Write RESULTS.md (default ``exp_dir/RESULTS.md``, with ``notes``) and, next to it,
    ``wer_vs_exit.png`` and ``wer_vs_compute.png``.  Returns the written paths."""
    exp_dir = Path(exp_dir)
    out_md = Path(out_md) if out_md is not None else exp_dir / "RESULTS.md"
    rows = collect_results(exp_dir)
    if not rows:
        logger.warning("no scored decode dirs under %s", exp_dir)
    p1 = plot_wer_vs_exit(rows, out_md.parent / "wer_vs_exit.png")
    p2 = plot_wer_vs_compute(rows, out_md.parent / "wer_vs_compute.png")
    atomic_write_text(out_md, render_results_md(exp_dir, rows, plots=(p1, p2), notes=notes))
    return [out_md, p1, p2]
