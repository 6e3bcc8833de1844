"""Exit policies: when to stop the encoder.

A policy sees the exits in order. At each exit k it gets the CTC log-posteriors of that exit's
head for one utterance, ``log_probs`` of shape (T, V) (T encoder frames after subsampling, V
tokens, blank = index 0 unless told otherwise), turns them into one number with
:meth:`ExitPolicy.confidence`, and :meth:`ExitPolicy.should_exit` says whether to stop there.
The last exit always accepts (:meth:`ExitPolicy.accept`), so every utterance gets a hypothesis.

Policies (``POLICIES``; add one with a class and a line there):

``fixed``
    Always the given exit; nothing is evaluated on the way (no threshold).
``entropy`` (the conventional baseline)
    ``H = mean_t [ -sum_v p_t(v) log p_t(v) ] / log V``: the mean per-frame entropy of the CTC
    posteriors, divided by its maximum ``log V`` so that it lies in [0, 1] whatever the
    vocabulary (0: every frame certain; 1: every frame uniform; the paper's authors divide by
    V instead, which does not bound it by 1). It is an *uncertainty*:
    the policy stops at the first exit where ``H < threshold``. Threshold in [0, 1]: 0 never
    stops early, 1 stops at the first exit unless its posteriors are exactly uniform.
``max_posterior`` (a cheap relative of the paper's proposal)
    The mean over non-blank frames (frames whose most likely token is not blank) of the
    per-frame maximum posterior ``max_v p_t(v)``; if every frame is blank, the mean over all
    frames. Stops at the first exit where it is ``>= threshold`` (in [0, 1]).
``nbest_posterior`` (the paper's proposal)
    An n-best CTC prefix beam search at the exit (frame-synchronous, beam ``beam``, default n);
    the softmax over the n best hypotheses' total log-probabilities (each summed over all of
    its alignments) gives the best hypothesis's posterior, the exit's confidence. Stops at the
    first exit where it is ``>= threshold`` (in [0, 1]; with n hypotheses it is >= 1/n).
``agreement`` (patience over exits)
    Stops at the first exit k whose greedy CTC hypothesis equals those of the ``threshold``
    exits before it (the threshold is the patience, >= 1); with ``max_edits`` n, hypotheses
    within n token edits count as equal. Its confidence at k is the number of agreeing exits
    in a row ending at k. It reads the trace of earlier exits
    (:mod:`espnet_early_exit.exit_trace`), built from the frame statistics the decoder
    computes anyway.
``learned``
    A per-exit logistic regression on the same trace (frame statistics, hypothesis length,
    blank ratio, agreement and edit distance with the previous exit) predicts whether the
    exit's hypothesis equals the last exit's; stops where that probability is >= threshold.
    Fitted without transcripts by ``python -m espnet_early_exit.bin.fit_exit_policy`` from
    one all-exits decode, saved beside the model and loaded by name (:meth:`ExitPolicy.prepare`).
``oracle`` (analysis only)
    Needs the reference transcript and the hypothesis of every exit: picks the lowest exit
    whose hypothesis has a WER against the reference no higher than the last exit's. Its
    "confidence" at exit k is ``1 - WER_k`` (higher is better; below 0 with many insertions).

The decoder hands each policy the exit's CTC *logits* (:meth:`ExitPolicy.confidence_from_logits`):
``entropy`` and ``max_posterior`` compute their exact value from four per-frame statistics of
them (:mod:`espnet_early_exit.frame_stats`: ``log Z - max z``, ``E_p[z] - max z``, ``max z`` and
the argmax; ``H = log Z - E_p[z]``, ``max p = exp(max z - log Z)``), one pass over the logits
(a C kernel on CPU), so that the only work an evaluated exit adds is its CTC head and that pass;
the greedy search at the accepted exit reuses the statistics. A policy that needs the
log-posteriors gets them from the default implementation (log-softmax, then
:meth:`ExitPolicy.confidence`).

``entropy`` and ``max_posterior`` are frame means; with ``frame_stride`` n > 1 they are
estimated from every n-th encoder frame, so that the CTC head (a d x V projection, costly for a
large vocabulary) runs on 1/n of the frames at the exits that are only evaluated. This is an
approximation (default n = 1: exact).

Thresholds are checked when a policy is built: a value outside the policy's range raises
ValueError naming the value and the range.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np
import torch

from espnet_early_exit.exit_classifier import DEFAULT_NAME, ExitClassifier
from espnet_early_exit.exit_features import (
    ExitView,
    agreement_count,
    mean_entropy_share,
    mean_over_nonblank,
)
from espnet_early_exit.exit_trace import ExitTracker
from espnet_early_exit.frame_stats import FrameStats, frame_stats
from espnet_early_exit.scoring import score_utterances

__all__ = [
    "ExitPolicy",
    "FixedPolicy",
    "EntropyPolicy",
    "MaxPosteriorPolicy",
    "NBestPosteriorPolicy",
    "OraclePolicy",
    "AgreementPolicy",
    "LearnedPolicy",
    "POLICIES",
    "get_policy",
    "select_exit",
    "first_accepted_exit",
    "ctc_prefix_beam_search",
    "word_error_rate",
]


class ExitPolicy:
    """Base class of exit policies.

    Subclasses set ``name``, ``threshold_range`` (closed interval, or None for a policy that
    takes no threshold), ``higher_is_confident`` and implement :meth:`confidence`.
    """

    name: ClassVar[str] = ""
    threshold_range: ClassVar[Optional[Tuple[float, float]]] = (0.0, 1.0)
    higher_is_confident: ClassVar[bool] = True
    dynamic: ClassVar[bool] = True  # whether the exit depends on the input
    needs_reference: ClassVar[bool] = False
    frame_stride: int = 1  # >1: confidence from every n-th frame (frame-mean policies only)
    uses_frame_stats: ClassVar[bool] = False  # confidence_from_logits takes FrameStats
    uses_trace: ClassVar[bool] = False  # confidence_from_trace: looks back at earlier exits

    def __init__(self, threshold: Optional[float] = None):
        self.threshold = self.check_threshold(threshold)

    # ------------------------------------------------------------ threshold
    @classmethod
    def check_threshold(cls, threshold: Optional[float]) -> Optional[float]:
        if threshold is None:
            return None
        if cls.threshold_range is None:
            raise ValueError(
                f"exit policy {cls.name!r} takes no threshold (got {threshold})"
            )
        if isinstance(threshold, bool):
            raise ValueError(f"exit_threshold: {threshold!r} is not a number")
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"exit_threshold: {threshold!r} is not a number") from None
        lo, hi = cls.threshold_range
        if not (lo <= value <= hi):  # also rejects NaN
            raise ValueError(
                f"exit_threshold {threshold} is outside [{lo}, {hi}], the range of the "
                f"{cls.name!r} policy's {'confidence' if cls.higher_is_confident else 'score'}"
            )
        return value

    def require_threshold(self) -> float:
        if self.threshold is None:
            lo, hi = self.threshold_range or (None, None)
            raise ValueError(
                f"exit policy {self.name!r} needs exit_threshold (a value in [{lo}, {hi}])"
            )
        return self.threshold

    # -------------------------------------------------------------- decision
    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        """The policy's number for one exit: ``log_probs`` (T, V) CTC log-posteriors."""
        raise NotImplementedError

    def confidence_from_logits(
        self, logits: torch.Tensor, blank_id: int = 0, stats: Optional[FrameStats] = None
    ) -> float:
        """The same number from the exit's CTC logits (T, V), before the softmax.

        The decoder calls this one; a policy that can do with less than the (T, V)
        log-posteriors overrides it (see ``entropy`` and ``max_posterior``) and sets
        ``uses_frame_stats``: the decoder then passes ``stats = frame_stats(logits)``, which
        its greedy search reuses at the accepted exit.
        """
        return self.confidence(torch.log_softmax(_check_frames(logits, "logits"), -1), blank_id)

    def confidence_from_trace(self, trace: Sequence[ExitView]) -> float:
        """The number of a policy with ``uses_trace`` at the last exit of ``trace`` (the
        views of the exits evaluated so far, :mod:`espnet_early_exit.exit_trace`)."""
        raise NotImplementedError(f"{self.name!r} does not read a trace")

    def prepare(self, model_file: Optional[str], exit_layers: Sequence[int]) -> None:
        """Called by the decoder once the model is loaded (a policy with files of its own
        finds them beside ``model_file``); nothing by default."""

    def should_exit(self, confidence: float) -> bool:
        """Whether to stop at an exit with this confidence (needs a threshold)."""
        threshold = self.require_threshold()
        if self.higher_is_confident:
            return confidence >= threshold
        return confidence < threshold

    def accept(self, confidence: Optional[float], is_last_exit: bool) -> bool:
        """should_exit, except that the last exit always accepts."""
        return True if is_last_exit else self.should_exit(confidence)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold})"


