"""The search at one exit of an early-exit model: encoder output at exit k -> n-best lists.

:class:`ExitSearch` decodes exit k with that exit's heads and returns ESPnet-style n-best
lists of ``(text, token, token_int, hyp)`` (the hypotheses converted to text by the caller's
``to_results``, ESPnet's ``Speech2Text._hyps_to_results``):

* greedy CTC (``beam_size 1`` and ``ctc_weight 1.0``, no LM, no penalty): argmax over the
  exit's CTC posteriors, repeats collapsed, blanks dropped; no beam search at all. Its
  hypothesis score is the best path's log-probability. It reads the frame statistics of the
  exit's CTC logits (``frame_stats.py``), which the exit loop may have computed already for
  its policy.
* CTC prefix beam search (``ctc_weight 1.0``, ``beam_size > 1``): ESPnet's ``BeamSearch`` with
  only the ``CTCPrefixScorer`` of the exit's head (ESPnet's search does not need a decoder).
* joint CTC/attention beam search (``ctc_weight < 1``): ESPnet's ``BeamSearch`` with scorers
  ``decoder`` = ``model.decoder_at(k)`` (weight 1 - ctc_weight) and ``ctc`` =
  ``CTCPrefixScorer(model.ctc_at(k))`` (weight ctc_weight), plus ESPnet's ``length_bonus``
  (``penalty``) and LM / n-gram scorers when given, exactly as ``Speech2Text`` weighs them.
  An exit without a decoder (``exit_decoders: last``) is decoded by CTC prefix beam search
  there (a warning says so once).

A search is built per exit on first use and cached; it becomes ESPnet's ``BatchBeamSearch``
where every scorer supports batches (then a batch is searched at once).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from espnet2.legacy.nets.batch_beam_search import BatchBeamSearch
from espnet2.legacy.nets.beam_search import BeamSearch, Hypothesis
from espnet2.legacy.nets.scorer_interface import (
    BatchPartialScorerInterface,
    BatchScorerInterface,
)
from espnet2.legacy.nets.scorers.ctc import CTCPrefixScorer

from espnet_early_exit.frame_stats import FrameStats, frame_stats

logger = logging.getLogger(__name__)

NBest = List[Tuple[Optional[str], List[str], List[int], Hypothesis]]
ToResults = Callable[[List[Hypothesis]], NBest]


class GreedyCTC:
    """The greedy-CTC search of an exit (no beam search object): see :func:`greedy_ctc`."""

    def __repr__(self) -> str:
        return "GreedyCTC()"


def greedy_ctc(
    stats: FrameStats,
    lengths: torch.Tensor,
    blank_id: int,
    sos: int,
    eos: int,
    device: Union[str, torch.device, None] = None,
) -> List[Hypothesis]:
    """The best CTC path of each row, from the frame statistics of (B, T, V) CTC logits.

    The argmax token per frame, repeats collapsed and blanks dropped; scored by the sum of its
    frames' log-posteriors (log max p = -log_sum: the value of ESPnet's
    ``CTC.log_softmax(...).max()``). Row b reads its first ``lengths[b]`` frames; the
    hypotheses' ``yseq`` go to ``device`` (default: the statistics').
    """
    ids = stats.argmax
    best = -stats.log_sum
    hyps = []
    for i in range(ids.size(0)):
        n = int(lengths[i])
        path = torch.unique_consecutive(ids[i, :n])
        tokens = [int(t) for t in path if int(t) != blank_id]
        score = float(best[i, :n].sum())
        yseq = torch.tensor([sos] + tokens + [eos], device=device or ids.device)
        hyps.append(Hypothesis(yseq=yseq, score=score, scores={"ctc": score}))
    return hyps


def batch_capable(search: BeamSearch) -> BeamSearch:
    """Make ``search`` ESPnet's ``BatchBeamSearch`` if every one of its scorers is batched
    (as ``Speech2Text`` does); otherwise leave it a ``BeamSearch``."""
    non_batch = [
        n for n, v in search.full_scorers.items() if not isinstance(v, BatchScorerInterface)
    ] + [
        n
        for n, v in search.part_scorers.items()
        if not isinstance(v, BatchPartialScorerInterface)
    ]
    if not non_batch:
        search.__class__ = BatchBeamSearch
    return search


def prepare_decoder(decoder: Optional[torch.nn.Module]) -> None:
    """Per-search set-up a decoder needs before stepping (ESPnet's S4 decoder)."""
    if decoder is None:
        return
    from espnet2.asr.decoder.s4_decoder import S4Decoder

    if isinstance(decoder, S4Decoder):
        for module in decoder.modules():
            if hasattr(module, "setup_step"):
                module.setup_step()


class ExitSearch:
    """The search at each exit of one early-exit model (built on first use, cached).

    Args:
        model: the ``EarlyExitASRModel`` (its ``ctc_at(k)``, ``decoder_at(k)``, tokens).
        base: the ``BeamSearch`` ESPnet's ``Speech2Text`` built from the decoding options:
            its weights and its scorers other than ``decoder`` and ``ctc`` (LM, n-gram,
            length bonus) are shared by every exit's search.
        beam_size, ctc_weight, ctc_window_margin, penalty, normalize_length: ``Speech2Text``'s
            decoding options.
        device, dtype: where the searches run (``dtype`` a torch dtype name).
        to_results: hypotheses -> ``(text, token, token_int, hyp)`` n-best list.
    """

    def __init__(
        self,
        model: Any,
        base: BeamSearch,
        *,
        beam_size: int,
        ctc_weight: float,
        ctc_window_margin: int,
        penalty: float,
        normalize_length: bool,
        device: Union[str, torch.device],
        dtype: str,
        to_results: ToResults,
    ):
        self.model = model
        self.exit_layers: List[int] = list(model.exit_layers)
        self.beam_size = beam_size
        self.ctc_weight = ctc_weight
        self.ctc_window_margin = ctc_window_margin
        self.normalize_length = normalize_length
        self.device = device
        self.dtype = dtype
        self.to_results = to_results
        self._base_weights: Dict[str, float] = dict(base.weights)
        self._shared_scorers = {
            k: v for k, v in base.scorers.items() if k not in ("decoder", "ctc")
        }
        self._token_list = list(model.token_list)
        self.greedy: bool = (
            beam_size == 1
            and ctc_weight == 1.0
            and not any(k in self._shared_scorers for k in ("lm", "ngram"))
            and penalty == 0.0
        )
        self._searches: Dict[int, Union[BeamSearch, GreedyCTC]] = {}
        self._warned_no_decoder = False

    def at(self, k: int) -> Union[BeamSearch, GreedyCTC]:
        """The (cached) search used at exit k: a ``BeamSearch`` or the greedy marker."""
        if k in self._searches:
            return self._searches[k]
        if k not in self.exit_layers:
            raise ValueError(f"exit {k} is not one of the model's exits {self.exit_layers}")
        self._searches[k] = GreedyCTC() if self.greedy else self._beam_search(k)
        return self._searches[k]

    def _exit_ctc_weight(self, k: int, decoder: Optional[torch.nn.Module]) -> float:
        """``ctc_weight`` at exit k: 1.0 where the exit has no decoder (warned once)."""
        if self.ctc_weight < 1.0 and decoder is None:
            if not self._warned_no_decoder:
                logger.warning(
                    f"exit {k} has no attention decoder (exit_decoders: "
                    f"{self.model.exit_decoder_mode}); exits without one are decoded by CTC "
                    "prefix beam search (ctc_weight 1.0 there)"
                )
                self._warned_no_decoder = True
            return 1.0
        return self.ctc_weight

    def _beam_search(self, k: int) -> BeamSearch:
        model = self.model
        weights = dict(self._base_weights)
        scorers: Dict[str, Any] = dict(self._shared_scorers)
        scorers["ctc"] = CTCPrefixScorer(
            ctc=model.ctc_at(k), eos=model.eos, window_margin=self.ctc_window_margin
        )
        decoder = model.decoder_at(k)
        ctc_weight = self._exit_ctc_weight(k, decoder)
        weights["ctc"] = ctc_weight
        weights["decoder"] = 1.0 - ctc_weight
        if decoder is not None and weights["decoder"] > 0:
            scorers["decoder"] = decoder
        search = BeamSearch(
            scorers=scorers,
            weights=weights,
            beam_size=self.beam_size,
            vocab_size=len(self._token_list),
            sos=model.sos,
            eos=model.eos,
            token_list=self._token_list,
            pre_beam_score_key=None if ctc_weight == 1.0 else "full",
            normalize_length=self.normalize_length,
        )
        batch_capable(search)
        dtype = getattr(torch, self.dtype)
        search.to(device=self.device, dtype=dtype).eval()
        for scorer in scorers.values():
            if isinstance(scorer, torch.nn.Module):
                scorer.to(device=self.device, dtype=dtype).eval()
        return search

    def decode(
        self,
        k: int,
        out: torch.Tensor,
        olens: torch.Tensor,
        *,
        maxlenratio: float,
        minlenratio: float,
        logits: Optional[torch.Tensor] = None,
        stats: Optional[FrameStats] = None,
    ) -> List[NBest]:
        """ESPnet-style n-best lists of (text, token, token_int, hyp) at exit k, per row of
        the encoder output ``out`` (``logits``: exit k's CTC logits of ``out``, ``stats``: their
        frame statistics, where they were computed already)."""
        search = self.at(k)
        model = self.model
        if isinstance(search, GreedyCTC):
            if stats is None:
                if logits is None:
                    logits = model.ctc_at(k).ctc_lo(out)
                stats = frame_stats(logits)
            hyps = greedy_ctc(
                stats, olens, model.blank_id, model.sos, model.eos, device=out.device
            )
            return [self.to_results([hyp]) for hyp in hyps]

        prepare_decoder(model.decoder_at(k))
        if isinstance(search, BatchBeamSearch) and out.size(0) > 1:
            nbest = search(
                x=out, x_lengths=olens, maxlenratio=maxlenratio, minlenratio=minlenratio
            )
            return [self.to_results(h) for h in nbest]
        return [
            self.to_results(
                search(
                    x=out[i, : int(olens[i])],
                    maxlenratio=maxlenratio,
                    minlenratio=minlenratio,
                )
            )
            for i in range(out.size(0))
        ]
