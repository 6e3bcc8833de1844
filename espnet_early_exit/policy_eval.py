"""Exit policies measured from all-exits passes only (no decoding): issue 14's measures.

A study gives a *dev* set (thresholds are chosen on it) and a *test* set (they are reported on
it), each an all-exits pass with its references (:func:`load_sets`, the set names are the
caller's), and the policies to measure (:class:`PolicySpec`; a ``learned`` one with the path of
its fit: which pass it was fitted on is the caller's choice). :func:`measure` then derives
every policy's decode at every threshold of its fixed grid (:func:`threshold_grid`) from the
passes (:func:`espnet_early_exit.derive.policy_decisions`, the decoder's own rule); WER is
counted as stage 13 counts it (:func:`espnet_early_exit.scoring.score_utterances`, per
utterance, summed: the same totals), the compute share from ``exit_costs.json``:

1. ``target_wer`` (:func:`target_wer`): per policy, the cheapest dev threshold whose dev WER is
   within ``wer_factor`` of the last exit's dev WER
   (:func:`espnet_early_exit.selection.cheapest_within_wer`); its test WER (relative to the
   last exit's) and test share; the target is met by a policy within ``max_rel`` at
   ``<= max_share``.
2. ``gap`` (:func:`gap_closed`): the area between a policy's test WER-vs-share curve and the
   oracle's over the share range both cover (a curve: the lowest WER within each budget,
   :func:`espnet_early_exit.selection.best_within_budget`, so it covers every budget from its
   cheapest point to the full encoder's). The oracle knows the reference: its point is
   :class:`espnet_early_exit.policies.OraclePolicy` (per utterance the lowest exit no worse than
   the last), its curve the per-utterance exits minimising errors + lambda * share over a lambda
   sweep, with that point. The best policy (smallest dev area) against the best of the
   baselines :data:`BASELINES`: the fraction of the gap closed.
3. ``ltt`` (:func:`ltt_study`): Learn-then-Test (:func:`espnet_early_exit.selection.ltt_select`)
   per policy and EPS, threshold calibrated on dev (with its certificate); then over ``splits``
   seeded re-splits of the pooled dev+test utterances into calibration / evaluation halves, how
   often the evaluation disagreement rate (hypothesis other than the last exit's) exceeds EPS,
   and the mean share.

The measures' options (:func:`measure`'s ``opts``): ``wer_factor``, ``max_rel``, ``max_share``,
``gap_target``, ``eps`` (a list), ``delta``, ``splits``, ``seed``. Callers: the FSDD policy
study (``egs2/fsdd_digits/asr1/policy_study.py``) and the AN4 study's targets
(``egs2/an4/asr1/study_targets.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_early_exit.derive import AllExits, load_all_exits, policy_decisions
from espnet_early_exit.fileio import read_table
from espnet_early_exit.policies import OraclePolicy, get_policy
from espnet_early_exit.results import load_exit_costs
from espnet_early_exit.scoring import score_utterances
from espnet_early_exit.selection import (
    RiskSelection,
    best_within_budget,
    cheapest_within_wer,
    ltt_select,
    safe_to_aggressive,
)

#: the baselines the best policy is measured against (:func:`gap_closed`)
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
    refs: Optional[Dict[str, str]] = None  # None: not scored (errors and n_ref are 0)

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
    """Read ``root`` (an all-exits pass) and score each exit's hypothesis per utterance
    against ``refs`` (None: not scored); checked against the corpus-level count."""
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
    s = SetScores(name, data, utts, exits, errors, n_ref, disagree, share, refs)
    if refs is not None:
        check_corpus_wer(s)
    return s


def check_corpus_wer(s: SetScores) -> None:
    """Summed per-utterance errors == the corpus-level count of score_utterances."""
    for i, k in enumerate(s.exits):
        hyps = {u: s.data.tables[k]["text"].get(u, "") for u in s.utts}
        res = score_utterances({u: s.refs[u] for u in s.utts}, hyps)
        if res["err"] != int(s.errors[i].sum()) or res["n_ref"] != int(s.n_ref.sum()):
            raise AssertionError(f"{s.name} exit {k}: per-utterance errors do not add up")


def load_sets(exp_dir: Path, decode_dir: Path, ref_dir: Path, names: Sequence[str],
              unscored: Collection[str] = ()) -> Dict[str, SetScores]:
    """``{name: SetScores}`` of the all-exits passes ``<decode_dir>/<name>`` that exist (in the
    order of ``names``), scored against ``<ref_dir>/<name>/text`` unless in ``unscored``;
    compute shares from ``<exp_dir>/exit_costs.json``."""
    shares = {k: c["share"] for k, c in load_exit_costs(exp_dir).items()}
    sets = {}
    for name in names:
        root = Path(decode_dir) / name
        if not (root / "exit1").is_dir():
            continue
        refs = None if name in unscored else \
            read_table(Path(ref_dir) / name / "text", duplicates="last")
        sets[name] = load_set(name, root, refs, shares)
    return sets


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
    """One measured policy: its label in the results, the policy and its options; a
    ``learned`` one with ``model``, the path of its fit, and ``fit_on``, the set it was
    fitted on (recorded only)."""

    label: str
    name: str
    options: dict
    fit_on: Optional[str] = None
    model: Optional[str] = None


def build_policy(spec: PolicySpec, exits: Sequence[int]):
    """The policy object, a learned one loaded by path as the decoder loads it."""
    options = dict(spec.options) if spec.model is None else dict(spec.options, model=spec.model)
    policy = get_policy(spec.name, **options)
    policy.prepare(None, exits)
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
def oracle_point(s: SetScores) -> dict:
    """:class:`OraclePolicy` per utterance: the lowest exit whose WER <= the last exit's."""
    pos = {k: i for i, k in enumerate(s.exits)}
    oracle = OraclePolicy()
    idx = np.array([pos[oracle.select({k: s.data.tables[k]["text"].get(u, "")
                                       for k in s.exits}, s.refs[u])[0]] for u in s.utts])
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
    best = best_within_budget(points, budget, itemgetter("wer"), itemgetter("share"))
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