class FixedPolicy(ExitPolicy):
    """Always one exit, given as ``exit_layer`` (None: the decoder picks the last one)."""

    name = "fixed"
    threshold_range = None
    dynamic = False

    def __init__(self, threshold: Optional[float] = None, exit_layer: Optional[int] = None):
        super().__init__(threshold)
        self.exit_layer = exit_layer

    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        raise RuntimeError("the fixed policy computes no confidence")

    def should_exit(self, confidence: float) -> bool:
        raise RuntimeError("the fixed policy does not decide per exit; use exit_layer")

    def __repr__(self) -> str:
        return f"FixedPolicy(exit_layer={self.exit_layer})"


def _check_frames(frames: torch.Tensor, what: str = "log_probs") -> torch.Tensor:
    if not isinstance(frames, torch.Tensor):
        frames = torch.as_tensor(np.asarray(frames))
    if frames.dim() != 2 or frames.size(0) == 0 or frames.size(1) < 2:
        raise ValueError(
            f"{what} must be (T, V) with T >= 1 and V >= 2, got {tuple(frames.shape)}"
        )
    return frames.float()


class _FrameMeanPolicy(ExitPolicy):
    """A policy whose confidence is a mean over frames, so it can be estimated from every
    ``frame_stride``-th frame (1 = all frames, exact). The decoder then evaluates the exit's
    CTC head on those frames only while deciding, and on all frames only where it decodes.
    """

    uses_frame_stats = True
    view_field: ClassVar[str] = ""  # the ExitView number that equals the confidence

    def __init__(self, threshold: Optional[float] = None, frame_stride: int = 1):
        super().__init__(threshold)
        if isinstance(frame_stride, bool) or not isinstance(frame_stride, int) or frame_stride < 1:
            raise ValueError(f"exit_policy_frame_stride: {frame_stride!r} is not an integer >= 1")
        self.frame_stride = frame_stride

    def __repr__(self) -> str:
        stride = f", frame_stride={self.frame_stride}" if self.frame_stride > 1 else ""
        return f"{type(self).__name__}(threshold={self.threshold}{stride})"

    def confidence_from_logits(
        self, logits: torch.Tensor, blank_id: int = 0, stats: Optional[FrameStats] = None
    ) -> float:
        z = _check_frames(logits, "logits")
        value = self.confidence_from_stats(frame_stats(z) if stats is None else stats, blank_id)
        if value is None:  # non-finite statistics (-inf logits on the torch path): exact rule
            return super().confidence_from_logits(z, blank_id)
        return value

    def confidence_from_stats(self, stats: FrameStats, blank_id: int = 0) -> Optional[float]:
        """The confidence from the frames' statistics; None where they are not finite."""
        raise NotImplementedError

    def confidence_from_trace(self, trace: Sequence[ExitView]) -> float:
        """The confidence recorded in the exit's view (all frames: frame_stride 1 only)."""
        if self.frame_stride != 1:
            raise NotImplementedError(
                f"{self.name} with frame_stride {self.frame_stride} is not in an exit's view"
            )
        return getattr(trace[-1], self.view_field)


