#!/usr/bin/env python3
"""Issue 14's measures on one EE model, from its all-exits passes only (no decoding).

    python egs2/fsdd_digits/asr1/policy_study.py --exp_dir W/exp/asr_ee6 \
        --decode decode_asr_asr_model_valid.loss.ave --ref_dir W/dump/raw \
        --out docs/results/policies/fsdd_conv2d.json

Every policy's decode at every threshold is derived from the all-exits pass of a set
(:func:`espnet_early_exit.derive.policy_decisions`, the decoder's own rule); WER is counted as
stage 13 counts it (:func:`espnet_early_exit.scoring.score_utterances`, per utterance, summed:
the same totals), the compute share from ``exit_costs.json``. Policies: ``entropy``,
``max_posterior``, ``agreement`` (patience 1..3, ``max_edits`` 0 and 1), ``learned`` fitted
(:func:`espnet_early_exit.exit_classifier.fit_from_all_exits`, no transcript) on the dev pass
and, as an honest check, on ``test_unseen_spk``'s. Thresholds are chosen on dev, reported on
test:

1. ``target_wer``: per policy, the cheapest dev threshold whose dev WER is within
   ``--wer_factor`` of the last exit's dev WER; its test WER (relative to the last exit's) and
   test share; the target is met by a policy within ``--max_rel`` at ``<= --max_share``.
2. ``gap``: the area between a policy's test WER-vs-share curve and the oracle's over the share
   range both cover (a curve: the lowest WER within each budget,
   :func:`espnet_early_exit.selection.best_within_budget`, so it covers every budget from its
   cheapest point to the full encoder's). The oracle knows the reference: its
   point is :class:`espnet_early_exit.policies.OraclePolicy` (per utterance the lowest exit no
   worse than the last), its curve the per-utterance exits minimising errors + lambda * share
   over a lambda sweep, with that point. The best policy (smallest dev area) against the best
   of the baselines ``entropy`` / ``max_posterior``: the fraction of the gap closed.
3. ``ltt``: Learn-then-Test (:func:`espnet_early_exit.selection.ltt_select`) per policy and
   EPS, threshold calibrated on dev; then over ``--splits`` seeded re-splits of the pooled
   dev+test utterances into calibration / evaluation halves, how often the evaluation
   disagreement rate (hypothesis other than the last exit's) exceeds EPS, and the mean share.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_early_exit.derive import AllExits, load_all_exits, policy_decisions
from espnet_early_exit.exit_classifier import fit_from_all_exits
from espnet_early_exit.fileio import read_table
from espnet_early_exit.policies import OraclePolicy, get_policy
from espnet_early_exit.provenance import record, write_results
from espnet_early_exit.results import load_exit_costs
from espnet_early_exit.scoring import score_utterances
from espnet_early_exit.selection import best_within_budget, ltt_select, safe_to_aggressive

BASELINES = ("entropy", "max_posterior")


# ------------------------------------------------------------------------------ the sets
@dataclass
class SetScores:
    """One set's all-exits pass with per-utterance errors at every exit (arrays over utts)."""

    name: str
    data: AllExits
    utts: List[str]
    exits: List[int]
    errors: np.ndarray  # (n_exits, n_utts) word errors
    n_ref: np.ndarray  # (n_utts,) reference words
    disagree: np.ndarray  # (n_exits, n_utts) text differs from the last exit's
    share: np.ndarray  # (n_exits,) compute share of each exit

    def wer(self, idx: np.ndarray) -> float:
        """WER % of decoding utterance j at exit index idx[j]."""
        err = self.errors[idx, np.arange(len(self.utts))].sum()
        return 100.0 * float(err) / max(int(self.n_ref.sum()), 1)

    def mean_share(self, idx: np.ndarray) -> float:
        return float(self.share[idx].mean())


def _norm(text: str) -> str:
    return " ".join(text.split())


