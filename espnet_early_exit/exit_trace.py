"""What a policy has seen of one utterance on its way through the exits.

Most exit policies look at one exit at a time (a confidence of its CTC posteriors). The
``agreement`` and ``learned`` policies also look back: whether the greedy CTC hypothesis has
stopped changing from exit to exit. For them the decoder keeps, per utterance, a *trace*: one
:class:`ExitView` per exit evaluated so far, built from the frame statistics of the exit's CTC
logits (:mod:`espnet_early_exit.frame_stats`) that the decoder computes anyway, so a view costs
no more than the greedy search (argmax, repeats collapsed, blanks dropped) and a token edit
distance to the previous exit's hypothesis.

:class:`ExitTracker` holds the traces of a batch and computes each row's confidence at an exit:
``policy.confidence_from_trace(trace)`` for a policy with ``uses_trace`` (the view of the
current exit last), ``policy.confidence_from_logits`` otherwise. The views' numbers
(:data:`FEATURES`) are also what the all-exits pass records per exit (``exit<k>/features``) and
what the ``learned`` policy is fitted on.

This module does not import :mod:`espnet_early_exit.policies` (which imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from espnet_early_exit.frame_stats import FrameStats, frame_stats

__all__ = [
    "ExitView",
    "ExitTracker",
    "FEATURES",
    "edit_distance",
    "exit_view",
    "agreement_streak",
    "format_features",
    "parse_features",
]

#: the numbers of an :class:`ExitView`, in this order (``exit<k>/features`` of an all-exits pass)
FEATURES = (
    "index",  # position of the exit among the model's exits (0 = first)
    "n_frames",
    "entropy",  # mean frame entropy / log V (the entropy policy's number)
    "max_posterior",  # mean max posterior over non-blank frames (the max_posterior policy's)
    "blank_ratio",  # share of frames whose best token is blank
    "hyp_len",  # tokens in the greedy hypothesis
    "edits_prev",  # token edit distance to the previous exit's greedy hypothesis (-1: none)
    "streak",  # exits in a row (ending here) whose greedy hypothesis equals the one before
)


def mean_entropy_share(entropy: torch.Tensor, vocab_size: int) -> float:
    """Mean frame entropy (nats) over its maximum log V, clamped to [0, 1] (rounding)."""
    value = float(entropy.mean()) / math.log(vocab_size)
    return min(max(value, 0.0), 1.0)


def mean_over_nonblank(values: torch.Tensor, best_token: torch.Tensor, blank_id: int) -> float:
    """Mean of per-frame values over the frames whose best token is not blank (all if none)."""
    nonblank = best_token != blank_id
    if bool(nonblank.any()):
        values = values[nonblank]
    return float(values.mean())


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance between two token sequences (unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class ExitView:
    """One evaluated exit of one utterance (see :data:`FEATURES`)."""

    exit: int
    index: int
    tokens: Optional[Tuple[int, ...]]  # greedy CTC hypothesis (None: rebuilt from features)
    hyp_len: int
    n_frames: int
    entropy: float
    max_posterior: float
    blank_ratio: float
    edits_prev: Optional[int]  # None at the first evaluated exit
    streak: int

    def features(self) -> Dict[str, float]:
        values = {
            "index": self.index, "n_frames": self.n_frames, "entropy": self.entropy,
            "max_posterior": self.max_posterior, "blank_ratio": self.blank_ratio,
            "hyp_len": self.hyp_len,
            "edits_prev": -1 if self.edits_prev is None else self.edits_prev,
            "streak": self.streak,
        }
        return {name: float(values[name]) for name in FEATURES}

    @classmethod
    def from_features(cls, k: int, features: Dict[str, float]) -> "ExitView":
        """The view of exit k recorded as :data:`FEATURES` (without its tokens)."""
        missing = [name for name in FEATURES if name not in features]
        if missing:
            raise ValueError(f"exit {k}: features {missing} missing")
        edits = int(features["edits_prev"])
        return cls(
            exit=k, index=int(features["index"]), tokens=None,
            hyp_len=int(features["hyp_len"]), n_frames=int(features["n_frames"]),
            entropy=features["entropy"], max_posterior=features["max_posterior"],
            blank_ratio=features["blank_ratio"], edits_prev=None if edits < 0 else edits,
            streak=int(features["streak"]),
        )


def agreement_streak(edits_prev: Optional[int], prev: Optional["ExitView"]) -> int:
    """Exits in a row ending here whose hypothesis equals the previous one's."""
    if edits_prev != 0 or prev is None:
        return 0
    return prev.streak + 1