class EntropyPolicy(_FrameMeanPolicy):
    """Mean per-frame CTC posterior entropy over log V (in [0, 1]); exit when < threshold."""

    name = "entropy"
    higher_is_confident = False
    view_field = "entropy"

    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        log_probs = _check_frames(log_probs)
        entropy = -(log_probs.exp() * log_probs).sum(-1)  # (T,)
        if not bool(torch.isfinite(entropy).all()):
            # p = 0 (log p = -inf) gave 0 * -inf: count p log p as 0 there
            plogp = log_probs.exp() * log_probs
            plogp = torch.where(torch.isfinite(log_probs), plogp, torch.zeros_like(plogp))
            entropy = -plogp.sum(-1)
        return mean_entropy_share(entropy, log_probs.size(1))

    def confidence_from_stats(self, stats: FrameStats, blank_id: int = 0) -> Optional[float]:
        entropy = stats.entropy()  # H = log Z - E_p[z], per frame
        if not stats.finite and not bool(torch.isfinite(entropy).all()):
            return None  # -inf logits on the torch path: p log p needs its 0 rule
        return mean_entropy_share(entropy, stats.vocab_size)


class MaxPosteriorPolicy(_FrameMeanPolicy):
    """Mean per-frame max posterior over non-blank frames (all frames if none); exit >=."""

    name = "max_posterior"
    view_field = "max_posterior"

    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        log_probs = _check_frames(log_probs)
        best, arg = log_probs.max(-1)
        return mean_over_nonblank(best.exp(), arg, blank_id)

    def confidence_from_stats(self, stats: FrameStats, blank_id: int = 0) -> Optional[float]:
        # max_v p_t(v) = exp(max z - log Z); argmax: the first of equal maxima, as torch's
        return mean_over_nonblank(stats.max_posterior(), stats.argmax, blank_id)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    beam: int = 4,
    blank_id: int = 0,
    token_beam: Optional[int] = None,
) -> List[Tuple[Tuple[int, ...], float]]:
    """Frame-synchronous CTC prefix beam search over (T, V) log-posteriors.

    Each prefix keeps its blank-ending and non-blank-ending log-probabilities, summed over all
    alignments (the standard prefix search; no language model, no length term). At each frame
    only the ``token_beam`` (default ``beam``) most likely non-blank tokens extend a prefix, and
    the ``beam`` best prefixes survive.

    Returns up to ``beam`` (token ids, total log-probability) pairs, best first.
    """
    log_probs = _check_frames(log_probs)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    n_vocab = log_probs.size(1)
    k = min(token_beam or beam, n_vocab - 1)
    # the k best non-blank tokens of every frame: the k+1 best, blank dropped, in one call
    top_lp, top_id = log_probs.topk(k + 1, dim=-1)
    top_lp = top_lp.double().tolist()
    top_id = top_id.tolist()
    blank_lp = log_probs[:, blank_id].double().tolist()
    lp_rows = None  # full rows, fetched only when a prefix's last token is off the top list

    NEG = -math.inf
    beams: Dict[Tuple[int, ...], List[float]] = {(): [0.0, NEG]}  # prefix -> [pb, pnb]
    for t in range(len(blank_lp)):
        nxt: Dict[Tuple[int, ...], List[float]] = {}
        cand = {c: p for c, p in zip(top_id[t], top_lp[t]) if c != blank_id}
        if len(cand) > k:
            cand.popitem()  # blank was not among them: keep the k best
        lb = blank_lp[t]
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            e = nxt.setdefault(prefix, [NEG, NEG])
            e[0] = _logaddexp(e[0], total + lb)  # blank: prefix unchanged
            last = prefix[-1] if prefix else None
            if last is not None and last not in cand:
                # repeating the last token (no blank between) keeps the prefix
                if lp_rows is None:
                    lp_rows = log_probs.double()
                p = float(lp_rows[t, last])
                e[1] = _logaddexp(e[1], pnb + p)
            for c, p in cand.items():
                if c == last:
                    e[1] = _logaddexp(e[1], pnb + p)  # collapsed repeat
                    ext = nxt.setdefault(prefix + (c,), [NEG, NEG])
                    ext[1] = _logaddexp(ext[1], pb + p)  # repeat after a blank
                else:
                    ext = nxt.setdefault(prefix + (c,), [NEG, NEG])
                    ext[1] = _logaddexp(ext[1], total + p)
        scored = [(_logaddexp(*v), prefix, v) for prefix, v in nxt.items()]
        scored = [x for x in scored if x[0] != NEG]  # e.g. a repeat after no blank path
        scored.sort(key=lambda x: x[0], reverse=True)
        beams = {prefix: v for _, prefix, v in scored[:beam]}
    out = [(prefix, _logaddexp(pb, pnb)) for prefix, (pb, pnb) in beams.items()]
    out.sort(key=lambda x: x[1], reverse=True)
    return out


