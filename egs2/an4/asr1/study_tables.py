"""The AN4 study's results (study.sh, part "tables"): raw numbers, then the page.

    python egs2/an4/asr1/study_tables.py collect --exp_dir /tmp/an4_study/exp \\
        --times /tmp/an4_study/study_times.tsv --seeds 1 2 3 --single_depths 2 4 6 \\
        --out_dir docs/results/an4
    python egs2/an4/asr1/study_tables.py render --results_dir docs/results/an4 --out docs/an4_study.md

``collect`` reads the scored decode dirs of study.sh's experiments (names below) and writes one
JSON file per table under ``--out_dir``, each headed by its provenance record
(:mod:`espnet_early_exit.provenance`):

- ``per_exit.json``: greedy CTC WER/CER per model, seed and exit on train_dev and test, and per
  exit the mean, sample standard deviation, min and max over seeds;
- ``bootstrap.json``: EE from scratch vs ESPnet interCTC at each exit on test, a paired
  bootstrap over test utterances (per-utterance word errors averaged over the seeds, resampled
  with a fixed seed): the WER difference, its 95 % interval and whether the interval excludes 0;
- ``policies.json``: the exit policies of the EE seeds, every threshold on test (means over
  seeds), and per compute budget the threshold chosen on train_dev
  (:mod:`espnet_early_exit.selection`) with its test WER, next to the best fixed exit;
- ``beam.json``: the EE model with a decoder, greedy CTC at the last exit and joint
  CTC/attention beam 10, next to ESPnet's published result (:data:`ESPNET_REFERENCE`);
- ``times.json``: wall time of every part (all tries) and the training budget (epochs,
  parameters) against ESPnet's 200 epochs;
- ``targets.json``: issue 14's targets on the EE seeds (the best policy against the last exit
  and the oracle, the gap closed, Learn-then-Test thresholds with their guarantee), the FSDD
  policy study's measures (:mod:`espnet_early_exit.policy_eval`): :mod:`study_targets` (beside
  this file).

``render`` writes every table from those files only on one page (:func:`render_study_md`, for
the study's workdir). :data:`BLOCKS` holds the tables, one function per results file; the docs
generator tools/render_docs.py renders docs/an4_study.md with them (its ``an4 <table>`` blocks).
An absent file renders as "pending", never as a number.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from espnet_early_exit.fileio import atomic_write_text
from espnet_early_exit.provenance import read_results, record, write_results
from espnet_early_exit.results import ScoredDir, collect_results, load_exit_costs
from espnet_early_exit.scoring import score_utterances
from espnet_early_exit.selection import best_fixed_exit, row_wer, select_policy_point

#: ESPnet's published AN4 result, the anchor of the page (quoted in ../shared/data/an4/SOURCE.md)
ESPNET_REFERENCE: Dict[str, Any] = {
    "test_wer": 7.6,
    "test_cer": 3.6,
    "train_dev_wer": 12.9,
    "model": "Transformer, 12 encoder + 6 decoder blocks, BPE 30, speed perturbation",
    "epochs": 200,
    "decoding": "joint CTC/attention, beam 10, CTC weight 0.3, no LM",
    "source": "ESPnet egs2/an4/asr1/README.md (espnet 0.10.5a1), "
              "https://github.com/espnet/espnet/blob/master/egs2/an4/asr1/README.md",
}
#: study.sh's default --epochs (said on the page while the results are pending)
DEFAULT_EPOCHS = 10
STUDY_COMMAND = "AN4=../shared/data/an4 egs2/an4/asr1/study.sh --workdir /tmp/an4_study"
GREEDY_DECODE = "decode_asr_"  # decode dirs of conf/decode_asr.yaml (greedy CTC)
JOINT_DECODE = "decode_joint_beam10_"  # decode dirs of conf/tuning/decode_joint_beam10.yaml
FILES = ("per_exit", "bootstrap", "policies", "beam", "times", "targets")


# ----------------------------------------------------------------------------- the experiments
def study_models(exp_dir: Path, seeds: Sequence[int], depths: Sequence[int]
                 ) -> List[Dict[str, Any]]:
    """The study's models as study.sh names their experiment dirs: key, name, {seed: dir}."""
    s1, full = seeds[0], depths[-1]

    def model(key: str, name: str, dirs: Dict[int, str]) -> Dict[str, Any]:
        return {"key": key, "name": name, "exps": {s: exp_dir / d for s, d in dirs.items()}}

    out = [model("ee", "EE from scratch (exit after every block)",
                 {s: f"asr_ee_s{s}" for s in seeds}),
           model("interctc", "ESPnet interCTC (same layers, shared norm and head)",
                 {s: f"asr_interctc_s{s}_as_ee" for s in seeds})]
    for n in depths:
        out.append(model(f"stock{n}", f"stock ESPnet single exit, {n} block{'s' * (n > 1)}",
                         {s: f"asr_stock{n}_s{s}_as_ee" for s in (seeds if n == full else [s1])}))
    out.append(model("ee_ft", f"EE fine-tuned from stock {full} blocks", {s1: "asr_ee_ft"}))
    out.append(model("ee_aed", "EE + attention decoder at the last exit",
                     {s1: f"asr_ee_aed_s{s1}"}))
    return out


