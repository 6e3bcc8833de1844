"""What a policy has seen of one utterance on its way through the exits.

Most exit policies look at one exit at a time (a confidence of its CTC posteriors). The
``agreement`` and ``learned`` policies also look back: whether the greedy CTC hypothesis has
stopped changing from exit to exit. For them the decoder keeps, per utterance, a *trace*: one
:class:`ExitView` per exit evaluated so far, built from the frame statistics of the exit's CTC
logits (:mod:`espnet_early_exit.frame_stats`) that the decoder computes anyway, so a view costs
no more than the greedy search (argmax, repeats collapsed, blanks dropped) and a token edit
distance to the previous exit's hypothesis. The views themselves (:class:`ExitView`,
:data:`FEATURES`) are numpy-only, in :mod:`espnet_early_exit.exit_features`, shared with the
onnxruntime decoder.

:class:`ExitTracker` holds the traces of a batch and computes each row's confidence at an exit:
``policy.confidence_from_trace(trace)`` for a policy with ``uses_trace`` (the view of the
current exit last), ``policy.confidence_from_logits`` otherwise. The views' numbers
(:data:`FEATURES`) are also what the all-exits pass records per exit (``exit<k>/features``) and
what the ``learned`` policy is fitted on.

This module does not import :mod:`espnet_early_exit.policies` (which imports it).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from espnet_early_exit.exit_features import (
    FEATURES,
    ExitView,
    agreement_streak,
    edit_distance,
    format_features,
    make_view,
    mean_entropy_share,
    mean_over_nonblank,
    parse_features,
)
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


def exit_view(
    stats: FrameStats, k: int, index: int, blank_id: int, prev: Optional[ExitView] = None
) -> ExitView:
    """The view of exit k from the frame statistics of its CTC logits (T frames of one
    utterance); ``prev``: the view of the exit evaluated before it. The frame means are
    computed here in torch, the rest by :func:`espnet_early_exit.exit_features.make_view`
    (which the onnxruntime decoder uses too)."""
    ids = stats.argmax
    entropy = stats.entropy()
    entropy = torch.nan_to_num(entropy, nan=0.0, posinf=math.log(stats.vocab_size))
    return make_view(
        k, index, ids.cpu().numpy(),
        entropy=mean_entropy_share(entropy, stats.vocab_size),
        max_posterior=mean_over_nonblank(stats.max_posterior(), ids, blank_id),
        blank_id=blank_id, prev=prev,
    )


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