class NBestPosteriorPolicy(ExitPolicy):
    """Posterior of the best of an n-best CTC prefix beam search (the paper's proposal).

    Args:
        threshold: exit when the best hypothesis's posterior is >= threshold.
        nbest: n, the hypotheses the softmax is taken over (default 4).
        beam: beam of the prefix search (default: nbest).
    """

    name = "nbest_posterior"

    def __init__(
        self, threshold: Optional[float] = None, nbest: int = 4, beam: Optional[int] = None
    ):
        super().__init__(threshold)
        if isinstance(nbest, bool) or not isinstance(nbest, int) or nbest < 1:
            raise ValueError(f"exit_policy_nbest: {nbest!r} is not an integer >= 1")
        beam = nbest if beam is None else beam
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < nbest:
            raise ValueError(f"beam: {beam!r} must be an integer >= nbest ({nbest})")
        self.nbest = nbest
        self.beam = beam

    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        hyps = ctc_prefix_beam_search(log_probs, self.beam, blank_id)[: self.nbest]
        return self.posterior_of_best([score for _, score in hyps])

    @staticmethod
    def posterior_of_best(scores: Sequence[float]) -> float:
        """softmax(scores)[0] for scores sorted best first (1.0 for a single hypothesis)."""
        if len(scores) <= 1:
            return 1.0
        best = scores[0]
        denom = sum(math.exp(s - best) for s in scores if s != -math.inf)
        return 1.0 / denom

    def __repr__(self) -> str:
        return (
            f"NBestPosteriorPolicy(threshold={self.threshold}, nbest={self.nbest}, "
            f"beam={self.beam})"
        )