def load_set(name: str, root: Path, refs: Optional[Dict[str, str]],
             shares: Dict[int, float]) -> SetScores:
    """Read ``root`` (an all-exits pass) and score each exit's hypothesis per utterance."""
    data = load_all_exits(root)
    utts, exits = data.utts, data.exits
    texts = [[_norm(data.tables[k]["text"].get(u, "")) for u in utts] for k in exits]
    errors = np.zeros((len(exits), len(utts)), dtype=np.int64)
    n_ref = np.zeros(len(utts), dtype=np.int64)
    if refs is not None:
        missing = [u for u in utts if u not in refs]
        if missing:
            raise ValueError(f"{root}: {len(missing)} utterances without reference")
        for j, u in enumerate(utts):
            for i in range(len(exits)):
                res = score_utterances({u: refs[u]}, {u: texts[i][j]})
                errors[i, j], n_ref[j] = res["err"], res["n_ref"]
    disagree = np.array([[t != last for t, last in zip(row, texts[-1])] for row in texts])
    share = np.array([shares[k] for k in exits], dtype=np.float64)
    return SetScores(name, data, utts, exits, errors, n_ref, disagree, share)


def check_corpus_wer(s: SetScores, refs: Dict[str, str]) -> None:
    """Summed per-utterance errors == the corpus-level count of score_utterances."""
    for i, k in enumerate(s.exits):
        hyps = {u: s.data.tables[k]["text"].get(u, "") for u in s.utts}
        res = score_utterances({u: refs[u] for u in s.utts}, hyps)
        if res["err"] != int(s.errors[i].sum()) or res["n_ref"] != int(s.n_ref.sum()):
            raise AssertionError(f"{s.name} exit {k}: per-utterance errors do not add up")


# ------------------------------------------------------------------------------ policies
def threshold_grid(policy: str) -> List[float]:
    """The thresholds derived per policy: fixed grids, never read from data."""
    if policy == "agreement":
        return [1.0, 2.0, 3.0]
    fine = sorted({0.0, 1.0, *np.round(np.logspace(-4, 0, 161), 10).tolist(),
                   *np.round(np.linspace(0, 1, 201), 10).tolist()})
    if policy == "entropy":  # an uncertainty: small thresholds are the interesting ones
        return fine
    return sorted({round(1.0 - t, 10) for t in fine})  # confidences near 1


@dataclass
class PolicySpec:
    label: str
    name: str
    options: dict
    fit_on: Optional[str] = None  # learned: the set whose pass it was fitted on


def policy_specs(with_unseen: bool) -> List[PolicySpec]:
    specs = [PolicySpec("entropy", "entropy", {}), PolicySpec("max_posterior", "max_posterior", {}),
             PolicySpec("agreement_e0", "agreement", {"max_edits": 0}),
             PolicySpec("agreement_e1", "agreement", {"max_edits": 1}),
             PolicySpec("learned_dev", "learned", {}, "dev")]
    if with_unseen:
        specs.append(PolicySpec("learned_unseen", "learned", {}, "test_unseen_spk"))
    return specs


def build_policy(spec: PolicySpec, sets: Dict[str, SetScores], workdir: Path):
    """The policy object; a learned one fitted on ``sets[spec.fit_on]``'s pass and loaded
    by path as the decoder loads it."""
    options = dict(spec.options)
    if spec.name == "learned":
        path = workdir / f"exit_policy_{spec.fit_on}.json"
        fit_from_all_exits(sets[spec.fit_on].data).save(path)
        options["model"] = str(path)
    policy = get_policy(spec.name, **options)
    policy.prepare(None, sets["dev"].exits)
    return policy


def exit_indices(s: SetScores, policy, thresholds: Sequence[float]) -> Dict[float, np.ndarray]:
    """``{threshold: exit index per utterance}`` derived from the set's pass."""
    pos = {k: i for i, k in enumerate(s.exits)}
    out = policy_decisions(s.data, policy, thresholds)
    return {t: np.array([pos[d[u][0]] for u in s.utts]) for t, d in out.items()}


def curve(s: SetScores, chosen: Dict[float, np.ndarray]) -> List[dict]:
    """One point per threshold: WER %, mean share, mean exit, disagreement rate."""
    n = np.arange(len(s.utts))
    return [{"threshold": t, "wer": s.wer(idx), "share": s.mean_share(idx),
             "mean_exit": float(np.mean([s.exits[i] for i in idx])),
             "disagree": float(s.disagree[idx, n].mean())} for t, idx in chosen.items()]


