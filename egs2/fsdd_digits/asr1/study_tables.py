"""The FSDD early-exit study's tables (run by study.sh, part "tables").

    python egs2/fsdd_digits/asr1/study_tables.py --out study.md \\
        --model "EE (from scratch)=exp/asr_ee" --model "interCTC=exp/asr_interctc_as_ee" \\
        --policy_exp exp/asr_ee --times times.tsv

Two steps: :func:`collect_study` reads the numbers from the scored experiment dirs (a dict of
plain numbers, lists and strings: per-exit WER, encoder compute per exit, the exit policies,
the best policy under a compute budget, wall times), :func:`render_study_md` writes the
markdown from that dict. A threshold under a budget is chosen on the dev set
(:mod:`espnet_early_exit.selection`) and reported on the first test set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from espnet_early_exit.fileio import atomic_write_text
from espnet_early_exit.results import ScoredDir, collect_results, load_exit_costs
from espnet_early_exit.selection import best_fixed_exit, row_wer, select_policy_point

Model = Tuple[str, List[Path]]  # a table row: its name and the experiment dir(s) that fill it


# ----------------------------------------------------------------------------- collecting
def collect_per_exit(models: List[Model], test_set: str) -> Dict[str, Any]:
    """WER per exit, one row per model; a row made of several experiments (e.g. one
    single-exit model per depth) takes each exit from the experiment that has it."""
    rows = {name: {r.exit: r for exp in exps for r in collect_results(exp)
                   if r.test_set == test_set and r.is_fixed} for name, exps in models}
    exits = sorted({k for v in rows.values() for k in v})
    return {"test_set": test_set, "exits": exits,
            "rows": [{"model": name, "wer": [_row_wer(rows[name].get(k)) for k in exits]}
                     for name, _ in models]}


def collect_costs(models: List[Model]) -> Dict[str, Any]:
    """GFLOPs and share of the full encoder per exit (exit_costs.json), one row per model
    that has them."""
    costs: Dict[str, Dict[int, dict]] = {}
    for name, exps in models:
        costs[name] = {}
        for exp in exps:
            costs[name].update(load_exit_costs(exp))
    exits = sorted({k for c in costs.values() for k in c})
    return {"exits": exits, "rows": [
        {"model": name, "gflops": [c[k]["gflops"] if k in c else None for k in exits],
         "share": [c[k]["share"] if k in c else None for k in exits]}
        for name, c in costs.items() if c]}


def collect_policies(rows: List[ScoredDir], test_set: str) -> List[Dict[str, Any]]:
    """Every decoding of one experiment on one set: fixed exits and policy thresholds."""
    return [{"decoding": f"exit {r.exit}" if r.is_fixed else r.policy,
             "threshold": r.threshold_str, "wer": _row_wer(r), "avg_exit": r.avg_exit,
             "avg_share": r.avg_share, "rtf": r.rtf}
            for r in rows if r.test_set == test_set]


def collect_budgets(rows: List[ScoredDir], dev: str, test: str, policies: Sequence[str],
                    budgets: Sequence[float]) -> List[Dict[str, Any]]:
    """Per budget: each policy's threshold chosen on ``dev`` (None: none within budget) and its
    WER and share there and on ``test``, then the best fixed exit on ``dev`` for reference."""
    out: List[Dict[str, Any]] = []
    for b in budgets:
        for pol in policies:
            try:
                sel = select_policy_point(rows, dev, pol, b)
            except ValueError as e:
                logging.warning("%s", e)
                sel = None
            t = None if sel is None else next(
                (r for r in rows if r.test_set == test and r.policy == pol
                 and r.threshold is not None and abs(r.threshold - sel.threshold) < 1e-12), None)
            out.append({"budget": b, "kind": "policy", "policy": pol,
                        "threshold": None if sel is None else sel.threshold,
                        "dev_wer": _row_wer(sel), "dev_share": _share(sel),
                        "test_wer": _row_wer(t), "test_share": _share(t)})
        fixed = best_fixed_exit(rows, dev, b)
        if fixed is not None:
            t = next((r for r in rows if r.test_set == test and r.is_fixed
                      and r.exit == fixed.exit), None)
            out.append({"budget": b, "kind": "fixed", "exit": fixed.exit, "threshold": None,
                        "dev_wer": _row_wer(fixed), "dev_share": fixed.avg_share,
                        "test_wer": _row_wer(t), "test_share": fixed.avg_share})
    return out


def read_times(times: Optional[Path]) -> Optional[List[Dict[str, Any]]]:
    """``part<TAB>seconds`` lines of the study's times file (None: no such file)."""
    if times is None or not times.is_file():
        return None
    out = []
    for line in times.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip().isdigit():
            out.append({"part": parts[0], "seconds": int(parts[1])})
    return out