def word_error_rate(ref: str, hyp: str) -> float:
    """WER (a fraction) of one utterance, counted as stage 13 counts it
    (:func:`espnet_early_exit.scoring.score_utterances`: sclite's alignment, ASCII letters
    compared case-insensitively); with an empty reference, the number of hypothesis words."""
    res = score_utterances([ref], [hyp])
    return res["err"] / max(res["n_ref"], 1)


class OraclePolicy(ExitPolicy):
    """Lowest exit whose WER against the reference is <= the last exit's (analysis only)."""

    name = "oracle"
    threshold_range = None
    needs_reference = True

    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        raise RuntimeError("the oracle policy needs hypotheses and a reference: use select()")

    def should_exit(self, confidence: float) -> bool:
        raise RuntimeError("the oracle policy needs hypotheses and a reference: use select()")

    def select(self, hyps: Mapping[int, str], ref: str) -> Tuple[int, Dict[int, float]]:
        """Pick an exit from every exit's hypothesis text; returns (exit, {k: 1 - WER_k})."""
        if not hyps:
            raise ValueError("oracle: no hypotheses")
        if ref is None:
            raise ValueError("the oracle policy needs the reference text (ref / --ref_text)")
        exits = sorted(hyps)
        wers = {k: word_error_rate(ref, hyps[k]) for k in exits}
        last = wers[exits[-1]]
        chosen = next(k for k in exits if wers[k] <= last)
        return chosen, {k: 1.0 - w for k, w in wers.items()}


class _TracePolicy(ExitPolicy):
    """A policy that reads the trace of the exits before (greedy CTC hypotheses, frame
    statistics): the decoder hands it :meth:`confidence_from_trace`, not the logits."""

    uses_frame_stats = True
    uses_trace = True

    def confidence(self, log_probs: torch.Tensor, blank_id: int = 0) -> float:
        raise RuntimeError(f"the {self.name} policy reads the exits before: use select_exit()")

    def confidence_from_logits(
        self, logits: torch.Tensor, blank_id: int = 0, stats: Optional[FrameStats] = None
    ) -> float:
        return self.confidence(logits, blank_id)


class AgreementPolicy(_TracePolicy):
    """Stop when the greedy CTC hypothesis has stopped changing (patience, as PABEE:
    Zhou et al., "BERT Loses Patience", NeurIPS 2020).

    The confidence at exit k is the number of consecutive exits ending at k whose greedy CTC
    hypothesis is within ``max_edits`` token edits (default 0: identical) of the one before;
    the threshold is the patience p: the policy stops at the first exit k where the
    hypotheses of exits k-p..k agree (p >= 1; a larger p is safer).
    """

    name = "agreement"
    threshold_range = (1.0, math.inf)

    def __init__(self, threshold: Optional[float] = None, max_edits: int = 0):
        super().__init__(threshold)
        if isinstance(max_edits, bool) or not isinstance(max_edits, int) or max_edits < 0:
            raise ValueError(f"max_edits: {max_edits!r} is not an integer >= 0")
        self.max_edits = max_edits

    def confidence_from_trace(self, trace: Sequence[ExitView]) -> float:
        return agreement_count(trace, self.max_edits)

    def __repr__(self) -> str:
        return f"AgreementPolicy(threshold={self.threshold}, max_edits={self.max_edits})"