def fixed_points(s: SetScores) -> List[dict]:
    return [{"exit": k, "wer": s.wer(np.full(len(s.utts), i)), "share": float(s.share[i])}
            for i, k in enumerate(s.exits)]


# ------------------------------------------------------------------------------ oracle
def oracle_point(s: SetScores, refs: Dict[str, str]) -> dict:
    """:class:`OraclePolicy` per utterance: the lowest exit whose WER <= the last exit's."""
    pos = {k: i for i, k in enumerate(s.exits)}
    oracle = OraclePolicy()
    idx = np.array([pos[oracle.select({k: s.data.tables[k]["text"].get(u, "")
                                       for k in s.exits}, refs[u])[0]] for u in s.utts])
    return {"wer": s.wer(idx), "share": s.mean_share(idx)}


def oracle_curve(s: SetScores, point: dict, n_lambda: int = 200) -> List[dict]:
    """Per utterance the exit minimising errors + lambda * share (ties: the lowest exit),
    over a lambda sweep, plus the oracle point: what knowing the reference allows."""
    pts = [dict(point, lam=None)]
    for lam in [0.0, *np.logspace(-3, 3, n_lambda).tolist()]:
        cost = s.errors + lam * s.share[:, None]
        idx = np.argmin(cost, axis=0)  # first minimum: the lowest exit
        pts.append({"lam": lam, "wer": s.wer(idx), "share": s.mean_share(idx)})
    return pts


# ------------------------------------------------------------------------------ measures
def envelope(points: Sequence[dict], budget: float) -> Optional[float]:
    """The lowest WER within ``budget`` (the selection rule of the budget tables)."""
    best = best_within_budget(points, budget, lambda p: p["wer"], lambda p: p["share"])
    return None if best is None else best["wer"]


def area_between(upper: Sequence[dict], lower: Sequence[dict], lo: float, hi: float) -> float:
    """Integral over [lo, hi] of envelope(upper) - envelope(lower) (step functions of the
    budget), in WER-% x share."""
    cuts = sorted({lo, hi, *(p["share"] for p in (*upper, *lower) if lo < p["share"] < hi)})
    area = 0.0
    for a, b in zip(cuts, cuts[1:]):
        area += (envelope(upper, a) - envelope(lower, a)) * (b - a)
    return area


def covered(*curves: Sequence[dict]) -> Tuple[float, float]:
    """The budgets every curve covers: from the dearest of their cheapest points to the full
    encoder (a curve is the lowest WER *within* a budget: a larger budget keeps its best)."""
    return max(min(p["share"] for p in c) for c in curves), 1.0


def cheapest_within(points: Sequence[dict], max_wer: float) -> Optional[dict]:
    """The point with the lowest share among those with WER <= max_wer (ties: lower WER)."""
    ok = [p for p in points if p["wer"] <= max_wer + 1e-9]
    return min(ok, key=lambda p: (p["share"], p["wer"])) if ok else None


def target_wer(policies: Dict[str, dict], fixed: Dict[str, List[dict]], factor: float,
               max_rel: float, max_share: float) -> dict:
    """Measure 1: per policy the cheapest dev threshold within factor x last-exit dev WER."""
    last_dev, last_test = fixed["dev"][-1]["wer"], fixed["test"][-1]["wer"]
    rows = []
    for label, p in policies.items():
        pick = cheapest_within(p["curves"]["dev"], factor * last_dev)
        if pick is None:
            rows.append({"policy": label, "threshold": None, "met": False})
            continue
        test = next(q for q in p["curves"]["test"] if q["threshold"] == pick["threshold"])
        rel = test["wer"] / last_test - 1.0 if last_test > 0 else None
        rows.append({"policy": label, "threshold": pick["threshold"], "dev_wer": pick["wer"],
                     "dev_share": pick["share"], "test_wer": test["wer"], "test_rel": rel,
                     "test_share": test["share"],
                     "met": rel is not None and rel <= max_rel + 1e-12
                     and test["share"] <= max_share + 1e-12})
    return {"wer_factor": factor, "max_rel": max_rel, "max_share": max_share,
            "last_dev_wer": last_dev, "last_test_wer": last_test, "rows": rows,
            "met": any(r["met"] for r in rows)}


