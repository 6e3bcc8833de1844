"""Choosing under a compute budget: the lowest WER whose average compute share fits.

A *point* is one way of decoding a set: a fixed exit, or an exit policy at one threshold. Its
cost is its average compute share (the encoder compute of the exits the utterances took,
relative to the full encoder: ``exit_costs.json``, see :mod:`espnet_early_exit.results`), its
quality its WER. Under a budget ``max_share``, the best point is the one with the lowest WER
among those whose share is ``<= max_share`` (up to :data:`BUDGET_TOLERANCE`, so that a share
equal to the budget up to rounding fits); ties in WER go to the smaller share, then to the
caller's tie-break. Points without a WER or without a share never fit.

- :func:`best_within_budget`: the rule, over any points (rows of
  :func:`~espnet_early_exit.results.collect_results`, dicts of a table, tuples...);
- :func:`select_policy_point`: the best threshold of one policy on one test set, from rows
  already collected;
- :func:`select_threshold`: the same from an experiment dir, as ``(threshold, wer, share)``
  (``make_results --select_threshold``);
- :func:`best_fixed_exit`: the best fixed exit on one test set within the budget;
- :func:`cheapest_within_wer`: the other way round, the cheapest point within a WER bound.

The threshold is meant to be chosen on a dev set and then applied to the test sets.

Risk-controlled thresholds (:func:`select_threshold_risk`, ``make_results --select_threshold
<set> <policy> --risk EPS --delta DELTA``): the *risk* of a threshold is the fraction of
utterances whose hypothesis differs from the last exit's. Among the thresholds decoded on the
calibration set, ordered from safe to aggressive (:func:`safe_to_aggressive`), Learn-then-Test
(Angelopoulos, Bates, Candes, Jordan and Lei, "Learn then Test: Calibrating predictive
algorithms to achieve risk control", arXiv:2110.01052, 2021), as CALM uses it for early exits
(Schuster et al., "Confident Adaptive Language Modeling", NeurIPS 2022), tests the null
hypothesis "risk > EPS" of each threshold in that order with the exact binomial tail p-value
``P[Binomial(n, EPS) <= disagreements]`` (:func:`binomial_tail_pvalue`) and stops at the first
one it cannot reject at level DELTA (fixed-sequence testing: no multiplicity correction is
needed). The last rejected threshold is returned: with probability >= 1 - DELTA over the draw
of the calibration utterances (i.i.d. with the test utterances), its risk is <= EPS.

This module imports neither torch nor espnet (the policies' direction is looked up lazily).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

from espnet_early_exit.fileio import read_table
from espnet_early_exit.results import ScoredDir, collect_results

PathLike = Union[str, os.PathLike]
T = TypeVar("T")

#: slack on ``share <= max_share``: a share that equals the budget up to float rounding fits
BUDGET_TOLERANCE = 1e-12
#: slack on ``wer <= max_wer`` (WER in %)
WER_TOLERANCE = 1e-9


def fits_budget(share: Optional[float], max_share: float) -> bool:
    """Whether an average compute share is within the budget ``max_share``."""
    return share is not None and share <= max_share + BUDGET_TOLERANCE


def best_within_budget(
    points: Iterable[T],
    max_share: float,
    wer: Callable[[T], Optional[float]],
    share: Callable[[T], Optional[float]],
    tiebreak: Optional[Callable[[T], object]] = None,
) -> Optional[T]:
    """The point with the lowest ``wer(p)`` among those with ``share(p) <= max_share``.

    Ties in WER go to the smaller share, then to the smaller ``tiebreak(p)`` (when given; else
    to the first point). Returns None when no point with a WER and a share fits.
    """
    ok = [p for p in points if wer(p) is not None and fits_budget(share(p), max_share)]
    if not ok:
        return None
    if tiebreak is None:
        return min(ok, key=lambda p: (wer(p), share(p)))
    return min(ok, key=lambda p: (wer(p), share(p), tiebreak(p)))


def row_wer(row: ScoredDir) -> Optional[float]:
    """The WER (%) of a :class:`~espnet_early_exit.results.ScoredDir`, None if not scored."""
    return None if not row.wer or row.wer.get("wer") is None else float(row.wer["wer"])


def _row_share(row: ScoredDir) -> Optional[float]:
    return row.avg_share


def select_policy_point(
    rows: Iterable[ScoredDir],
    test_set: str,
    policy: str,
    max_share: float,
    decode: Optional[str] = None,
) -> Optional[ScoredDir]:
    """The row of ``policy`` on ``test_set`` with the lowest WER within ``max_share``.

    Only rows with a threshold count. Ties in WER go to the smaller share, then the smaller
    threshold. ``decode`` names the ``decode_*`` dir; it is required only when several hold
    ``test_set`` for this policy (ValueError otherwise).
    """
    mine: List[ScoredDir] = [
        r for r in rows
        if r.test_set == test_set and r.policy == policy and r.threshold is not None
        and (decode is None or r.decode == decode)
    ]
    decodes = sorted({r.decode for r in mine})
    if len(decodes) > 1:
        raise ValueError(f"{test_set}/{policy} is in several decode dirs {decodes}; pass decode=")
    return best_within_budget(mine, max_share, row_wer, _row_share, lambda r: r.threshold)


def select_threshold(
    exp_dir: PathLike,
    test_set: str,
    policy: str,
    max_share: float,
    decode: Optional[str] = None,
) -> Optional[Tuple[float, float, float]]:
    """Threshold of ``policy`` with the lowest WER on ``test_set`` (a dev set) among those
    whose average compute share is <= ``max_share``, from the scored dirs of ``exp_dir``.

    Returns ``(threshold, wer, share)`` or None when no threshold meets the budget.
    Ties in WER go to the smaller share.  ``decode`` names the ``decode_*`` dir; it is
    required only when several hold ``test_set``.
    """
    best = select_policy_point(collect_results(exp_dir), test_set, policy, max_share, decode)
    if best is None:
        return None
    return best.threshold, float(best.wer["wer"]), float(best.avg_share)


def best_fixed_exit(
    rows: Iterable[ScoredDir], test_set: str, max_share: float
) -> Optional[ScoredDir]:
    """The fixed-exit row on ``test_set`` with the lowest WER within ``max_share`` (ties: the
    smaller share, then the lower exit)."""
    fixed = [r for r in rows if r.test_set == test_set and r.is_fixed]
    return best_within_budget(fixed, max_share, row_wer, _row_share, lambda r: r.exit)


def cheapest_within_wer(
    points: Iterable[T],
    max_wer: float,
    wer: Callable[[T], Optional[float]],
    share: Callable[[T], Optional[float]],
) -> Optional[T]:
    """The point with the lowest ``share(p)`` among those with ``wer(p) <= max_wer`` (up to
    :data:`WER_TOLERANCE`); ties in share go to the lower WER, then to the first point.
    Returns None when no point with a WER and a share is within the bound."""
    ok = [p for p in points if wer(p) is not None and share(p) is not None
          and wer(p) <= max_wer + WER_TOLERANCE]
    return min(ok, key=lambda p: (share(p), wer(p))) if ok else None


# --------------------------------------------------------------------------------------
# risk-controlled thresholds (Learn-then-Test)
# --------------------------------------------------------------------------------------
def binomial_tail_pvalue(n_errors: int, n: int, eps: float) -> float:
    """``P[Binomial(n, eps) <= n_errors]``: the exact p-value of the null "risk > eps" after
    ``n_errors`` disagreements in ``n`` i.i.d. utterances (a sum of binomial terms, in log
    space)."""
    if n < 0 or not 0 <= n_errors or not 0.0 <= eps <= 1.0:
        raise ValueError(f"binomial_tail_pvalue({n_errors}, {n}, {eps}): bad arguments")
    if n_errors >= n or eps == 0.0:
        return 1.0
    if eps == 1.0:
        return 0.0
    log_eps, log_rest = math.log(eps), math.log1p(-eps)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        + i * log_eps + (n - i) * log_rest
        for i in range(n_errors + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def fixed_sequence_test(pvalues: Sequence[float], delta: float) -> int:
    """How many of ``pvalues`` (in the fixed order) are rejected at level ``delta``: the
    length of their leading run of p-values <= delta."""
    n = 0
    for p in pvalues:
        if p > delta:
            break
        n += 1
    return n


def safe_to_aggressive(policy: str, thresholds: Iterable[float]) -> List[float]:
    """``thresholds`` of ``policy`` ordered from the one that exits latest to the one that
    exits earliest, from the policy's direction alone (never from data): descending for a
    confidence (exit when >= threshold), ascending for an uncertainty (exit when <)."""
    from espnet_early_exit.policies import POLICIES  # torch: only when needed

    if policy not in POLICIES or POLICIES[policy].threshold_range is None:
        raise ValueError(f"{policy!r} is not a policy with a threshold")
    return sorted(thresholds, reverse=POLICIES[policy].higher_is_confident)


@dataclass
class RiskSelection:
    """The outcome of :func:`ltt_select`: ``threshold`` None when not even the safest one
    was certified. ``tests`` lists ``(threshold, disagreements, p-value)`` in testing order
    (up to and including the first one not rejected)."""

    threshold: Optional[float]
    eps: float
    delta: float
    n: int
    n_disagree: Optional[int] = None
    p_value: Optional[float] = None
    tests: List[Tuple[float, int, float]] = field(default_factory=list)

    @property
    def empirical_risk(self) -> Optional[float]:
        return None if self.n_disagree is None else self.n_disagree / max(self.n, 1)

    def guarantee(self, policy: str, test_set: str) -> str:
        """One sentence stating what was certified (RESULTS.md)."""
        what = (f"with probability >= {1 - self.delta:g} over the calibration draw, at most "
                f"{100 * self.eps:g} % of utterances get a hypothesis other than the last exit's")
        if self.threshold is None:
            return (f"{policy}: no threshold certified on {test_set} ({self.n} utts) for {what}; "
                    "decode at the last exit")
        return (f"{policy} threshold {self.threshold:g} (calibrated on {test_set}, {self.n} "
                f"utts, {self.n_disagree} disagreements, p = {self.p_value:.3g}): {what} "
                "(Learn-then-Test, fixed-sequence binomial test)")

    def certificate(self, policy: str, test_set: str) -> Dict[str, object]:
        """What a results file records of the calibration: its size, disagreements,
        p-value and :meth:`guarantee`."""
        return {"n": self.n, "n_disagree": self.n_disagree, "p_value": self.p_value,
                "guarantee": self.guarantee(policy, test_set)}


def ltt_select(
    disagreements: Sequence[Tuple[float, Sequence[bool]]], eps: float, delta: float
) -> RiskSelection:
    """Learn-then-Test over ``(threshold, per-utterance disagreement flags)`` given in the
    order safe -> aggressive: the most aggressive threshold whose null "risk > eps" is
    rejected, testing in that order and stopping at the first one that is not (the
    thresholds after it are not even counted)."""
    if not 0.0 < eps < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"risk {eps} and delta {delta} must lie in (0, 1)")
    sizes = {len(flags) for _, flags in disagreements}
    if len(sizes) > 1:
        raise ValueError(f"thresholds scored on different numbers of utterances: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    tests = []
    for threshold, flags in disagreements:
        k = int(sum(bool(f) for f in flags))
        tests.append((threshold, k, binomial_tail_pvalue(k, n, eps)))
        if tests[-1][2] > delta:  # not rejected: the fixed sequence ends here
            break
    n_ok = fixed_sequence_test([p for _, _, p in tests], delta)
    out = RiskSelection(None, eps, delta, n, tests=tests)
    if n_ok:
        out.threshold, out.n_disagree, out.p_value = tests[n_ok - 1]
    return out


def _texts(path: PathLike) -> Dict[str, str]:
    return {u: " ".join(t.split()) for u, t in read_table(path, duplicates="last").items()}


def select_threshold_risk(
    exp_dir: PathLike,
    test_set: str,
    policy: str,
    eps: float,
    delta: float,
    decode: Optional[str] = None,
) -> RiskSelection:
    """:func:`ltt_select` on the decode dirs of ``exp_dir``: every ``<policy>_th<t>/text``
    of ``test_set`` compared, utterance by utterance, with the last exit's ``exit<K>/text``
    of the same decode dir (an utterance missing from a file counts as an empty text)."""
    rows = [r for r in collect_results(exp_dir)
            if r.test_set == test_set and (decode is None or r.decode == decode)]
    mine = [r for r in rows if r.policy == policy and r.threshold is not None]
    decodes = sorted({r.decode for r in mine})
    if len(decodes) != 1:
        raise ValueError(f"{test_set}/{policy}: need its thresholds in exactly one decode dir "
                         f"(found {decodes}; pass decode=)")
    fixed = [r for r in rows if r.is_fixed and r.decode == decodes[0]]
    if not fixed:
        raise ValueError(f"{decodes[0]}/{test_set}: no exit<k> dir to compare with")
    last = _texts(max(fixed, key=lambda r: r.exit).path / "text")
    by_threshold = {r.threshold: _texts(r.path / "text") for r in mine}
    utts = sorted(set(last).union(*by_threshold.values()))
    ordered = safe_to_aggressive(policy, by_threshold)
    return ltt_select(
        [(t, [by_threshold[t].get(u, "") != last.get(u, "") for u in utts]) for t in ordered],
        eps, delta,
    )