def exit_view(
    stats: FrameStats, k: int, index: int, blank_id: int, prev: Optional[ExitView] = None
) -> ExitView:
    """The view of exit k from the frame statistics of its CTC logits (T frames of one
    utterance); ``prev``: the view of the exit evaluated before it."""
    ids = stats.argmax
    tokens = tuple(int(t) for t in torch.unique_consecutive(ids) if int(t) != blank_id)
    entropy = stats.entropy()
    entropy = torch.nan_to_num(entropy, nan=0.0, posinf=math.log(stats.vocab_size))
    edits = None if prev is None else edit_distance(prev.tokens, tokens)
    return ExitView(
        exit=k,
        index=index,
        tokens=tokens,
        hyp_len=len(tokens),
        n_frames=int(ids.numel()),
        entropy=mean_entropy_share(entropy, stats.vocab_size),
        max_posterior=mean_over_nonblank(stats.max_posterior(), ids, blank_id),
        blank_ratio=float((ids == blank_id).float().mean()),
        edits_prev=edits,
        streak=agreement_streak(edits, prev),
    )


def format_features(features: Dict[str, float]) -> str:
    """``"index:0 n_frames:12 ..."`` (the ``features`` file's format)."""
    return " ".join(f"{k}:{v:.6g}" for k, v in features.items())


def parse_features(value: str) -> Dict[str, float]:
    out = {}
    for item in value.split():
        name, number = item.split(":")
        out[name] = float(number)
    return out


class ExitTracker:
    """The traces of the utterances of one batch and their policy confidences, exit by exit.

    Args:
        policy: the exit policy (``uses_trace``, ``uses_frame_stats``, ``confidence_from_trace``
            / ``confidence_from_logits``).
        n_utt: utterances in the batch.
        exit_layers: the model's exits (a view's ``index`` is the exit's position in it).
        blank_id: the CTC blank.

    A policy with ``uses_trace`` gets each row's view of the exit appended to its trace by
    :meth:`confidences`; :meth:`observe` records views for any policy (the all-exits pass
    records the :data:`FEATURES` of every exit); a view is recorded once per exit.
    """

    def __init__(self, policy, n_utt: int, exit_layers: Sequence[int], blank_id: int):
        self.policy = policy
        self.exit_layers = list(exit_layers)
        self.blank_id = blank_id
        self.traces: List[List[ExitView]] = [[] for _ in range(n_utt)]

    def observe(self, k: int, stats: FrameStats, lengths: torch.Tensor,
                rows: Optional[Sequence[int]] = None) -> None:
        """Append exit k's view to the trace of each batch row (``rows``: the utterance
        index of each row; default: row b is utterance b), from the statistics of all the
        row's frames; a row that has a view of exit k already keeps it."""
        index = self.exit_layers.index(k)
        for row in range(int(lengths.size(0))):
            trace = self.traces[row if rows is None else rows[row]]
            if trace and trace[-1].exit == k:
                continue
            view = exit_view(stats.frames(row, int(lengths[row])), k, index, self.blank_id,
                             trace[-1] if trace else None)
            trace.append(view)

    def confidences(
        self,
        k: int,
        logits: torch.Tensor,
        lengths: torch.Tensor,
        stats: Optional[FrameStats] = None,
        rows: Optional[Sequence[int]] = None,
    ) -> Tuple[List[float], Optional[FrameStats]]:
        """The policy's confidence at exit k of each row of (B, T, V) CTC logits (its first
        lengths[b] frames), and the frame statistics used: computed once for the batch where
        the policy uses them (``uses_frame_stats``) and none were given; None otherwise."""
        policy = self.policy
        if stats is None and policy.uses_frame_stats:
            stats = frame_stats(logits)
        if getattr(policy, "uses_trace", False):
            self.observe(k, stats, lengths, rows)
            return [
                policy.confidence_from_trace(self.traces[row if rows is None else rows[row]])
                for row in range(logits.size(0))
            ], stats
        out = []
        for row in range(logits.size(0)):
            n = int(lengths[row])
            out.append(policy.confidence_from_logits(
                logits[row, :n], self.blank_id, None if stats is None else stats.frames(row, n)
            ))
        return out, stats

    def view(self, utt: int, k: int) -> Optional[ExitView]:
        """The recorded view of exit k of utterance ``utt`` (None if not evaluated)."""
        return next((v for v in self.traces[utt] if v.exit == k), None)