def collect_study(models: List[Model], policy_exps: Sequence[Path], test_sets: Sequence[str],
                  dev: str, policies: Sequence[str], budgets: Sequence[float],
                  times: Optional[Path]) -> Dict[str, Any]:
    """All the numbers of the study's tables (see :func:`render_study_md`)."""
    data: Dict[str, Any] = {
        "per_exit": [collect_per_exit(models, ts) for ts in test_sets],
        "costs": collect_costs(models),
        "policy_exps": [],
        "dev": dev,
        "test": test_sets[0],
        "times": read_times(times),
    }
    for exp in policy_exps:
        rows = collect_results(exp)
        sets = [ts for ts in (dev,) + tuple(t for t in test_sets if t != dev)
                if any(r.test_set == ts and not r.is_fixed for r in rows)]
        data["policy_exps"].append({
            "name": exp.name,
            "policies": [{"test_set": ts, "rows": collect_policies(rows, ts)} for ts in sets],
            "budgets": collect_budgets(rows, dev, test_sets[0], policies, budgets),
        })
    return data


def collect_facts(models: List[Model], equivalence: Optional[Path]) -> Dict[str, Any]:
    """What the study's page says besides its tables: words per set (the first model's scored
    exits), each model's experiment dirs, encoder parameters and front-end share
    (exit_costs.json), and the interCTC equivalence check (its equivalence.json)."""
    words: Dict[str, int] = {}
    for exp in models[0][1] if models else []:
        for r in collect_results(exp):
            if r.is_fixed and r.wer and "n_ref" in r.wer:
                words.setdefault(r.test_set, int(r.wer["n_ref"]))
    rows = []
    for name, exps in models:
        path = exps[0] / "exit_costs.json"
        costs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        rows.append({"model": name, "exps": [e.name for e in exps],
                     **{k: costs.get(k) for k in ("encoder_params", "front_share", "front_gflops")}})
    eq = (json.loads(equivalence.read_text(encoding="utf-8"))
          if equivalence is not None and equivalence.is_file() else None)
    return {"words": words, "models": rows, "equivalence": eq}


def read_commands(path: Optional[Path]) -> List[Dict[str, str]]:
    """``date<TAB>command`` lines: every study.sh invocation on the workdir."""
    if path is None or not path.is_file():
        return []
    return [dict(zip(("date", "command"), line.split("\t", 1)))
            for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]


def _row_wer(r: Optional[ScoredDir]) -> Optional[float]:
    return None if r is None else row_wer(r)


def _share(r: Optional[ScoredDir]) -> Optional[float]:
    return None if r is None else r.avg_share


