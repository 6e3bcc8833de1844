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
- :func:`best_fixed_exit`: the best fixed exit on one test set within the budget.

The threshold is meant to be chosen on a dev set and then applied to the test sets.
This module imports neither torch nor espnet.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, List, Optional, Tuple, TypeVar, Union

from espnet_early_exit.results import ScoredDir, collect_results

PathLike = Union[str, os.PathLike]
T = TypeVar("T")

#: slack on ``share <= max_share``: a share that equals the budget up to float rounding fits
BUDGET_TOLERANCE = 1e-12


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