class LearnedPolicy(_TracePolicy):
    """P(this exit's hypothesis equals the last exit's) from a per-exit logistic regression
    on the exit's view (:mod:`espnet_early_exit.exit_classifier`); exit when >= threshold.

    Args:
        threshold: a probability in [0, 1] (higher is safer).
        model: the fitted model's file: a path, or a name looked up beside the model's file
            (default ``exit_policy.json``, what ``bin/fit_exit_policy`` writes there).
    """

    name = "learned"

    def __init__(self, threshold: Optional[float] = None, model: Optional[str] = None):
        super().__init__(threshold)
        self.model = model or DEFAULT_NAME
        self.classifier: Optional[ExitClassifier] = None

    def prepare(self, model_file: Optional[str], exit_layers: Sequence[int]) -> None:
        path = Path(self.model)
        if not path.is_file() and model_file is not None:
            path = Path(model_file).parent / self.model
        if not path.is_file():
            raise FileNotFoundError(
                f"learned exit policy: no {self.model} (nor beside the model file "
                f"{model_file}); fit one with python -m espnet_early_exit.bin.fit_exit_policy"
            )
        self.classifier = ExitClassifier.load(path)

    def confidence_from_trace(self, trace: Sequence[ExitView]) -> float:
        if self.classifier is None:
            raise RuntimeError("the learned policy has no model: call prepare() first")
        return self.classifier.view_probability(trace[-1])

    def __repr__(self) -> str:
        return f"LearnedPolicy(threshold={self.threshold}, model={self.model!r})"


def select_exit(
    policy: ExitPolicy,
    exits: Sequence[int],
    log_probs_at: Callable[[int], torch.Tensor],
    blank_id: int = 0,
) -> Tuple[int, Dict[int, float]]:
    """Run a threshold policy over ``exits`` in order; ``log_probs_at(k)`` gives (T, V).

    ``log_probs_at`` is called only for the exits the policy evaluates (up to the accepted
    one); the last exit always accepts. Returns (exit, {exit: confidence} evaluated).
    A policy with ``uses_trace`` sees the exits before through an :class:`ExitTracker`.
    """
    if not policy.uses_trace:
        return first_accepted_exit(
            policy, exits, lambda k: policy.confidence(log_probs_at(k), blank_id)
        )
    tracker = ExitTracker(policy, 1, exits, blank_id)

    def confidence_at(k: int) -> float:
        frames = _check_frames(log_probs_at(k))
        return tracker.confidences(k, frames[None], torch.tensor([frames.size(0)]))[0][0]

    return first_accepted_exit(policy, exits, confidence_at)


def first_accepted_exit(
    policy: ExitPolicy,
    exits: Sequence[int],
    confidence_at: Callable[[int], float],
) -> Tuple[int, Dict[int, float]]:
    """The decision rule of a threshold policy: the first of ``exits`` (in order) whose
    confidence ``confidence_at(k)`` it accepts; the last exit always accepts.

    ``confidence_at`` is called only for the exits evaluated (up to the accepted one), so it
    may compute confidences on demand (:func:`select_exit`) or look up recorded ones (the
    trade-off CLI). Returns (exit, {exit: confidence} evaluated).
    """
    if not policy.dynamic or policy.needs_reference:
        raise ValueError(f"select_exit needs a threshold policy, not {policy.name!r}")
    exits = list(exits)
    if not exits:
        raise ValueError("select_exit: no exits")
    confidences: Dict[int, float] = {}
    for i, k in enumerate(exits):
        confidences[k] = confidence_at(k)
        if policy.accept(confidences[k], i == len(exits) - 1):
            return k, confidences
    raise AssertionError("unreachable: the last exit accepts")


POLICIES: Dict[str, Type[ExitPolicy]] = {
    "fixed": FixedPolicy,
    "entropy": EntropyPolicy,
    "max_posterior": MaxPosteriorPolicy,
    "nbest_posterior": NBestPosteriorPolicy,
    "oracle": OraclePolicy,
    "agreement": AgreementPolicy,
    "learned": LearnedPolicy,
}


def get_policy(name: str, threshold: Optional[float] = None, **kwargs) -> ExitPolicy:
    """Build the policy ``name`` with ``threshold``.

    Keyword options that the policy's constructor does not take are ignored (so that a CLI can
    pass e.g. ``nbest`` whatever the policy); a None option means "the policy's default".
    Raises ValueError for an unknown name or a threshold outside the policy's range.
    """
    if name not in POLICIES:
        raise ValueError(
            f"unknown exit policy {name!r}; choose one of {', '.join(sorted(POLICIES))}"
        )
    cls = POLICIES[name]
    accepted = inspect.signature(cls.__init__).parameters
    options = {k: v for k, v in kwargs.items() if k in accepted and v is not None}
    return cls(threshold, **options)
