"""Early-exit decoding with real stopping: ``EarlyExitSpeech2Text``.

ESPnet's ``Speech2Text`` runs the whole encoder and then searches. ``EarlyExitSpeech2Text``
(a subclass, same constructor options) runs the encoder block by block instead:

    state = model.encode_begin(speech, lengths)        # front-end + subsampling, once
    state, out, olens = model.encode_to(state, k)      # blocks up to exit k, none after it

and evaluates an exit's CTC head only where the exit policy (``policies.py``) looks at it. With
the ``fixed`` policy it jumps straight to the chosen exit; with a dynamic policy it stops at the
first exit whose confidence passes the threshold (the last exit always accepts); no block after
the chosen exit runs. Decoding at exit k uses that exit's heads: greedy CTC, CTC prefix beam
search or joint CTC/attention beam search, as the decoding options say (``search.py``: the
search at one exit; this module: loading, the exit loop, results).

Results are :class:`EarlyExitResult` objects, which also unpack like ESPnet's
``(text, token, token_int, hyp)`` tuples.

Input checks: the waveform must be mono, non-empty and finite; ``fs`` (optional, like a
sampling rate read with soundfile) must equal the rate the model's front-end was trained for
(``frontend_conf.fs``, 16000 by default) -- this class does not resample.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from espnet2.bin.asr_inference import Speech2Text
from espnet2.legacy.nets.beam_search import BeamSearch, Hypothesis
from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError
from espnet2.torch_utils.device_funcs import to_device

import espnet_early_exit.task  # noqa: F401  (registers the plugin with ESPnet's ASR task)
from espnet_early_exit.checkpoints import check_model_keys, model_file_errors
from espnet_early_exit.costs import model_fs
from espnet_early_exit.encoders.exits import EncoderState
from espnet_early_exit.exit_trace import ExitTracker
from espnet_early_exit.frame_stats import FrameStats, frame_stats
from espnet_early_exit.model import EarlyExitASRModel
from espnet_early_exit.policies import ExitPolicy, get_policy
from espnet_early_exit.search import ExitSearch, GreedyCTC, NBest

logger = logging.getLogger(__name__)

Waveform = Union[torch.Tensor, np.ndarray]

# Speech2Text options this class cannot honour (they replace the encoder or the search)
_UNSUPPORTED = {
    "transducer_conf": None,
    "streaming": False,
    "enh_s2t_task": False,
    "multi_asr": False,
    "hugging_face_decoder": False,
    "time_sync": False,
    "partial_ar": False,
}
_S2T_PARAMS = inspect.signature(Speech2Text.__init__).parameters


def _s2t_default(name: str) -> Any:
    return _S2T_PARAMS[name].default


@dataclass
class EarlyExitResult:
    """One hypothesis of an early-exit decode.

    Unpacks like ESPnet's result tuple: ``text, token, token_int, hyp = result``.
    ``confidences`` maps each exit the policy evaluated on the way (in order) to the policy's
    number there (see policies.py for what it means per policy); empty for ``fixed``.
    """

    text: Optional[str]
    token: List[str]
    token_int: List[int]
    hyp: Hypothesis
    exit_layer: int
    confidences: Dict[int, float] = field(default_factory=dict)
    features: Optional[Dict[str, float]] = None  # all-exits pass: exit_trace.FEATURES

    @property
    def score(self) -> float:
        return float(self.hyp.score)

    def as_tuple(self) -> Tuple[Optional[str], List[str], List[int], Hypothesis]:
        return (self.text, self.token, self.token_int, self.hyp)

    def __iter__(self):
        return iter(self.as_tuple())

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        return self.as_tuple()[index]


def format_confidences(confidences: Dict[int, float]) -> str:
    """``{2: 0.5, 4: 0.9}`` -> ``"2:0.5 4:0.9"`` (the ``confidence`` output file's format)."""
    return " ".join(f"{k}:{v:.6g}" for k, v in sorted(confidences.items()))


def _check_options(kwargs: Dict[str, Any]) -> None:
    """Refuse Speech2Text options this class cannot honour, and unknown ones."""
    for name, default in _UNSUPPORTED.items():
        if name in kwargs and kwargs[name] not in (default, None, {}, False):
            raise NotImplementedError(
                f"{name}={kwargs[name]!r} is not supported by EarlyExitSpeech2Text"
            )
    unknown = [k for k in kwargs if k not in _S2T_PARAMS]
    if unknown:
        raise TypeError(f"EarlyExitSpeech2Text got unknown options {unknown}")


def _make_policy(
    exit_policy: str,
    exit_threshold: Optional[float],
    exit_layer: Optional[int],
    nbest: int,
    frame_stride: int,
    conf: Optional[Dict[str, Any]],
) -> ExitPolicy:
    """The exit policy of the options, checked (before the model is loaded)."""
    if exit_layer is not None and (
        isinstance(exit_layer, bool) or not isinstance(exit_layer, int)
    ):
        raise ValueError(f"exit_layer: {exit_layer!r} is not an integer exit")
    policy = get_policy(
        exit_policy,
        exit_threshold,
        nbest=nbest,
        exit_layer=exit_layer,
        frame_stride=frame_stride,
        **(conf or {}),
    )
    if policy.frame_stride != frame_stride:
        raise ValueError(
            f"exit_policy_frame_stride={frame_stride}: policy "
            f"{exit_policy!r} is not a frame mean (only entropy, max_posterior)"
        )
    if policy.dynamic and exit_layer is not None:
        raise ValueError(
            f"exit_layer={exit_layer} is for exit_policy 'fixed'; policy "
            f"{exit_policy!r} chooses the exit itself"
        )
    return policy


class EarlyExitSpeech2Text(Speech2Text):
    """ESPnet's Speech2Text for early-exit models (``model: ee_espnet``), with real stopping.

    Args (besides every option of ``Speech2Text``; unsupported: transducer, streaming,
    enhancement/multi-speaker, Hugging Face decoder, time-synchronous and partially
    autoregressive search):
        exit_layer: the exit of the ``fixed`` policy (default: the last exit); must be one of
            the model's exits. Only for ``fixed``.
        exit_policy: a name in ``policies.POLICIES``: ``fixed``, ``entropy``,
            ``max_posterior``, ``nbest_posterior``, ``agreement``, ``learned`` or ``oracle``.
        exit_threshold: the dynamic policy's threshold (see policies.py for its range and
            direction). Checked here; a dynamic policy without one can still compute
            confidences in :meth:`decode_all_exits`, but ``__call__`` needs it.
        exit_policy_nbest: n of ``nbest_posterior``.
        exit_policy_frame_stride: n > 1 estimates ``entropy`` / ``max_posterior`` from every
            n-th frame (an approximation that cuts the CTC head cost at evaluated exits).
        exit_policy_conf: further keyword options of the policy (e.g. ``beam``).
    """

    def __init__(
        self,
        asr_train_config: Union[str, None, Any] = None,
        asr_model_file: Union[str, None, Any] = None,
        exit_layer: Optional[int] = None,
        exit_policy: str = "fixed",
        exit_threshold: Optional[float] = None,
        exit_policy_nbest: int = 4,
        exit_policy_frame_stride: int = 1,
        exit_policy_conf: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ):
        # cheap checks before the model is loaded
        _check_options(kwargs)
        self.policy: ExitPolicy = _make_policy(
            exit_policy,
            exit_threshold,
            exit_layer,
            exit_policy_nbest,
            exit_policy_frame_stride,
            exit_policy_conf,
        )

        # a truncated file or a model of another config: one error naming the files
        with model_file_errors(asr_train_config, asr_model_file):
            super().__init__(asr_train_config, asr_model_file, **kwargs)
        check_model_keys(self.asr_model, asr_model_file, asr_train_config)

        model = self.asr_model
        if not isinstance(model, EarlyExitASRModel):
            raise ValueError(
                f"{asr_train_config}: model is {type(model).__name__}; EarlyExitSpeech2Text "
                "needs an early-exit model (model: ee_espnet); use ESPnet's Speech2Text"
            )
        self.exit_layers: List[int] = list(model.exit_layers)
        if not self.policy.dynamic:
            if exit_layer is None:
                exit_layer = self.exit_layers[-1]
            if exit_layer not in self.exit_layers:
                raise ValueError(
                    f"exit_layer {exit_layer} is not one of the model's exits "
                    f"{self.exit_layers}"
                )
            self.policy.exit_layer = exit_layer
        self.exit_layer: Optional[int] = exit_layer
        self.policy.prepare(asr_model_file, self.exit_layers)

        # decoding options, as Speech2Text used them
        def opt(name):
            return kwargs.get(name, _s2t_default(name))

        self.beam_size: int = opt("beam_size")
        self.ctc_weight: float = opt("ctc_weight")
        self.ctc_window_margin: int = opt("ctc_window_margin")
        self.penalty: float = opt("penalty")
        self.normalize_length: bool = opt("normalize_length")
        # the search at each exit (LM, n-gram, length bonus of Speech2Text's search shared)
        self.searches = ExitSearch(
            model,
            self.beam_search,
            beam_size=self.beam_size,
            ctc_weight=self.ctc_weight,
            ctc_window_margin=self.ctc_window_margin,
            penalty=self.penalty,
            normalize_length=self.normalize_length,
            device=self.device,
            dtype=self.dtype,
            to_results=self._hyps_to_results,
        )
        self.greedy: bool = self.searches.greedy
        self.model_fs: Optional[int] = self._find_model_fs()
        logger.info(
            f"early exit: exits {self.exit_layers}, policy {self.policy!r}, "
            f"{'greedy CTC' if self.greedy else 'beam search'}"
        )

    @classmethod
    def from_pretrained(
        cls, model_tag: Optional[str] = None, **kwargs: Any
    ) -> "EarlyExitSpeech2Text":
        """Build from a packed model (local .zip, model-zoo name, Hugging Face repo), checked
        and unpacked safely by `espnet_early_exit.zoo`; without a tag, from the kwargs."""
        from espnet_early_exit.zoo import from_pretrained

        return from_pretrained(cls, model_tag, **kwargs)

    # ------------------------------------------------------------ set-up
    def _find_model_fs(self) -> Optional[int]:
        args = self.asr_train_args
        if getattr(args, "frontend", None) is None or self.asr_model.frontend is None:
            return None  # the model reads features: no sampling rate to check
        return model_fs(self.asr_train_args)

    def searcher(self, k: int) -> Union[BeamSearch, GreedyCTC]:
        """The (cached) search used at exit k: a ``BeamSearch`` or the greedy marker."""
        return self.searches.at(k)

    # ------------------------------------------------------------ input
    def _waveform(self, speech: Waveform, index: int = 0) -> torch.Tensor:
        where = f"utterance {index}: " if index else ""
        if isinstance(speech, np.ndarray):
            speech = torch.from_numpy(np.ascontiguousarray(speech))
        elif not isinstance(speech, torch.Tensor):
            raise TypeError(
                f"{where}speech must be a numpy array or a torch tensor, got "
                f"{type(speech).__name__}"
            )
        if speech.dim() == 2 and 1 in speech.shape:
            speech = speech.reshape(-1)
        if speech.dim() != 1:
            raise ValueError(
                f"{where}speech must be a mono waveform of shape (n_samples,), got shape "
                f"{tuple(speech.shape)}"
            )
        if speech.numel() == 0:
            raise ValueError(f"{where}speech is empty (0 samples)")
        if speech.is_floating_point() and not bool(torch.isfinite(speech).all()):
            raise ValueError(f"{where}speech contains NaN or infinite samples")
        return speech.to(getattr(torch, self.dtype))

    def _min_samples(self) -> int:
        """Fewest samples the front-end's STFT accepts (its reflect padding needs n_fft/2+1)."""
        stft = getattr(self.asr_model.frontend, "stft", None)
        if stft is None or not getattr(stft, "center", False):
            return 1
        return int(stft.n_fft) // 2 + 1

    def _check_fs(self, fs: Optional[int]) -> None:
        if fs is None or self.model_fs is None:
            return
        if int(fs) != self.model_fs:
            raise ValueError(
                f"speech is sampled at {fs} Hz but the model expects {self.model_fs} Hz "
                "audio; resample it first"
            )

    def _pad(
        self, speeches: Sequence[Waveform], fs: Optional[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_fs(fs)
        if len(speeches) == 0:
            raise ValueError("no utterances to decode")
        waves = [self._waveform(s, i) for i, s in enumerate(speeches)]
        shortest = min(w.numel() for w in waves)
        limit = self._min_samples()
        if shortest < limit:
            raise TooShortUttError(
                f"has {shortest} samples and is too short for the front-end's STFT "
                f"(it needs at least {limit})",
                shortest,
                limit,
            )
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        batch = to_device({"speech": padded, "lengths": lengths}, device=self.device)
        return batch["speech"], batch["lengths"]

    # ------------------------------------------------------------ decoding
    @torch.no_grad()
    def __call__(
        self,
        speech: Union[Waveform, Sequence[Waveform]],
        fs: Optional[int] = None,
        ref: Optional[str] = None,
    ) -> List[EarlyExitResult]:
        """Decode one utterance (n-best list of EarlyExitResult; a list: see decode_batch).

        Args:
            speech: mono waveform (n_samples,).
            fs: its sampling rate, checked against the model's if given.
            ref: the reference transcript (only the ``oracle`` policy uses it).
        """
        if isinstance(speech, (list, tuple)):
            return self.decode_batch(speech, fs=fs)
        return self.decode_batch([speech], fs=fs, refs=[ref])[0]

    @torch.no_grad()
    def decode_batch(
        self,
        speeches: Sequence[Waveform],
        fs: Optional[int] = None,
        refs: Optional[Sequence[Optional[str]]] = None,
    ) -> List[List[EarlyExitResult]]:
        """Decode several utterances at once (the encoder runs on the padded batch).

        Utterances leave the batch at the exit their policy accepts; blocks after it run only
        for the ones still going. Results equal decoding the utterances one by one (up to the
        floating-point noise of batched matrix products).
        """
        padded, lengths = self._pad(speeches, fs)
        return self._decode(padded, lengths, self._refs(refs, len(speeches)))

    @torch.no_grad()
    def batch_decode(self, speech, speech_lengths=None) -> List[List[EarlyExitResult]]:
        """ESPnet's batch entry point: padded ``speech`` + ``speech_lengths``, or a list."""
        if isinstance(speech, (list, tuple)):
            return self.decode_batch(speech)
        if speech_lengths is None:
            raise ValueError("speech_lengths is required for a padded speech array")
        lengths = [int(n) for n in torch.as_tensor(np.asarray(speech_lengths)).reshape(-1)]
        speech = torch.as_tensor(speech)
        return self.decode_batch([speech[b, :n] for b, n in enumerate(lengths)])

    @torch.no_grad()
    def decode_all_exits(
        self,
        speech: Waveform,
        fs: Optional[int] = None,
        ref: Optional[str] = None,
        timings: Optional[Dict[int, float]] = None,
    ) -> Dict[int, List[EarlyExitResult]]:
        """Decode one utterance at every exit, running each encoder block once.

        Returns ``{exit: n-best results}``. With a dynamic policy, each exit's results carry
        the policy's confidences at that exit and the ones before it (what the policy would
        have seen had it stopped there); with ``oracle`` and ``ref``, ``1 - WER``.
        ``timings``, if given, is a dict to which the seconds "as if decoding had stopped at
        exit k" are added per exit (front-end and blocks up to k plus the search at k).
        """
        return self.decode_all_exits_batch([speech], fs, [ref], timings)[0]

    @torch.no_grad()
    def decode_all_exits_batch(
        self,
        speeches: Sequence[Waveform],
        fs: Optional[int] = None,
        refs: Optional[Sequence[Optional[str]]] = None,
        timings: Optional[Dict[int, float]] = None,
    ) -> List[Dict[int, List[EarlyExitResult]]]:
        """:meth:`decode_all_exits` for several utterances (one padded encoder run)."""
        padded, lengths = self._pad(speeches, fs)
        return self._all_exits(
            padded, lengths, self._refs(refs, len(speeches)), timings
        )

    # ------------------------------------------------------------ internals
    @staticmethod
    def _refs(refs: Optional[Sequence[Optional[str]]], n: int) -> List[Optional[str]]:
        if refs is None:
            return [None] * n
        refs = list(refs)
        if len(refs) != n:
            raise ValueError(f"{len(refs)} references for {n} utterances")
        return refs

    def _sync(self) -> None:
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()

    def _encode_begin(self, padded: torch.Tensor, lengths: torch.Tensor) -> EncoderState:
        """``model.encode_begin``; for a batch, features are extracted utterance by utterance.

        ESPnet's STFT front-end (center=True) reflects the signal at its end, but for a
        padded utterance it reads the padding there instead, so the last feature frame of a
        shorter utterance would differ from decoding it alone. Features are cheap: they are
        computed per utterance and padded; subsampling and blocks then run on the batch.
        """
        model = self.asr_model
        if padded.size(0) == 1 or model.frontend is None:
            return model.encode_begin(padded, lengths)
        feats, feats_lengths = [], []
        for b in range(padded.size(0)):
            n = int(lengths[b])
            f, fl = model._features(padded[b : b + 1, :n], lengths[b : b + 1])
            feats.append(f[0, : int(fl[0])])
            feats_lengths.append(int(fl[0]))
        feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        feats_lengths = torch.tensor(feats_lengths, dtype=torch.long, device=feats.device)
        return model.encoder.begin(feats, feats_lengths)

    def _decode(
        self, padded: torch.Tensor, lengths: torch.Tensor, refs: List[Optional[str]]
    ) -> List[List[EarlyExitResult]]:
        policy = self.policy
        if policy.needs_reference:
            return self._decode_with_references(padded, lengths, refs)
        state = self._encode_begin(padded, lengths)
        if not policy.dynamic:
            k = self.exit_layer
            state, out, olens = self.asr_model.encode_to(state, k)
            decoded = self._decode_at(k, out, olens)
            return [self._wrap(d, k, {}) for d in decoded]
        policy.require_threshold()
        return self._decode_dynamic(state, padded.size(0))

    def _decode_with_references(
        self, padded: torch.Tensor, lengths: torch.Tensor, refs: List[Optional[str]]
    ) -> List[List[EarlyExitResult]]:
        """A policy that reads the reference (``oracle``): decode every exit, then choose."""
        missing = [i for i, r in enumerate(refs) if r is None]
        if missing:
            raise ValueError(
                f"exit policy {self.policy.name!r} needs the reference text of every "
                f"utterance (ref=...); missing for utterance(s) {missing}"
            )
        per_utt = self._all_exits(padded, lengths, refs, None)
        results = []
        for i, by_exit in enumerate(per_utt):
            chosen, confs = self._select(by_exit, refs[i])
            for r in by_exit[chosen]:
                r.confidences = dict(confs)
            results.append(by_exit[chosen])
        return results

    def _decode_dynamic(self, state: EncoderState, n_utt: int) -> List[List[EarlyExitResult]]:
        """The exit loop of a dynamic policy: each utterance leaves the batch at the first
        exit that accepts it; the blocks after it run only for those still going."""
        model = self.asr_model
        policy = self.policy
        results: List[Optional[List[EarlyExitResult]]] = [None] * n_utt
        confs: List[Dict[int, float]] = [{} for _ in range(n_utt)]
        active = list(range(n_utt))  # original index of each row of `state`
        tracker = self._tracker(n_utt)
        last = self.exit_layers[-1]
        for k in self.exit_layers:
            state, out, olens = model.encode_to(state, k)
            z_conf, conf_lens, logits = self._policy_logits(k, out, olens)
            row_confs, s_conf = tracker.confidences(k, z_conf, conf_lens, rows=active)
            accepted = []
            for row, i in enumerate(active):
                confs[i][k] = row_confs[row]
                if policy.accept(row_confs[row], k == last):
                    accepted.append(row)
            if accepted:
                stats = s_conf if logits is not None else None  # all frames: reusable
                decoded = self._decode_rows(k, accepted, len(active), out, olens, logits, stats)
                for row, d in zip(accepted, decoded):
                    i = active[row]
                    results[i] = self._wrap(d, k, dict(confs[i]))
            done = set(accepted)
            keep = [row for row in range(len(active)) if row not in done]
            if not keep:
                break
            if len(keep) < len(active):
                state = select_state(state, keep)
                active = [active[row] for row in keep]
        return results  # type: ignore[return-value]

    def _decode_rows(
        self,
        k: int,
        rows: List[int],
        n_rows: int,
        out: torch.Tensor,
        olens: torch.Tensor,
        logits: Optional[torch.Tensor],
        stats: Optional[FrameStats],
    ) -> List[NBest]:
        """:meth:`_decode_at` for the batch rows ``rows`` of ``n_rows`` only."""
        if len(rows) == n_rows:  # all of them: no copy
            return self._decode_at(k, out, olens, logits, stats)
        idx = torch.tensor(rows, device=out.device)

        def pick(x):
            return None if x is None else x.index_select(0, idx)

        return self._decode_at(
            k, pick(out), pick(olens), pick(logits),
            None if stats is None else stats.rows(idx),
        )

    def _all_exits(
        self,
        padded: torch.Tensor,
        lengths: torch.Tensor,
        refs: List[Optional[str]],
        timings: Optional[Dict[int, float]],
    ) -> List[Dict[int, List[EarlyExitResult]]]:
        model = self.asr_model
        policy = self.policy
        n_utt = padded.size(0)
        with_conf = policy.dynamic and not policy.needs_reference
        out_per_utt: List[Dict[int, List[EarlyExitResult]]] = [{} for _ in range(n_utt)]
        confs: List[Dict[int, float]] = [{} for _ in range(n_utt)]
        tracker = self._tracker(n_utt)
        self._sync()
        t0 = time.perf_counter()
        state = self._encode_begin(padded, lengths)
        self._sync()
        t_encoder = time.perf_counter() - t0
        for k in self.exit_layers:
            t0 = time.perf_counter()
            state, out, olens = model.encode_to(state, k)
            self._sync()
            t1 = time.perf_counter()
            t_encoder += t1 - t0
            logits = model.ctc_at(k).ctc_lo(out)  # the features (and greedy search) need it
            stats = frame_stats(logits)
            self._sync()
            t_head = time.perf_counter() - t1
            tracker.observe(k, stats, olens)
            if with_conf:
                if policy.frame_stride == 1:
                    row_confs, _ = tracker.confidences(k, logits, olens, stats)
                else:
                    z_conf, conf_lens, _ = self._policy_logits(k, out, olens)
                    row_confs, _ = tracker.confidences(k, z_conf, conf_lens)
                for i in range(n_utt):
                    confs[i][k] = row_confs[i]
            t2 = time.perf_counter()
            decoded = self._decode_at(k, out, olens, logits if self.greedy else None, stats)
            self._sync()
            t_search = time.perf_counter() - t2
            if timings is not None:
                # as if decoding had stopped at k: the head only counts if the search uses it
                t_k = t_encoder + t_search + (t_head if self.greedy else 0.0)
                timings[k] = timings.get(k, 0.0) + t_k
            for i, d in enumerate(decoded):
                out_per_utt[i][k] = self._wrap(d, k, dict(confs[i]))
                for r in out_per_utt[i][k]:
                    r.features = tracker.view(i, k).features()
        if policy.needs_reference:
            for i, by_exit in enumerate(out_per_utt):
                if refs[i] is None:
                    continue
                _, wer_conf = self._select(by_exit, refs[i])
                for k, rs in by_exit.items():
                    for r in rs:
                        r.confidences = {j: c for j, c in wer_conf.items() if j <= k}
        return out_per_utt

    def _select(
        self, by_exit: Dict[int, List[EarlyExitResult]], ref: str
    ) -> Tuple[int, Dict[int, float]]:
        """A reference-reading policy's choice among an utterance's exits (and its numbers)."""
        texts = {k: self._text_of(r) for k, r in by_exit.items()}
        return self.policy.select(texts, ref)

    def _policy_logits(self, k: int, out: torch.Tensor, olens: torch.Tensor):
        """CTC logits at exit k for the policy: (logits, lengths, all-frame logits or None).
        With frame_stride n > 1 the head runs on every n-th frame only.
        """
        head = self.asr_model.ctc_at(k)
        stride = self.policy.frame_stride
        if stride == 1:
            logits = head.ctc_lo(out)
            return logits, olens, logits
        sub = head.ctc_lo(out[:, ::stride])
        return sub, (olens + stride - 1) // stride, None

    def _tracker(self, n_utt: int) -> ExitTracker:
        """The per-utterance state of the policy over the exits of a batch."""
        return ExitTracker(self.policy, n_utt, self.exit_layers, self.asr_model.blank_id)

    @staticmethod
    def _text_of(results: List[EarlyExitResult]) -> str:
        if not results:
            return ""
        best = results[0]
        return best.text if best.text is not None else " ".join(best.token)

    @staticmethod
    def _wrap(results, k: int, confidences: Dict[int, float]) -> List[EarlyExitResult]:
        return [
            EarlyExitResult(text, token, token_int, hyp, k, dict(confidences))
            for text, token, token_int, hyp in results
        ]

    def _decode_at(
        self,
        k: int,
        out: torch.Tensor,
        olens: torch.Tensor,
        logits: Optional[torch.Tensor] = None,
        stats: Optional[FrameStats] = None,
    ) -> List[NBest]:
        """ESPnet-style n-best lists of (text, token, token_int, hyp) at exit k, per row
        (``logits``: exit k's CTC logits of ``out``, ``stats``: their frame statistics, where
        they were computed already)."""
        return self.searches.decode(
            k,
            out,
            olens,
            maxlenratio=self.maxlenratio,
            minlenratio=self.minlenratio,
            logits=logits,
            stats=stats,
        )


def select_state(state: EncoderState, rows: Sequence[int]) -> EncoderState:
    """Keep only the batch rows ``rows`` of an encoder state.

    Tensors (also inside tuples/lists) whose first dimension is the batch size are indexed;
    others (e.g. a relative positional encoding of batch size 1) are kept as they are.
    """
    batch = state.masks.size(0)
    idx = torch.as_tensor(list(rows), dtype=torch.long, device=state.masks.device)

    def pick(x):
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.size(0) == batch:
            return x.index_select(0, idx)
        if isinstance(x, tuple):
            return tuple(pick(e) for e in x)
        if isinstance(x, list):
            return [pick(e) for e in x]
        return x

    return EncoderState(pick(state.hidden), pick(state.masks), state.layer, pick(state.extra))