# ----------------------------------------------------------------------------- rendering
def _f(x: Optional[float], spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_per_exit(t: Dict[str, Any]) -> List[str]:
    if not t["exits"]:
        return [f"(no results for {t['test_set']})", ""]
    out = [_row(["model \\ exit"] + t["exits"]), "|---|" + "---|" * len(t["exits"])]
    out += [_row([r["model"]] + [_f(w) for w in r["wer"]]) for r in t["rows"]]
    return out + [""]


def render_costs(t: Dict[str, Any]) -> List[str]:
    if not t["exits"]:
        return []
    out = [_row(["model \\ exit: GFLOPs (share of its full encoder)"] + t["exits"]),
           "|---|" + "---|" * len(t["exits"])]
    for r in t["rows"]:
        out.append(_row([r["model"]] + [
            "-" if g is None else f"{g:.2f} ({s:.3f})" for g, s in zip(r["gflops"], r["share"])]))
    return out + [""]


def render_policies(rows: List[Dict[str, Any]]) -> List[str]:
    out = ["| decoding | threshold | WER % | avg exit | avg compute share | RTF |",
           "|---|---|---|---|---|---|"]
    out += [_row([r["decoding"], r["threshold"] or "-", _f(r["wer"]), _f(r["avg_exit"]),
                  _f(r["avg_share"], ".3f"), _f(r["rtf"], ".4f")]) for r in rows]
    return out + [""]


def render_budgets(rows: List[Dict[str, Any]], dev: str, test: str) -> List[str]:
    out = [f"| budget (share of full encoder) | policy | threshold (chosen on {dev}) | dev WER % "
           f"| dev share | {test} WER % | {test} share |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        b = f"{r['budget']:g}"
        if r["kind"] == "fixed":
            out.append(_row([b, f"fixed exit {r['exit']}", "-", _f(r["dev_wer"]),
                             _f(r["dev_share"], ".3f"), _f(r["test_wer"]),
                             _f(r["test_share"], ".3f")]))
        elif r["threshold"] is None:
            out.append(_row([b, r["policy"], "none within budget", "-", "-", "-", "-"]))
        else:
            out.append(_row([b, r["policy"], f"{r['threshold']:g}", _f(r["dev_wer"]),
                             _f(r["dev_share"], ".3f"), _f(r["test_wer"]),
                             _f(r["test_share"], ".3f")]))
    return out + [""]


def render_study_md(data: Dict[str, Any]) -> str:
    """The markdown page of :func:`collect_study`'s numbers."""
    md: List[str] = ["# FSDD early-exit study: measured tables", ""]
    for t in data["per_exit"]:
        md += [f"## Greedy CTC WER % per exit, {t['test_set']}", ""] + render_per_exit(t)
    md += ["## Encoder compute per exit", ""] + render_costs(data["costs"])
    for exp in data["policy_exps"]:
        for p in exp["policies"]:
            md += [f"## Exit policies, {exp['name']}, {p['test_set']}", ""]
            md += render_policies(p["rows"])
        md += [f"## Best policy under a compute budget ({exp['name']})", ""]
        md += render_budgets(exp["budgets"], data["dev"], data["test"])
    if data["times"] is not None:
        md += ["## Wall times", "", "| part | seconds | minutes |", "|---|---|---|"]
        md += [f"| {t['part']} | {t['seconds']} | {t['seconds'] / 60:.1f} |" for t in data["times"]]
        md.append("")
    return "\n".join(md)


# ----------------------------------------------------------------------------- command line
def existing_dirs(paths: Sequence[Path], what: str) -> List[Path]:
    """The paths that are directories; each missing one is named in a warning."""
    found = [p for p in paths if p.is_dir()]
    for p in paths:
        if not p.is_dir():
            logging.warning("%s: no experiment dir %s (left out)", what, p)
    return found


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="markdown tables of the FSDD early-exit study")
    p.add_argument("--model", action="append", default=[], metavar="NAME=EXP_DIR[,EXP_DIR...]",
                   help="a row of the per-exit tables (repeat); several comma-separated dirs "
                        "fill one row, each exit from the dir that has it")
    p.add_argument("--policy_exp", type=Path, action="append", default=[],
                   help="policy and budget tables for this experiment (repeat)")
    p.add_argument("--test_sets", nargs="+", default=["test", "test_unseen_spk"])
    p.add_argument("--dev", default="dev")
    p.add_argument("--policies", nargs="+", default=["entropy", "max_posterior", "nbest_posterior"])
    p.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.75])
    p.add_argument("--times", type=Path, default=None, help="TSV: part<TAB>seconds")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--results", type=Path, default=None,
                   help="also write the numbers as JSON (docs/results/fsdd/study.json), with "
                        "the study's commands (--commands), the machine, commit and date")
    p.add_argument("--commands", type=Path, default=None, help="TSV: date<TAB>study command")
    p.add_argument("--equivalence", type=Path, default=None,
                   help="the interCTC model's equivalence.json (interctc_to_ee)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    models: List[Model] = []
    for m in args.model:
        name, _, paths = m.partition("=")
        dirs = existing_dirs([Path(p) for p in paths.split(",") if p], name)
        if dirs:
            models.append((name, dirs))
    policy_exps = existing_dirs(args.policy_exp, "--policy_exp")
    data = collect_study(models, policy_exps, args.test_sets, args.dev, args.policies,
                         args.budgets, args.times)
    text = render_study_md(data)
    atomic_write_text(args.out, text + "\n")
    if args.results:
        from espnet_early_exit import provenance

        provenance.write_results(args.results, {
            **provenance.record("fsdd_study"), "commands": read_commands(args.commands), **data,
            **collect_facts(models, args.equivalence)})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