def _rows(exp: Path, decode_prefix: str = GREEDY_DECODE) -> List[ScoredDir]:
    return [r for r in collect_results(exp) if r.decode.startswith(decode_prefix)] \
        if exp.is_dir() else []


def _rate(result: Optional[dict], key: str) -> Optional[float]:
    return None if not result or result.get(key) is None else float(result[key])


def spread(values: Sequence[Optional[float]]) -> Optional[Dict[str, Any]]:
    """Mean, sample standard deviation (None for one value), min and max of the values that
    are there; None when none is."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals), "n_seeds": len(vals)}


# ----------------------------------------------------------------------------- per exit
def collect_per_exit(models: List[Dict[str, Any]], sets: Sequence[str]) -> Dict[str, Any]:
    """Greedy CTC WER and CER per model, seed, set and exit, and their spread over seeds."""
    out = []
    for m in models:
        runs = {s: _rows(e) for s, e in m["exps"].items()}
        runs = {s: rows for s, rows in runs.items() if rows}
        if not runs:
            continue
        exits = sorted({r.exit for rows in runs.values() for r in rows if r.is_fixed})
        entry: Dict[str, Any] = {"key": m["key"], "name": m["name"], "seeds": sorted(runs),
                                 "exps": {str(s): m["exps"][s].name for s in sorted(runs)},
                                 "exits": exits, "wer": {}, "cer": {}, "summary": {}}
        for ts in sets:
            for metric in ("wer", "cer"):
                entry[metric][ts] = {str(k): [_fixed_rate(runs[s], ts, k, metric) for s in sorted(runs)]
                                     for k in exits}
            entry["summary"][ts] = {k: spread(v) for k, v in entry["wer"][ts].items()}
        out.append(entry)
    return {"sets": list(sets), "models": out}


def _fixed_rate(rows: List[ScoredDir], test_set: str, exit_k: int, metric: str) -> Optional[float]:
    r = next((r for r in rows if r.test_set == test_set and r.exit == exit_k), None)
    return None if r is None else _rate(getattr(r, metric), metric)


# ----------------------------------------------------------------------------- bootstrap
def read_trn(path: Path) -> Dict[str, str]:
    """``tokens<TAB>(id)`` lines of a score dir's ref.trn / hyp.trn -> {id: tokens}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text, _, rest = line.rpartition("(")
        if rest.endswith(")"):
            out[rest[:-1]] = text.strip()
    return out


def utterance_errors(score_dir: Path) -> Dict[str, Tuple[int, int]]:
    """``{utt: (word errors, reference words)}`` of one scored dir (its ``score_wer``), each
    utterance scored as stage 13 scores the set."""
    refs, hyps = read_trn(score_dir / "ref.trn"), read_trn(score_dir / "hyp.trn")
    out = {}
    for utt, ref in refs.items():
        res = score_utterances({utt: ref}, {utt: hyps.get(utt, "")}, "word")
        out[utt] = (int(res["err"]), int(res["n_ref"]))
    return out


