"""Issue 14's targets on the AN4 study's EE models: ``targets.json`` of ``study_tables.py collect``.

For every EE-from-scratch seed that has its greedy all-exits passes of ``train_dev`` and
``test`` (``exit<k>/features`` recorded), ``exit_costs.json`` and the ``learned`` policy's fit
beside the model (``exit_policy.json``: study.sh's part ``policies`` fits it with
``python -m espnet_early_exit.bin.fit_exit_policy`` on the all-exits pass of
:data:`FIT_SET`, a fixed subset of the training audio, reading no transcript; neither
``train_dev`` nor ``test``), the measures of the FSDD policy study
(:func:`espnet_early_exit.policy_eval.measure`, their one home): every policy of :data:`SPECS`
derived from the passes on its fixed threshold grids (the decoder's own rule, no decoding),
thresholds chosen on ``train_dev``, reported on ``test``:

- ``target_wer``: per policy the cheapest ``train_dev`` threshold within ``wer_factor`` x the
  last exit's ``train_dev`` WER, its ``test`` WER relative to the last exit's and its ``test``
  compute share (met: within ``max_rel`` at ``<= max_share``);
- ``oracle``: per utterance the lowest exit no worse than the last (it knows the reference);
- ``gap``: the fraction of the area between the best baseline's WER-vs-share curve and the
  oracle's that the best policy closes (both chosen on ``train_dev``);
- ``ltt``: the Learn-then-Test threshold calibrated on ``train_dev`` per policy and EPS, with its
  guarantee (:meth:`espnet_early_exit.selection.RiskSelection.guarantee`), its ``test``
  disagreement with the last exit and share, and the violation rate over seeded re-splits of
  the pooled ``train_dev`` + ``test`` utterances.

:func:`collect_targets` adds the means over seeds (``summary``). A seed that lacks something is
listed under ``missing`` (the page says "pending" until one seed is complete).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from espnet_early_exit import policy_eval as pe
from espnet_early_exit.derive import load_all_exits
from espnet_early_exit.exit_classifier import DEFAULT_NAME

#: the untranscribed set the ``learned`` policy is fitted on (study.sh's ``fit_set``)
FIT_SET = "train_nodev_fit"
#: the policies measured: label, policy, options (``learned``: the fit beside the model)
SPECS: Tuple[Tuple[str, str, Dict[str, Any]], ...] = (
    ("entropy", "entropy", {}), ("max_posterior", "max_posterior", {}),
    ("agreement_e0", "agreement", {"max_edits": 0}), ("agreement_e1", "agreement", {"max_edits": 1}),
    ("learned", "learned", {}))
#: issue 14's targets and the FSDD study's settings (policy_study.py's defaults)
OPTIONS: Dict[str, Any] = {"wer_factor": 1.05, "max_rel": 0.05, "max_share": 0.70,
                           "gap_target": 0.5, "eps": [0.02, 0.05, 0.1], "delta": 0.1,
                           "splits": 200, "seed": 0}


def _passes(exp: Path, decode_prefix: str, sets: Sequence[str]) -> Optional[Path]:
    """The first ``decode_*`` dir of ``exp`` holding an all-exits pass of each set."""
    for dec in sorted(exp.glob(decode_prefix + "*")):
        if all((dec / s / "exit1").is_dir() for s in sets):
            return dec
    return None


def missing_input(exp: Path, decode_prefix: str, data_dir: Path, sets: Sequence[str]) -> Optional[str]:
    """What a seed still lacks for its measures (None: nothing)."""
    dec = _passes(exp, decode_prefix, sets)
    needs = [(exp / "exit_costs.json", "exit_costs.json (stage 13)"),
             (exp / DEFAULT_NAME, f"{DEFAULT_NAME} (part policies: the fit on {FIT_SET})")]
    needs += [(data_dir / s / "text", f"{data_dir / s}/text") for s in sets]
    for path, what in needs:
        if not path.is_file():
            return f"no {what}"
    if dec is None:
        return f"no all-exits pass of {' and '.join(sets)} (part ee)"
    if not all(load_all_exits(dec / s).has_features() for s in sets):
        return f"{dec.name}: a pass without exit<k>/features"
    return None


def seed_measures(exp: Path, decode: Path, data_dir: Path, dev: str, test: str,
                  opts: Dict[str, Any]) -> Dict[str, Any]:
    """The FSDD policy study's measures of one EE model (sets dev and test; ``learned``: the
    fit beside the model, on :data:`FIT_SET`), each LTT row with its dev certificate."""
    sets = pe.load_sets(exp, decode, data_dir, (dev, test))
    fit = str(exp / DEFAULT_NAME)
    specs = [pe.PolicySpec(label, name, options, *((FIT_SET, fit) if name == "learned" else ()))
             for label, name, options in SPECS]
    m = pe.measure(sets[dev], sets[test], specs, opts)
    return {"exp": exp.name, "decode": decode.name,
            "n_utt": {n: len(s.utts) for n, s in sets.items()},
            "fixed": {dev: m["fixed"]["dev"], test: m["fixed"]["test"]},
            "oracle": {dev: m["oracle"]["dev"]["point"], test: m["oracle"]["test"]["point"]},
            "target_wer": m["target_wer"], "gap": m["gap"],
            "ltt": [dict(row, **sel.certificate(row["policy"], dev)) for row, sel in m["ltt"]]}


# ----------------------------------------------------------------------------- over seeds
def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def _rel(wer: Optional[float], last: Optional[float]) -> Optional[float]:
    return None if wer is None or not last else wer / last - 1.0


def summarize(per_seed: List[Dict[str, Any]], opts: Dict[str, Any], test: str) -> Dict[str, Any]:
    """Means over seeds: every policy's target row, the oracle, the gap closed, LTT. A
    relative WER is that of the means (mean WER / mean WER of the last exit - 1)."""
    last = _mean([m["fixed"][test][-1]["wer"] for m in per_seed])
    target = []
    for label, _, _ in SPECS:
        rows = [next(r for r in m["target_wer"]["rows"] if r["policy"] == label) for m in per_seed]
        row = {"policy": label, "thresholds": [r["threshold"] for r in rows],
               "test_wer": _mean([r.get("test_wer") for r in rows]),
               "test_share": _mean([r.get("test_share") for r in rows]),
               "n_met": sum(bool(r["met"]) for r in rows)}
        row["test_rel"] = _rel(row["test_wer"], last)
        row["met"] = (row["test_rel"] is not None and row["test_rel"] <= opts["max_rel"] + 1e-12
                      and row["test_share"] <= opts["max_share"] + 1e-12)
        target.append(row)
    scored = [r for r in target if r["test_rel"] is not None]
    met = [r for r in scored if r["met"]]
    best = (min(met, key=lambda r: r["test_share"]) if met
            else min(scored, key=lambda r: r["test_rel"]) if scored else None)
    oracle = {k: _mean([m["oracle"][test][k] for m in per_seed]) for k in ("wer", "share")}
    gaps = [m["gap"]["fraction_closed"] for m in per_seed]
    ltt = []
    for first in per_seed[0]["ltt"]:
        rows = [next(r for r in m["ltt"] if (r["policy"], r["eps"]) == (first["policy"], first["eps"]))
                for m in per_seed]
        ltt.append({"policy": first["policy"], "eps": first["eps"], "delta": first["delta"],
                    "calibration": [{k: r[k] for k in ("dev_threshold", "n", "n_disagree",
                                                       "p_value")} for r in rows],
                    "test_disagree": _mean([r["test_disagree"] for r in rows]),
                    "test_share": _mean([r["test_share"] for r in rows]),
                    "violation_rate": _mean([r["violation_rate"] for r in rows]),
                    "binomial_bound": first["binomial_bound"], "splits": first["splits"],
                    "met": all(r["met"] for r in rows),
                    "guarantees": [r["guarantee"] for r in rows]})
    mean_gap = _mean(gaps)
    return {"last_test_wer": last,
            "target": {"rows": target, "met": bool(met),
                       "best": None if best is None else best["policy"]},
            "oracle": {"test_wer": oracle["wer"], "test_rel": _rel(oracle["wer"], last),
                       "test_share": oracle["share"]},
            "gap": {"per_seed": [{"seed": m["seed"], **{k: m["gap"][k] for k in (
                "best", "baseline", "range", "area_best", "area_baseline", "fraction_closed")}}
                for m in per_seed],
                "fraction_closed": mean_gap,
                "met": mean_gap is not None and mean_gap >= opts["gap_target"]},
            "ltt": ltt}


def collect_targets(ee: Dict[str, Any], data_dir: Path, decode_prefix: str, dev: str, test: str,
                    options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The measures of every complete EE seed (``ee``: study_tables' model entry) and their
    means over seeds; ``options`` overrides :data:`OPTIONS`."""
    opts = {**OPTIONS, **(options or {})}
    per_seed, missing = [], {}
    for s, exp in sorted(ee["exps"].items()):
        why = missing_input(exp, decode_prefix, data_dir, (dev, test)) if exp.is_dir() \
            else "not trained yet"
        if why:
            missing[str(s)] = why
            continue
        per_seed.append({"seed": s, **seed_measures(exp, _passes(exp, decode_prefix, (dev, test)),
                                                    data_dir, dev, test, opts)})
    return {"dev": dev, "test": test, "fit_set": FIT_SET, "options": opts,
            "policies": [label for label, _, _ in SPECS], "seeds": [m["seed"] for m in per_seed],
            "missing": missing, "per_seed": per_seed,
            "summary": summarize(per_seed, opts, test) if per_seed else None}