def gap_closed(policies: Dict[str, dict], oracle: Dict[str, dict], target: float) -> dict:
    """Measure 2: areas to the oracle curve; best policy and best baseline chosen on dev."""
    areas = {}
    for set_name in ("dev", "test"):
        o = oracle[set_name]["curve"]
        for label, p in policies.items():
            lo, hi = covered(o, p["curves"][set_name])
            areas.setdefault(label, {})[set_name] = area_between(p["curves"][set_name], o, lo, hi)
    best = min(areas, key=lambda lab: areas[lab]["dev"])
    base = min((lab for lab in areas if lab in BASELINES), key=lambda lab: areas[lab]["dev"])
    o, pb, pa = oracle["test"]["curve"], policies[best]["curves"]["test"], \
        policies[base]["curves"]["test"]
    lo, hi = covered(o, pb, pa)
    a_best, a_base = area_between(pb, o, lo, hi), area_between(pa, o, lo, hi)
    closed = 1.0 - a_best / a_base if a_base > 0 else None
    return {"areas": areas, "best": best, "baseline": base, "range": [lo, hi],
            "area_best": a_best, "area_baseline": a_base, "fraction_closed": closed,
            "target": target, "met": closed is not None and closed >= target}


# ------------------------------------------------------------------------------ LTT
def ltt_pick(order: Sequence[float], flags: np.ndarray, eps: float, delta: float):
    """:func:`ltt_select` over thresholds ``order`` (safe -> aggressive; ``flags[i]``: the
    per-utterance disagreements of order[i]). Thresholds after the first whose empirical risk
    exceeds eps are not passed: its p-value P[Bin(n, eps) <= k] >= 1/2 > delta (k >= the
    median), so the test stops there anyway; the outcome is the same, only faster."""
    n = flags.shape[1]
    counts = flags.sum(1)
    over = np.nonzero(counts > n * eps)[0]
    stop = int(over[0]) + 1 if len(over) else len(order)
    return ltt_select([(order[i], flags[i]) for i in range(stop)], eps, delta)