def paired_bootstrap(err_a: Sequence[float], err_b: Sequence[float], n_ref: Sequence[int],
                     n_resamples: int = 10000, seed: int = 0, confidence: float = 0.95
                     ) -> Dict[str, Any]:
    """Paired bootstrap over utterances of the WER difference A - B (in % points): utterances
    are drawn with replacement ``n_resamples`` times (numpy generator seeded with ``seed``),
    each draw's difference is sum(err_a - err_b) / sum(n_ref). Returns the observed
    difference, the ``confidence`` percentile interval, whether it excludes 0 and the share of
    draws where A is worse than or as bad as B."""
    a, b, n = (np.asarray(x, dtype=float) for x in (err_a, err_b, n_ref))
    if not (len(a) == len(b) == len(n)) or len(a) == 0 or n.sum() <= 0:
        raise ValueError("paired_bootstrap needs the same utterances, with reference words")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_resamples, len(a)))
    diffs = 100.0 * (a - b)[idx].sum(axis=1) / n[idx].sum(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = (float(x) for x in np.percentile(diffs, [tail, 100.0 - tail]))
    return {"diff": float(100.0 * (a - b).sum() / n.sum()), "ci_low": low, "ci_high": high,
            "confidence": confidence, "excludes_zero": bool(low > 0.0 or high < 0.0),
            "share_a_not_better": float(np.mean(diffs >= 0.0)), "n_utt": int(len(a)),
            "n_resamples": n_resamples, "seed": seed}


def _seed_mean_errors(exps: Sequence[Path], test_set: str, exit_k: int
                      ) -> Optional[Dict[str, Tuple[float, int]]]:
    """{utt: (word errors averaged over the experiments, reference words)}; None when one
    experiment lacks the scored exit."""
    per_exp = []
    for exp in exps:
        r = next((r for r in _rows(exp) if r.test_set == test_set and r.exit == exit_k), None)
        if r is None or not (r.path / "score_wer" / "ref.trn").is_file():
            return None
        per_exp.append(utterance_errors(r.path / "score_wer"))
    utts = sorted(set.intersection(*(set(e) for e in per_exp)))
    return {u: (statistics.fmean(e[u][0] for e in per_exp), per_exp[0][u][1]) for u in utts}


def collect_bootstrap(models: List[Dict[str, Any]], test_set: str, n_resamples: int, seed: int,
                      a: str = "ee", b: str = "interctc") -> Dict[str, Any]:
    """EE vs interCTC at every exit both have, seeds pooled (paired by seed number)."""
    by_key = {m["key"]: m for m in models}
    seeds = sorted(set(by_key[a]["exps"]) & set(by_key[b]["exps"]))
    seeds = [s for s in seeds if by_key[a]["exps"][s].is_dir() and by_key[b]["exps"][s].is_dir()]
    out: Dict[str, Any] = {"set": test_set, "a": a, "b": b, "seeds": seeds, "exits": []}
    exits = sorted({r.exit for s in seeds for r in _rows(by_key[a]["exps"][s]) if r.is_fixed})
    for k in exits:
        ea = _seed_mean_errors([by_key[a]["exps"][s] for s in seeds], test_set, k)
        eb = _seed_mean_errors([by_key[b]["exps"][s] for s in seeds], test_set, k)
        if not ea or not eb:
            continue
        utts = sorted(set(ea) & set(eb))
        n_ref = [ea[u][1] for u in utts]
        res = paired_bootstrap([ea[u][0] for u in utts], [eb[u][0] for u in utts], n_ref,
                               n_resamples, seed)
        total = sum(n_ref)
        out["exits"].append({"exit": k, "n_ref": total,
                             "wer_a": 100.0 * sum(ea[u][0] for u in utts) / total,
                             "wer_b": 100.0 * sum(eb[u][0] for u in utts) / total, **res})
    return out


# ----------------------------------------------------------------------------- policies
def _same_point(rows: List[ScoredDir], test_set: str, point: ScoredDir) -> Optional[ScoredDir]:
    """The row of ``test_set`` decoded like ``point`` (same fixed exit, or policy and threshold)."""
    for r in rows:
        if r.test_set != test_set:
            continue
        if point.is_fixed and r.exit == point.exit:
            return r
        if (not point.is_fixed and r.policy == point.policy and r.threshold is not None
                and abs(r.threshold - point.threshold) < 1e-12):
            return r
    return None


def _budget_choice(rows: List[ScoredDir], dev: str, test: str, policy: Optional[str],
                   budget: float) -> Dict[str, Any]:
    """One seed's choice on ``dev`` under ``budget`` (a policy's threshold, or with ``policy``
    None the best fixed exit) and how it does on ``test``."""
    chosen = (best_fixed_exit(rows, dev, budget) if policy is None
              else select_policy_point(rows, dev, policy, budget))
    on_test = None if chosen is None else _same_point(rows, test, chosen)
    return {"exit": None if chosen is None else chosen.exit,
            "threshold": None if chosen is None else chosen.threshold,
            "dev_wer": None if chosen is None else row_wer(chosen),
            "dev_share": None if chosen is None else chosen.avg_share,
            "test_wer": None if on_test is None else row_wer(on_test),
            "test_share": None if on_test is None else on_test.avg_share}


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def collect_policies(ee: Dict[str, Any], dev: str, test: str, budgets: Sequence[float]
                     ) -> Dict[str, Any]:
    """The policies of every EE seed: the grid on ``test`` and the budget choices."""
    runs = {s: _rows(e) for s, e in ee["exps"].items()}
    runs = {s: rows for s, rows in runs.items() if any(not r.is_fixed for r in rows)}
    seeds = sorted(runs)
    points = sorted({(r.policy, r.threshold_str or "") for rows in runs.values() for r in rows
                     if not r.is_fixed and r.test_set == test})
    grid = []
    for pol, thr in points:
        got = [next((r for r in runs[s] if r.test_set == test and r.policy == pol
                     and (r.threshold_str or "") == thr), None) for s in seeds]
        grid.append({"policy": pol, "threshold": thr or None,
                     "test_wer": [None if r is None else row_wer(r) for r in got],
                     "avg_exit": [None if r is None else r.avg_exit for r in got],
                     "avg_share": [None if r is None else r.avg_share for r in got]})
    policies = sorted({p for p, t in points if t})
    choices = []
    for b in budgets:
        for pol in policies + [None]:
            per_seed = [{"seed": s, **_budget_choice(runs[s], dev, test, pol, b)} for s in seeds]
            choices.append({"budget": b, "policy": pol or "fixed exit", "per_seed": per_seed,
                            "test_wer_mean": _mean([c["test_wer"] for c in per_seed]),
                            "test_share_mean": _mean([c["test_share"] for c in per_seed])})
    return {"dev": dev, "test": test, "seeds": seeds, "grid": grid, "budgets": list(budgets),
            "choices": choices}


# ----------------------------------------------------------------------------- beam, times
def collect_beam(models: List[Dict[str, Any]], test_set: str) -> Dict[str, Any]:
    """Greedy CTC and joint CTC/attention beam 10 at the last exit of the EE model with a
    decoder, with ESPnet's published result."""
    aed = next(m for m in models if m["key"] == "ee_aed")
    rows: List[Dict[str, Any]] = []
    for exp in aed["exps"].values():
        for what, prefix in (("greedy CTC", GREEDY_DECODE),
                             ("joint CTC/attention, beam 10, CTC weight 0.3", JOINT_DECODE)):
            fixed = [r for r in _rows(exp, prefix) if r.test_set == test_set and r.is_fixed]
            if fixed:
                last = max(fixed, key=lambda r: r.exit)
                rows.append({"exp": exp.name, "decoding": what, "exit": last.exit,
                             "wer": _rate(last.wer, "wer"), "cer": _rate(last.cer, "cer")})
    return {"set": test_set, "rows": rows, "espnet_reference": ESPNET_REFERENCE}


def read_times(path: Optional[Path]) -> List[Dict[str, Any]]:
    """study_times.tsv (``part<TAB>seconds[<TAB>status]``), tries of a part added up."""
    parts: Dict[str, Dict[str, Any]] = {}
    if path is None or not path.is_file():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = line.split("\t")
        if len(cells) < 2 or not cells[1].strip().isdigit():
            continue
        p = parts.setdefault(cells[0], {"part": cells[0], "seconds": 0, "tries": 0, "status": ""})
        p["seconds"] += int(cells[1])
        p["tries"] += 1
        p["status"] = cells[2].strip() if len(cells) > 2 else "ok"
    return list(parts.values())


def _exp_budget(exp: Path) -> Dict[str, Any]:
    """Epochs (max_epoch of the run's config.yaml) and parameters (exit_costs.json, last exit)."""
    out: Dict[str, Any] = {"exp": exp.name, "epochs": None, "params": None}
    cfg = exp / "config.yaml"
    if cfg.is_file():
        with open(cfg, encoding="utf-8") as f:
            out["epochs"] = (yaml.safe_load(f) or {}).get("max_epoch")
    costs = load_exit_costs(exp)
    if costs:
        out["params"] = costs[max(costs)].get("params")
    return out


def collect_times(models: List[Dict[str, Any]], times: Optional[Path],
                  commands: Optional[Path] = None) -> Dict[str, Any]:
    """Wall times, the study.sh commands that ran (``date<TAB>command`` lines; a command run
    again after a stop is listed once) and each model's budget."""
    parts = read_times(times)
    runs = [p for p in parts if p["part"] == "total"]  # the wall time of study.sh itself
    parts = [p for p in parts if p["part"] != "total"]
    budget = [{"key": m["key"], "name": m["name"], **_exp_budget(e)}
              for m in models for e in list(m["exps"].values())[:1] if e.is_dir()]
    lines = commands.read_text(encoding="utf-8").splitlines() \
        if commands is not None and commands.is_file() else []
    return {"parts": parts, "total_seconds": sum(p["seconds"] for p in runs or parts),
            "commands": list(dict.fromkeys(  # each command once, in the order first run
                line.split("\t", 1)[1].strip() for line in lines if "\t" in line)),
            "models": budget, "espnet_epochs": ESPNET_REFERENCE["epochs"]}


def study_targets():
    """study_targets.py beside this file (``collect`` only): its sibling module when this file
    is ``egs2.an4.asr1.study_tables``, else (run as a script) from this file's folder."""
    if __package__:
        return importlib.import_module(f"{__package__}.study_targets")
    import study_targets as module
    return module


def collect(exp_dir: Path, seeds: Sequence[int], depths: Sequence[int], out_dir: Path,
            times: Optional[Path] = None, commands: Optional[Path] = None,
            dev: str = "train_dev", test: str = "test",
            budgets: Sequence[float] = (0.5, 0.75), n_resamples: int = 10000,
            bootstrap_seed: int = 0, argv: Optional[Sequence[str]] = None,
            data_dir: Optional[Path] = None, target_options: Optional[Dict[str, Any]] = None
            ) -> Dict[str, Path]:
    """Every results file of the study from ``exp_dir`` into ``out_dir``; returns their paths.
    ``data_dir`` holds ``<set>/text`` (default: ``dump/raw`` beside ``exp_dir``);
    ``target_options`` overrides study_targets.OPTIONS."""
    models = study_models(exp_dir, seeds, depths)
    data_dir = Path(exp_dir).parent / "dump" / "raw" if data_dir is None else Path(data_dir)
    tables = {
        "per_exit": collect_per_exit(models, [test, dev]),
        "bootstrap": collect_bootstrap(models, test, n_resamples, bootstrap_seed),
        "policies": collect_policies(models[0], dev, test, budgets),
        "beam": collect_beam(models, test),
        "times": collect_times(models, times, commands),
        "targets": study_targets().collect_targets(models[0], data_dir, GREEDY_DECODE, dev, test,
                                                   target_options),
    }
    head = record("an4_study", argv)
    return {name: write_results(out_dir / f"{name}.json", {**head, name: data})
            for name, data in tables.items()}


# ----------------------------------------------------------------------------- rendering
def _f(x: Optional[float], spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(head: Sequence[Any], rows: Sequence[Sequence[Any]]) -> List[str]:
    return [_row(head), "|" + "---|" * len(head)] + [_row(r) for r in rows] + [""]


def load(results_dir: Path, name: str) -> Optional[Dict[str, Any]]:
    """The table ``name`` of ``results_dir/<name>.json``; None when the file is absent."""
    path = Path(results_dir) / f"{name}.json"
    return read_results(path)[name] if path.is_file() else None


def _pending(what: str) -> List[str]:
    return [f"*Pending: {what} (not measured yet: the study is run in parts and has not reached this one; `{STUDY_COMMAND}` goes on where it stopped).*", ""]


def _mean_cell(s: Optional[Dict[str, Any]]) -> str:
    if s is None:
        return "-"
    if s["std"] is None:
        return _f(s["mean"])
    return f"{s['mean']:.1f} ± {s['std']:.1f}"


def render_per_exit(data: Optional[Dict[str, Any]]) -> List[str]:
    if not data or not data["models"]:
        return _pending("greedy CTC WER per exit")
    out: List[str] = []
    exits = sorted({k for m in data["models"] for k in m["exits"]})
    for ts in data["sets"]:
        out += [f"Greedy CTC WER % on {ts}, mean ± standard deviation over seeds "
                "(seeds in brackets):", ""]
        rows = [[f"{m['name']} ({', '.join(str(s) for s in m['seeds'])})"]
                + [_mean_cell(m["summary"][ts].get(str(k))) for k in exits]
                for m in data["models"]]
        out += _table(["model (seeds) \\ exit"] + exits, rows)
    out += ["Each seed (test WER %, exits in order):", ""]
    test = data["sets"][0]
    rows = [[m["name"], s] + ["; ".join(_f(m["wer"][test][str(k)][i]) for k in m["exits"])]
            for m in data["models"] for i, s in enumerate(m["seeds"])]
    return out + _table(["model", "seed", f"{test} WER % per exit"], rows)


def render_bootstrap(data: Optional[Dict[str, Any]]) -> List[str]:
    if not data or not data["exits"]:
        return _pending("paired bootstrap EE vs interCTC")
    e0 = data["exits"][0]
    out = [f"EE from scratch minus ESPnet interCTC, WER % points on {data['set']} "
           f"({e0['n_utt']} utterances, per-utterance errors averaged over seeds "
           f"{', '.join(str(s) for s in data['seeds'])}; {e0['n_resamples']} paired resamples, "
           f"seed {e0['seed']}). Negative: EE better. A difference is real when its "
           f"{e0['confidence']:.0%} interval excludes 0.", ""]
    rows = [[e["exit"], _f(e["wer_a"], ".2f"), _f(e["wer_b"], ".2f"), f"{e['diff']:+.2f}",
             f"[{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]",
             "yes" if e["excludes_zero"] else "no"] for e in data["exits"]]
    return out + _table(["exit", "EE WER %", "interCTC WER %", "difference",
                         f"{e0['confidence']:.0%} interval", "real (excludes 0)"], rows)


def render_policies(data: Optional[Dict[str, Any]]) -> List[str]:
    if not data or not data["seeds"]:
        return _pending("exit policies")
    seeds = ", ".join(str(s) for s in data["seeds"])
    out = [f"Best decoding under a compute budget (share of the full encoder's FLOPs): "
           f"threshold or fixed exit chosen on {data['dev']} for each seed, then used on "
           f"{data['test']}; means over seeds {seeds}.", ""]
    rows = []
    for c in data["choices"]:
        picks = "; ".join("none" if p["dev_wer"] is None else
                          (f"exit {p['exit']}" if p["exit"] is not None else f"{p['threshold']:g}")
                          for p in c["per_seed"])
        rows.append([f"{c['budget']:g}", c["policy"], picks, _f(c["test_wer_mean"]),
                     _f(c["test_share_mean"], ".3f")])
    out += _table(["budget", "policy", f"chosen on {data['dev']} (per seed)",
                   f"{data['test']} WER %", f"{data['test']} share"], rows)
    out += [f"Every threshold on {data['test']} (means over seeds {seeds}):", ""]
    rows = [[g["policy"], g["threshold"] or "-", _f(_mean(g["test_wer"])),
             _f(_mean(g["avg_exit"]), ".2f"), _f(_mean(g["avg_share"]), ".3f")]
            for g in data["grid"]]
    return out + _table(["policy", "threshold", "WER %", "average exit", "average share"], rows)


def render_beam(data: Optional[Dict[str, Any]]) -> List[str]:
    ref = ESPNET_REFERENCE if data is None else data["espnet_reference"]
    rows = [] if data is None else [
        [f"this study: EE + decoder, exit {r['exit']} ({r['exp']})", r["decoding"],
         _f(r["wer"]), _f(r["cer"])] for r in data["rows"]]
    rows.append([f"ESPnet: {ref['model']}, {ref['epochs']} epochs", ref["decoding"],
                 _f(ref["test_wer"]), _f(ref["test_cer"])])
    out = _table(["system", "decoding", "test WER %", "test CER %"], rows)
    out += [f"ESPnet's numbers: {ref['source']}.", ""]
    return out + (_pending("this study's rows") if data is None or not data["rows"] else [])


def render_times(data: Optional[Dict[str, Any]]) -> List[str]:
    espnet = ESPNET_REFERENCE["epochs"]
    models = [] if data is None else [m for m in data["models"] if m["epochs"]]
    if not models:
        out = [f"Planned budget: {DEFAULT_EPOCHS} epochs per model trained from scratch "
               f"(study.sh's default), {DEFAULT_EPOCHS / espnet:.0%} of the {espnet} epochs "
               "of ESPnet's published run, on a 2-core CPU.", ""]
        return out + _pending("wall times")
    out = [f"Training budget: {espnet} epochs in ESPnet's published run; here:", ""]
    out += _table(["model", "epochs", "share of ESPnet's epochs", "parameters (M)"],
                  [[m["name"], m["epochs"], f"{m['epochs'] / espnet:.1%}",
                    _f(None if m["params"] is None else m["params"] / 1e6, ".2f")]
                   for m in models])
    rows = [[p["part"], p["tries"], p["status"], p["seconds"], f"{p['seconds'] / 60:.1f}"]
            for p in data["parts"]]
    out += ["Wall time of every part (all tries added up):", ""]
    out += _table(["part", "tries", "last", "seconds", "minutes"], rows)
    out += [f"Wall time of the study: {data['total_seconds'] / 3600:.2f} h (every run of study.sh "
            "added up; trainings run two at a time, so their rows overlap), made by:", "", "```bash"]
    return out + (data["commands"] or [STUDY_COMMAND]) + ["```", ""]


def _rel_cell(rel: Optional[float]) -> str:
    return "-" if rel is None else f"{100 * rel:+.1f} %"


def _target_lines(data: Dict[str, Any]) -> List[str]:
    o, sm, n = data["options"], data["summary"], len(data["seeds"])
    tgt = sm["target"]
    rows = [[f"`{r['policy']}`", "; ".join("none" if t is None else f"{t:.4g}" for t in r["thresholds"]),
             _f(r["test_wer"], ".2f"), _rel_cell(r["test_rel"]), _f(r["test_share"], ".3f"),
             f"{r['n_met']}/{n}"] for r in tgt["rows"]]
    orc = sm["oracle"]
    rows.append(["oracle (knows the reference)", "-", _f(orc["test_wer"], ".2f"),
                 _rel_cell(orc["test_rel"]), _f(orc["test_share"], ".3f"), "-"])
    rows.append(["last exit", "-", _f(sm["last_test_wer"], ".2f"), _rel_cell(0.0), _f(1.0, ".3f"), "-"])
    best = next((r for r in tgt["rows"] if r["policy"] == tgt["best"]), None)
    goal = f"at or below {100 * o['max_rel']:+g} % relative WER of the last exit at <= {o['max_share']:g}"
    out = _table(["policy", f"threshold on {data['dev']} (per seed)", f"{data['test']} WER %",
                  "vs last exit", f"{data['test']} share",
                  f"<= {100 * o['max_rel']:+g} % at <= {o['max_share']:g} (seeds)"], rows)
    return out + [
        f"Threshold: per seed the cheapest on {data['dev']} within {o['wer_factor']:g} x the last "
        f"exit's {data['dev']} WER; WER and share: means over seeds, relative WER: of the "
        f"means. Target (at least one policy {goal} of the full encoder's compute, means over "
        f"seeds): "
        f"**{'met' if tgt['met'] else 'not met'}**"
        + ("." if best is None else f"; best policy `{best['policy']}`: "
           f"{_rel_cell(best['test_rel'])} at share {best['test_share']:.3f}, the oracle "
           f"{_rel_cell(orc['test_rel'])} at {orc['test_share']:.3f}."), ""]


def _gap_lines(data: Dict[str, Any]) -> List[str]:
    gap = data["summary"]["gap"]
    rows = [[g["seed"], f"`{g['best']}`", f"`{g['baseline']}`", f"{g['range'][0]:.3f} to {g['range'][1]:.3f}",
             _f(g["area_best"], ".3f"), _f(g["area_baseline"], ".3f"), _f(g["fraction_closed"], ".2f")]
            for g in gap["per_seed"]]
    rows.append(["mean", "", "", "", "", "", _f(gap["fraction_closed"], ".2f")])
    out = [f"The gap to the oracle on {data['test']}: the area between a policy's WER-vs-share "
           f"curve and the oracle's (WER % x share) over the shares all three cover, for the "
           f"best policy and the best of `entropy` / `max_posterior`, both chosen on "
           f"{data['dev']} (smallest area there).", ""]
    out += _table(["seed", "best policy", "best baseline", "shares", "area, best",
                   "area, baseline", "gap closed"], rows)
    return out + [f"Target: close at least {data['options']['gap_target']:g} of the gap (mean "
                  f"over seeds): **{'met' if gap['met'] else 'not met'}**.", ""]


def _ltt_lines(data: Dict[str, Any]) -> List[str]:
    ltt, first_seed = data["summary"]["ltt"], data["seeds"][0]
    o = data["options"]

    def cal(c: Dict[str, Any]) -> str:
        return ("none" if c["dev_threshold"] is None
                else f"{c['dev_threshold']:.4g} ({c['n_disagree']}/{c['n']}, p {c['p_value']:.2g})")

    rows = [[f"`{r['policy']}`", f"{r['eps']:g}", "; ".join(cal(c) for c in r["calibration"]),
             _f(r["test_disagree"], ".3f"), _f(r["test_share"], ".3f"),
             _f(r["violation_rate"], ".3f"), "yes" if r["met"] else "no"] for r in ltt]
    out = [f"Risk-controlled thresholds (Learn-then-Test, `selection.ltt_select`): per policy and "
           f"EPS the most aggressive threshold certified on {data['dev']} (disagreements with "
           f"the last exit / utterances, p-value; none: not even the safest one), its "
           f"{data['test']} disagreement and share (means over seeds), and over {ltt[0]['splits']} "
           f"re-splits of the pooled {data['dev']} + {data['test']} utterances how often the "
           f"held-out disagreement exceeds EPS (mean over seeds; the guarantee holds when it is "
           f"<= DELTA {o['delta']:g} + {ltt[0]['binomial_bound'] - o['delta']:.3f} of binomial "
           f"noise in every seed).", ""]
    out += _table(["policy", "EPS", f"threshold on {data['dev']} (per seed)",
                   f"{data['test']} disagreement", f"{data['test']} share", "violation rate",
                   "holds"], rows)
    best = data["summary"]["target"]["best"]
    said = [r["guarantees"][0] for r in ltt if r["policy"] == best]
    return out + ([f"The guarantee as RESULTS.md states it (seed {first_seed}, `{best}`):", ""]
                  + [f"- {g}" for g in said] + [""] if said else [])


def render_targets(data: Optional[Dict[str, Any]]) -> List[str]:
    if not data or not data["seeds"]:
        out = _pending("issue 14's targets (policies against the last exit and the oracle, "
                       "Learn-then-Test)")
        return out + ([f"Seed {s}: {why}." for s, why in data["missing"].items()] + [""]
                      if data and data["missing"] else [])
    seeds = f"seed{'s' * (len(data['seeds']) > 1)} " + ", ".join(str(s) for s in data["seeds"])
    out = [f"EE from scratch, {seeds}: every policy derived from the all-exits passes of "
           f"{data['dev']} and {data['test']} on the threshold grids of the FSDD policy study "
           f"(`espnet_early_exit/policy_eval.py`, its measures); `learned` "
           f"fitted on the all-exits pass of {data['fit_set']} without its transcripts."
           + "".join(f" Seed {s} pending: {why}." for s, why in data["missing"].items()), ""]
    return out + _target_lines(data) + _gap_lines(data) + _ltt_lines(data)


#: the page's generated tables: results file -> its renderer (for the docs generator)
BLOCKS: Dict[str, Callable[[Optional[Dict[str, Any]]], List[str]]] = {
    "per_exit": render_per_exit, "bootstrap": render_bootstrap, "policies": render_policies,
    "beam": render_beam, "times": render_times, "targets": render_targets}

SECTIONS = (
    ("times", "Budget: how far from ESPnet's run"),
    ("beam", "Next to ESPnet's published result"),
    ("per_exit", "WER at every exit: EE, interCTC, single-exit models (a)-(d)"),
    ("bootstrap", "Which EE vs interCTC differences are real"),
    ("policies", "Exit policies, thresholds chosen on train_dev (e)"),
    ("targets", "Issue 14's targets: policies with a guarantee (e)"),
)


def render_study_md(results_dir: Path) -> str:
    """Every table of the results files in ``results_dir`` on one page (absent: pending); the
    docs page docs/an4_study.md renders the same tables as blocks of tools/render_docs.py."""
    md = ["# AN4 early-exit study: measured tables", "",
          f"From `{results_dir}`; greedy CTC decoding unless said otherwise.", ""]
    for name, title in SECTIONS:
        md += [f"## {title}", ""] + BLOCKS[name](load(results_dir, name))
    return "\n".join(md).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- command line
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="results files and page of the AN4 study")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="experiments -> <out_dir>/*.json")
    c.add_argument("--exp_dir", type=Path, required=True)
    c.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    c.add_argument("--single_depths", type=int, nargs="+", default=[2, 4, 6])
    c.add_argument("--times", type=Path, default=None, help="study_times.tsv")
    c.add_argument("--commands", type=Path, default=None, help="study_commands.tsv")
    c.add_argument("--dev", default="train_dev")
    c.add_argument("--test", default="test")
    c.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.75])
    c.add_argument("--n_resamples", type=int, default=10000)
    c.add_argument("--bootstrap_seed", type=int, default=0)
    c.add_argument("--data_dir", type=Path, default=None,
                   help="<set>/text of the sets (default: dump/raw beside --exp_dir)")
    c.add_argument("--ltt_splits", type=int, default=None,
                   help="re-splits of the Learn-then-Test check (default: study_targets.OPTIONS)")
    c.add_argument("--out_dir", type=Path, required=True)
    r = sub.add_parser("render", help="<results_dir>/*.json -> one markdown page of every table")
    r.add_argument("--results_dir", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if args.command == "collect":
        paths = collect(args.exp_dir, args.seeds, args.single_depths, args.out_dir, args.times,
                        args.commands, args.dev, args.test, args.budgets, args.n_resamples, args.bootstrap_seed,
                        argv=sys.argv if argv is None else [__file__] + list(argv),
                        data_dir=args.data_dir, target_options=None if args.ltt_splits is None
                        else {"splits": args.ltt_splits})
        for p in paths.values():
            logging.info("wrote %s", p)
    else:
        atomic_write_text(args.out, render_study_md(args.results_dir))
        logging.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