def target_wer(policies: Dict[str, dict], fixed: Dict[str, List[dict]], factor: float,
               max_rel: float, max_share: float) -> dict:
    """Measure 1: per policy the cheapest dev threshold within factor x last-exit dev WER."""
    last_dev, last_test = fixed["dev"][-1]["wer"], fixed["test"][-1]["wer"]
    rows = []
    for label, p in policies.items():
        pick = cheapest_within_wer(p["curves"]["dev"], factor * last_dev, itemgetter("wer"),
                                   itemgetter("share"))
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
def ltt_study(label: str, name: str, chosen: Dict[str, Dict[float, np.ndarray]],
              sets: Dict[str, SetScores], eps_list: Sequence[float], delta: float,
              n_splits: int, seed: int) -> List[Tuple[dict, RiskSelection]]:
    """Measure 3 for one policy, per EPS: the row (the dev-calibrated threshold, its test
    disagreement and share, the re-split check) and the dev calibration itself (its
    certificate: :meth:`~espnet_early_exit.selection.RiskSelection.certificate`)."""
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
    out = []
    for eps in eps_list:
        on_dev = ltt_select(list(zip(order, pool_flags[:, :dev_n])), eps, delta)
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
            sel = ltt_select(list(zip(order, pool_flags[:, cal])), eps, delta)
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
        out.append((row, on_dev))
    return out


# ------------------------------------------------------------------------------ all of it
def measure(dev: SetScores, test: SetScores, specs: Sequence[PolicySpec],
            opts: Dict[str, Any]) -> Dict[str, Any]:
    """Every measure of every policy in ``specs`` (thresholds chosen on ``dev``, reported on
    ``test``; both scored): ``fixed``, ``oracle`` (point and curve), ``policies`` (curves),
    ``target_wer``, ``gap``, each keyed by role ``dev`` / ``test`` where per set, and ``ltt``:
    ``(row, dev calibration)`` per policy and EPS (:func:`ltt_study`)."""
    sets = {"dev": dev, "test": test}
    policies, chosen = {}, {}
    for spec in specs:
        policy = build_policy(spec, dev.exits)
        grid = threshold_grid(spec.name)
        chosen[spec.label] = {r: exit_indices(s, policy, grid) for r, s in sets.items()}
        policies[spec.label] = {"policy": spec.name, "options": spec.options,
                                "fit_on": spec.fit_on,
                                "curves": {r: curve(sets[r], c)
                                           for r, c in chosen[spec.label].items()}}
    fixed = {r: fixed_points(s) for r, s in sets.items()}
    oracle = {}
    for r, s in sets.items():
        point = oracle_point(s)
        oracle[r] = {"point": point, "curve": oracle_curve(s, point)}
    ltt = [pair for spec in specs
           for pair in ltt_study(spec.label, spec.name, chosen[spec.label], sets, opts["eps"],
                                 opts["delta"], opts["splits"], opts["seed"])]
    return {"fixed": fixed, "oracle": oracle, "policies": policies,
            "target_wer": target_wer(policies, fixed, opts["wer_factor"], opts["max_rel"],
                                     opts["max_share"]),
            "gap": gap_closed(policies, oracle, opts["gap_target"]), "ltt": ltt}