def ltt_study(label: str, name: str, chosen: Dict[str, Dict[float, np.ndarray]],
              sets: Dict[str, SetScores], eps_list: Sequence[float], delta: float,
              n_splits: int, seed: int) -> List[dict]:
    """Measure 3 for one policy: the dev-calibrated threshold, and the re-split check."""
    order = safe_to_aggressive(name, chosen["dev"])
    pool_flags, pool_share = [], []
    for t in order:
        f, sh = [], []
        for set_name in ("dev", "test"):
            s, idx = sets[set_name], chosen[set_name][t]
            f.append(s.disagree[idx, np.arange(len(s.utts))])
            sh.append(s.share[idx])
        pool_flags.append(np.concatenate(f))
        pool_share.append(np.concatenate(sh))
    pool_flags, pool_share = np.array(pool_flags), np.array(pool_share)
    dev_n = len(sets["dev"].utts)
    last_share = float(sets["dev"].share[-1])
    rows = []
    for eps in eps_list:
        on_dev = ltt_pick(order, pool_flags[:, :dev_n], eps, delta)
        row = {"policy": label, "eps": eps, "delta": delta, "dev_threshold": on_dev.threshold}
        if on_dev.threshold is not None:
            i = order.index(on_dev.threshold)
            row.update(test_disagree=float(pool_flags[i, dev_n:].mean()),
                       test_share=float(pool_share[i, dev_n:].mean()))
        else:
            row.update(test_disagree=0.0, test_share=last_share)
        rng = np.random.default_rng(seed)
        n = pool_flags.shape[1]
        violations, shares = 0, []
        for _ in range(n_splits):
            perm = rng.permutation(n)
            cal, ev = perm[: n // 2], perm[n // 2:]
            sel = ltt_pick(order, pool_flags[:, cal], eps, delta)
            if sel.threshold is None:
                shares.append(last_share)
                continue
            i = order.index(sel.threshold)
            violations += bool(pool_flags[i, ev].mean() > eps)
            shares.append(float(pool_share[i, ev].mean()))
        row.update(splits=n_splits, violation_rate=violations / n_splits,
                   mean_share=float(np.mean(shares)),
                   binomial_bound=delta + 2 * math.sqrt(delta * (1 - delta) / n_splits))
        row["met"] = row["violation_rate"] <= row["binomial_bound"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ main
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--decode", required=True, help="the decode_* dir holding the sets")
    p.add_argument("--ref_dir", type=Path, required=True, help="<ref_dir>/<set>/text")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="", help="label of the model in the results")
    p.add_argument("--wer_factor", type=float, default=1.05)
    p.add_argument("--max_rel", type=float, default=0.05)
    p.add_argument("--max_share", type=float, default=0.70)
    p.add_argument("--gap_target", type=float, default=0.5)
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    return p


def load_sets(args) -> Tuple[Dict[str, SetScores], Dict[str, Dict[str, str]]]:
    shares = {k: c["share"] for k, c in load_exit_costs(args.exp_dir).items()}
    sets, refs = {}, {}
    for name in ("dev", "test", "test_unseen_spk"):
        root = args.exp_dir / args.decode / name
        if not (root / "exit1").is_dir():
            continue
        ref = read_table(args.ref_dir / name / "text", duplicates="last") \
            if name != "test_unseen_spk" else None  # the unseen set: fitted on, not scored
        sets[name] = load_set(name, root, ref, shares)
        if ref is not None:
            check_corpus_wer(sets[name], ref)
            refs[name] = ref
    return sets, refs


def run_study(args) -> dict:
    sets, refs = load_sets(args)
    specs = policy_specs("test_unseen_spk" in sets)
    policies, chosen_all = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            policy = build_policy(spec, sets, Path(tmp))
            grid = threshold_grid(spec.name)
            chosen = {n: exit_indices(sets[n], policy, grid) for n in ("dev", "test")}
            chosen_all[spec.label] = (spec.name, chosen)
            policies[spec.label] = {"policy": spec.name, "options": spec.options,
                                    "fit_on": spec.fit_on,
                                    "curves": {n: curve(sets[n], c) for n, c in chosen.items()}}
    fixed = {n: fixed_points(sets[n]) for n in ("dev", "test")}
    oracle = {}
    for n in ("dev", "test"):
        point = oracle_point(sets[n], refs[n])
        oracle[n] = {"point": point, "curve": oracle_curve(sets[n], point)}
    ltt = [row for label, (name, chosen) in chosen_all.items()
           for row in ltt_study(label, name, chosen, sets, args.eps, args.delta, args.splits,
                                args.seed)]
    return {
        "model": args.model, "exp_dir": str(args.exp_dir), "decode": args.decode,
        "sets": {n: {"n_utt": len(s.utts), "words": int(s.n_ref.sum()), "exits": s.exits}
                 for n, s in sets.items()},
        "fixed": fixed, "oracle": oracle, "policies": policies,
        "target_wer": target_wer(policies, fixed, args.wer_factor, args.max_rel,
                                 args.max_share),
        "gap": gap_closed(policies, oracle, args.gap_target),
        "ltt": {"rows": ltt, "met": all(r["met"] for r in ltt), "seed": args.seed},
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    payload = {**record("policy_study", [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
               "options": {k: v for k, v in vars(args).items()
                           if k not in ("exp_dir", "ref_dir", "out")}}
    payload.update(run_study(args))
    write_results(args.out, payload)
    t, g = payload["target_wer"], payload["gap"]
    print(f"wrote {args.out}: target 1 {'met' if t['met'] else 'NOT met'}, gap closed "
          f"{g['fraction_closed']} ({g['best']} vs {g['baseline']}), LTT "
          f"{'met' if payload['ltt']['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
