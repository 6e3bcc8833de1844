"""The numbers of one evaluated exit of one utterance, for the policies that look back over
the exits (``agreement``, ``learned``): numpy only, no torch.

Both decoders build an exit's :class:`ExitView` here: the torch decoder
(:func:`espnet_early_exit.exit_trace.exit_view`, from torch frame statistics) and the
onnxruntime one (:mod:`espnet_early_exit.onnx_runtime`, from numpy ones). Each hands
:func:`make_view` the per-frame argmax and the two frame means (:func:`mean_entropy_share`,
:func:`mean_over_nonblank`, which take torch tensors and numpy arrays alike); the greedy CTC
hypothesis, the blank ratio, the edit distance and the agreement streak are computed here
once, and so are the two trace policies' numbers (:func:`agreement_count`; the ``learned``
one: :meth:`espnet_early_exit.exit_classifier.ExitClassifier.view_probability`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "ExitView",
    "FEATURES",
    "agreement_count",
    "agreement_streak",
    "edit_distance",
    "format_features",
    "greedy_tokens",
    "make_view",
    "mean_entropy_share",
    "mean_over_nonblank",
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


def mean_entropy_share(entropy, vocab_size: int) -> float:
    """Mean frame entropy (nats; a torch tensor or numpy array) over its maximum log V,
    clamped to [0, 1] (rounding)."""
    value = float(entropy.mean()) / math.log(vocab_size)
    return min(max(value, 0.0), 1.0)


def mean_over_nonblank(values, best_token, blank_id: int) -> float:
    """Mean of per-frame values over the frames whose best token is not blank (all if none);
    torch tensors or numpy arrays."""
    nonblank = best_token != blank_id
    if bool(nonblank.any()):
        values = values[nonblank]
    return float(values.mean())


def greedy_tokens(argmax, blank_id: int) -> List[int]:
    """The greedy CTC hypothesis of a frame-wise argmax path: repeats collapsed, blanks
    dropped."""
    path = np.asarray(argmax).reshape(-1)
    keep = np.ones(path.shape, dtype=bool)
    keep[1:] = path[1:] != path[:-1]
    ids = path[keep]
    return [int(t) for t in ids[ids != blank_id]]


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


def agreement_streak(edits_prev: Optional[int], prev: Optional[ExitView]) -> int:
    """Exits in a row ending here whose hypothesis equals the previous one's."""
    if edits_prev != 0 or prev is None:
        return 0
    return prev.streak + 1


def make_view(k: int, index: int, argmax, entropy: float, max_posterior: float,
              blank_id: int, prev: Optional[ExitView] = None) -> ExitView:
    """The view of exit k of one utterance from its frames' argmax (T,) and the two frame
    means (``entropy``: :func:`mean_entropy_share`, ``max_posterior``:
    :func:`mean_over_nonblank` of the max posteriors); ``prev``: the view of the exit
    evaluated before it."""
    path = np.asarray(argmax).reshape(-1)
    tokens = tuple(greedy_tokens(path, blank_id))
    edits = None if prev is None else edit_distance(prev.tokens, tokens)
    return ExitView(
        exit=k,
        index=index,
        tokens=tokens,
        hyp_len=len(tokens),
        n_frames=int(path.size),
        entropy=float(entropy),
        max_posterior=float(max_posterior),
        blank_ratio=float((path == blank_id).mean()),
        edits_prev=edits,
        streak=agreement_streak(edits, prev),
    )


def agreement_count(trace: Sequence[ExitView], max_edits: int = 0) -> float:
    """The ``agreement`` policy's number at the last exit of ``trace``: the exits in a row
    ending there whose hypothesis is within ``max_edits`` token edits of the one before."""
    n = 0
    for view in reversed(trace):
        if view.edits_prev is None or view.edits_prev > max_edits:
            break
        n += 1
    return float(n)


def format_features(features: Dict[str, float]) -> str:
    """``"index:0 n_frames:12 ..."`` (the ``features`` file's format)."""
    return " ".join(f"{k}:{v:.6g}" for k, v in features.items())


def parse_features(value: str) -> Dict[str, float]:
    out = {}
    for item in value.split():
        name, number = item.split(":")
        out[name] = float(number)
    return out
