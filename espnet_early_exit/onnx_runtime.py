"""Decode an exported early-exit model with onnxruntime: numpy + onnxruntime (+ sentencepiece).

This module imports neither torch nor ESPnet (``pip install onnxruntime numpy sentencepiece``
is enough). It reads a directory written by :mod:`espnet_early_exit.onnx_export`
(``manifest.json``, ``front.onnx``, ``segment<k>.onnx``, ``head<k>.onnx``, ``frontend.npz``,
``bpe.model``) and decodes as ``EarlyExitSpeech2Text`` does with greedy CTC:

    features (numpy: STFT, power, log-mel, as ESPnet's default front-end)
    -> front.onnx (normalisation + subsampling)
    -> segment<k1>.onnx -> [head<k1>.onnx -> policy] -> segment<k2>.onnx -> ...

stopping for real: no segment after the chosen exit runs (``runs`` counts the graphs run).
The exit policies that need only the exits' logits are computed here in numpy, with the
definitions of :mod:`espnet_early_exit.policies` (tests check that both agree):

``entropy``         mean over frames of the CTC posterior entropy / log V; stop when < threshold
``max_posterior``   mean over non-blank frames (all if none) of max_v p_t(v); stop when >= threshold
``agreement``       the greedy hypotheses of the last ``threshold`` (the patience, >= 1) exits
                    before this one equal its own (``max_edits`` n: within n token edits)
``learned``         P(this exit's hypothesis equals the last exit's) from the per-exit logistic
                    regression fitted by ``bin/fit_exit_policy`` (``exit_policy.json``, copied
                    by the exporter: ``manifest.json`` key ``exit_policy_file``); stop when >=

The last two read the trace of the exits before, built by the same numpy code as the torch
decoder's (:mod:`espnet_early_exit.exit_features`, :mod:`espnet_early_exit.exit_classifier`).
The last exit always accepts. A dynamic policy without a threshold takes the one the model was
packed with (``manifest.json`` ``policies``, from ``selected_thresholds.json``), if any.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from espnet_early_exit.exit_classifier import DEFAULT_NAME as EXIT_POLICY_FILE
from espnet_early_exit.exit_classifier import ExitClassifier
from espnet_early_exit.exit_features import (
    ExitView,
    agreement_count,
    greedy_tokens,
    make_view,
    mean_entropy_share,
    mean_over_nonblank,
)

MANIFEST = "manifest.json"
FORMAT = "espnet_early_exit.onnx"
FORMAT_VERSION = 1
GRAPH_META_KEY = "eee_model_id"
REQUIRED_KEYS = ("format", "version", "model_id", "exits", "graphs", "hidden_inputs",
                 "sample_rate", "frontend", "min_feature_frames", "token_list", "tokenizer",
                 "blank_id", "policies")

PathLike = Union[str, Path]


class OnnxModelError(ValueError):
    """An exported model directory that cannot be used (the message names the file/key)."""


class TooShortError(ValueError):
    """An utterance too short for the STFT or the subsampling."""


# ----------------------------------------------------------------------------- manifest
def read_manifest(model_dir: PathLike) -> dict:
    """``model_dir/manifest.json``, checked: format, version, required keys, exits/graphs."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (export the model with "
                                "python -m espnet_early_exit.bin.export_onnx)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise OnnxModelError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnnxModelError(f"{path}: key 'format' is not {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise OnnxModelError(f"{path}: key 'version' is {manifest.get('version')!r}; this "
                             f"runtime reads version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise OnnxModelError(f"{path}: missing key(s) {', '.join(missing)}")
    exits = [e["exit"] for e in manifest["exits"]]
    for part in ("segments", "heads"):
        listed = sorted(int(k) for k in manifest["graphs"].get(part, {}))
        if listed != sorted(exits):
            raise OnnxModelError(f"{path}: key 'graphs.{part}' lists exits {listed}, key "
                                 f"'exits' {exits}")
    return manifest


# ----------------------------------------------------------------------------- features
def log_mel(wave: np.ndarray, spec: dict, window: np.ndarray, melmat: np.ndarray) -> np.ndarray:
    """ESPnet's default front-end in numpy: STFT (centred, reflect-padded, window zero-padded
    to n_fft), power, mel, log (clamped at 1e-10). (n_samples,) -> (frames, n_mels) float32."""
    n_fft, hop, win = spec["n_fft"], spec["hop_length"], spec["win_length"]
    x = np.asarray(wave, dtype=np.float32)
    if x.size < spec["min_samples"]:
        raise TooShortError(f"has {x.size} samples and is too short for the front-end's STFT "
                            f"(it needs at least {spec['min_samples']})")
    if spec["center"]:
        x = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    n_frames = 1 + (x.size - n_fft) // hop
    w = np.zeros(n_fft, dtype=np.float64)
    left = (n_fft - win) // 2
    w[left:left + win] = window
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames] * w
    stft = np.fft.rfft(frames, n=n_fft, axis=-1)
    power = (stft.real ** 2 + stft.imag ** 2).astype(np.float32)
    mel = np.maximum(power @ melmat, np.float32(1e-10))
    base = spec.get("log_base")
    out = np.log(mel) if base is None else np.log(mel) / np.float32(math.log(base))
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class FrameStats:
    """Per-frame statistics of (T, V) logits (as ``frame_stats.FrameStats``): max z,
    log sum exp(z - max), E_p[z] - max, argmax."""

    max: np.ndarray
    log_sum: np.ndarray
    mean_shift: np.ndarray
    argmax: np.ndarray
    vocab_size: int


def frame_stats(logits: np.ndarray) -> FrameStats:
    """The statistics of every frame of (T, V) logits (float32 terms, float64 sums)."""
    z = np.asarray(logits, dtype=np.float32)
    m = z.max(-1)
    shifted = z - m[..., None]
    e = np.exp(shifted)
    s = e.sum(-1, dtype=np.float64)
    mean_shift = np.einsum("tv,tv->t", e, shifted, dtype=np.float64) / s
    return FrameStats(m, np.log(s), mean_shift, z.argmax(-1), z.shape[-1])


def entropy_confidence(stats: FrameStats, blank_id: int = 0) -> float:
    """Mean frame entropy over log V, in [0, 1] (policies.EntropyPolicy)."""
    return mean_entropy_share(stats.log_sum - stats.mean_shift, stats.vocab_size)


def max_posterior_confidence(stats: FrameStats, blank_id: int = 0) -> float:
    """Mean max posterior over non-blank frames, all if none (policies.MaxPosteriorPolicy)."""
    return mean_over_nonblank(np.exp(-stats.log_sum), stats.argmax, blank_id)


def exit_view(stats: FrameStats, k: int, index: int, blank_id: int,
              prev: Optional[ExitView] = None) -> ExitView:
    """Exit k's view for the trace policies (as ``exit_trace.exit_view`` from torch stats)."""
    return make_view(k, index, stats.argmax, entropy_confidence(stats),
                     max_posterior_confidence(stats, blank_id), blank_id, prev)


@dataclass(frozen=True)
class NumpyPolicy:
    """A policy's direction and range; ``confidence`` of one exit's frame statistics, or None
    for a policy that reads the trace of the exits before (the decoder builds its number from
    the policy's options: ``OnnxEarlyExitSpeech2Text._policy``)."""

    name: str
    higher_is_confident: bool
    confidence: Optional[Callable[[FrameStats, int], float]] = None
    threshold_range: Tuple[float, float] = (0.0, 1.0)
    options: Tuple[str, ...] = ()  # what exit_policy_conf may give it

    @property
    def uses_trace(self) -> bool:
        return self.confidence is None

    def accept(self, confidence: float, threshold: float, is_last_exit: bool) -> bool:
        if is_last_exit:
            return True
        return confidence >= threshold if self.higher_is_confident else confidence < threshold


POLICIES: Dict[str, NumpyPolicy] = {
    "entropy": NumpyPolicy("entropy", False, entropy_confidence),
    "max_posterior": NumpyPolicy("max_posterior", True, max_posterior_confidence),
    "agreement": NumpyPolicy("agreement", True, None, (1.0, math.inf), ("max_edits",)),
    "learned": NumpyPolicy("learned", True, None, (0.0, 1.0), ("model",)),
}


def format_confidences(confidences: Dict[int, float]) -> str:
    """``{2: 0.5, 4: 0.9}`` -> ``"2:0.5 4:0.9"`` (the ``confidence`` file's format)."""
    return " ".join(f"{k}:{v:.6g}" for k, v in sorted(confidences.items()))


# ----------------------------------------------------------------------------- results
@dataclass
class OnnxResult:
    """The best greedy-CTC hypothesis of one utterance at the exit it stopped at."""

    text: str
    token: List[str]
    token_int: List[int]
    score: float
    exit_layer: int
    confidences: Dict[int, float] = field(default_factory=dict)
    features: Optional[Dict[str, float]] = None  # all-exits pass: exit_features.FEATURES


class Detokenizer:
    """token ids -> (tokens, text), as ESPnet's converter and tokenizer do."""

    def __init__(self, manifest: dict, model_dir: Path):
        self.token_list: List[str] = list(manifest["token_list"])
        spec = manifest["tokenizer"]
        self.token_type = spec["token_type"]
        self.sp = None
        if self.token_type == "bpe":
            import sentencepiece

            path = model_dir / spec["bpemodel"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the bpe model named by {MANIFEST} key "
                                        "'tokenizer.bpemodel' is missing")
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.space = spec.get("space_symbol", "<space>")
        self.delimiter = spec.get("delimiter") or " "

    def __call__(self, ids: Sequence[int]) -> Tuple[List[str], str]:
        tokens = [self.token_list[i] for i in ids]
        if self.sp is not None:
            return tokens, self.sp.decode_pieces(tokens)
        if self.token_type == "char":
            return tokens, "".join(" " if t == self.space else t for t in tokens)
        return tokens, self.delimiter.join(tokens)


def greedy_ids(stats: FrameStats, blank_id: int) -> Tuple[List[int], float]:
    """The best CTC path: argmax per frame, repeats collapsed, blanks dropped; its score is
    the sum of the frames' log max posteriors."""
    return greedy_tokens(stats.argmax, blank_id), float(-stats.log_sum.sum())


# ----------------------------------------------------------------------------- decoder
class OnnxEarlyExitSpeech2Text:
    """Greedy-CTC early-exit decoding of an exported model with onnxruntime, real stopping.

    Args:
        model_dir: the export directory (``manifest.json`` and the graphs).
        exit_layer: the exit of the ``fixed`` policy (default: the last exit).
        exit_policy: ``fixed``, ``entropy``, ``max_posterior``, ``agreement`` or ``learned``.
        exit_threshold: the dynamic policy's threshold (default: the packed one): in [0, 1],
            ``agreement``'s patience >= 1.
        num_threads: onnxruntime's intra-op threads (default: onnxruntime's choice).
        providers: onnxruntime execution providers (default: CPU).
        session_config: onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}`` (idle threads sleep instead of
            spinning: for hosts that share the cores with other work).
        exit_policy_conf: the policy's options, as ``EarlyExitSpeech2Text``'s:
            ``{"max_edits": n}`` (agreement), ``{"model": path or name}`` (learned; default:
            the export's ``exit_policy.json``). Options of another policy are ignored.
    """

    def __init__(self, model_dir: PathLike, exit_layer: Optional[int] = None,
                 exit_policy: str = "fixed", exit_threshold: Optional[float] = None,
                 num_threads: Optional[int] = None, providers: Optional[List[str]] = None,
                 session_config: Optional[Dict[str, str]] = None,
                 exit_policy_conf: Optional[Dict[str, Any]] = None):
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.exit_layers: List[int] = [int(e["exit"]) for e in self.manifest["exits"]]
        # a trace policy's number from the views of the exits so far (None: not one)
        self._traced: Optional[Callable[[List[ExitView]], float]] = None
        self.policy, self.exit_threshold = self._policy(exit_policy, exit_threshold,
                                                        dict(exit_policy_conf or {}))
        if self.policy is not None and exit_layer is not None:
            raise ValueError(f"exit_layer={exit_layer} is for exit_policy 'fixed'; policy "
                             f"{exit_policy!r} chooses the exit itself")
        if exit_layer is None:
            exit_layer = self.exit_layers[-1]
        if exit_layer not in self.exit_layers:
            raise ValueError(f"exit_layer {exit_layer} is not one of the model's exits "
                             f"{self.exit_layers}")
        self.exit_layer = exit_layer
        self.blank_id = int(self.manifest["blank_id"])
        self.sample_rate = self.manifest["sample_rate"]
        self.detokenize = Detokenizer(self.manifest, self.model_dir)
        self._frontend_arrays = self._load_frontend()
        self.sessions = self._load_sessions(num_threads, providers, session_config or {})
        self.runs: Counter = Counter()  # graph name -> times run

    # ------------------------------------------------------------------------ set-up
    def _policy(self, name: str, threshold: Optional[float], conf: Dict[str, Any]):
        known = sorted({o for p in POLICIES.values() for o in p.options})
        unknown = sorted(set(conf) - set(known))
        if unknown:
            raise ValueError(f"exit_policy_conf: {', '.join(unknown)}: not an option of the ONNX "
                             f"runtime's policies ({', '.join(known)})")
        if name == "fixed":
            if threshold is not None:
                raise ValueError(f"exit policy 'fixed' takes no threshold (got {threshold})")
            return None, None
        if name not in POLICIES:
            raise ValueError(f"exit policy {name!r} is not available in the ONNX runtime; "
                             f"choose fixed, {', '.join(sorted(POLICIES))}")
        policy = POLICIES[name]
        lo, hi = policy.threshold_range
        if threshold is None:
            threshold = (self.manifest["policies"].get(name) or {}).get("threshold")
            if threshold is None:
                raise ValueError(f"exit policy {name!r} needs exit_threshold (a value in "
                                 f"[{lo}, {hi}]); {MANIFEST} key 'policies' has none selected "
                                 "for it")
        if isinstance(threshold, bool) or not lo <= float(threshold) <= hi:
            raise ValueError(f"exit_threshold {threshold} is outside [{lo}, {hi}], the range of "
                             f"the {name!r} policy")
        if name == "agreement":
            max_edits = conf.get("max_edits")
            max_edits = 0 if max_edits is None else max_edits
            if isinstance(max_edits, bool) or not isinstance(max_edits, int) or max_edits < 0:
                raise ValueError(f"max_edits: {max_edits!r} is not an integer >= 0")
            self._traced = lambda trace: agreement_count(trace, max_edits)
        elif name == "learned":
            classifier = self._load_classifier(conf.get("model"))
            self._traced = lambda trace: classifier.view_probability(trace[-1])
        return policy, float(threshold)

    def _load_classifier(self, model: Optional[str]) -> ExitClassifier:
        """The learned policy's fit: ``model`` (a path, or a name in the export dir), else the
        file the manifest names (``exit_policy_file``, copied by the exporter)."""
        fit = "python -m espnet_early_exit.bin.fit_exit_policy --model_file <the model file>"
        if model is not None:
            path = Path(model) if Path(model).is_file() else self.model_dir / model
        elif self.manifest.get("exit_policy_file"):
            path = self.model_dir / self.manifest["exit_policy_file"]
        else:
            raise FileNotFoundError(
                f"exit policy 'learned' needs {EXIT_POLICY_FILE} (its fitted model) and "
                f"{self.model_dir} has none ({MANIFEST} key 'exit_policy_file' is not set): fit "
                f"it with {fit}, then export the model again (the exporter copies it), or give "
                "exit_policy_conf {'model': <path>}")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the learned exit policy's model is missing (fit "
                                    f"one with {fit})")
        try:
            classifier = ExitClassifier.load(path)
            classifier.check_exits(self.exit_layers, path)
        except (ValueError, KeyError, TypeError) as e:
            raise OnnxModelError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        return classifier

    def _load_frontend(self) -> Optional[Dict[str, np.ndarray]]:
        if self.manifest["frontend"] is None:
            return None
        path = self.model_dir / "frontend.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the front-end's window and mel matrix are missing "
                                    f"({MANIFEST} key 'frontend' needs them)")
        with np.load(path) as data:
            return {k: data[k] for k in ("window", "melmat")}

    def _load_sessions(self, num_threads: Optional[int], providers: Optional[List[str]],
                       config: Dict[str, str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        for key, value in config.items():
            options.add_session_config_entry(key, str(value))
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        graphs = self.manifest["graphs"]
        names = {"front": graphs["front"]}
        names.update({f"segment{k}": f for k, f in graphs["segments"].items()})
        names.update({f"head{k}": f for k, f in graphs["heads"].items()})
        sessions = {}
        for name, file in names.items():
            path = self.model_dir / file
            if not path.is_file():
                raise FileNotFoundError(f"{path}: graph {name!r} listed in {MANIFEST} key "
                                        "'graphs' is missing")
            sess = ort.InferenceSession(str(path), options,
                                        providers=providers or ["CPUExecutionProvider"])
            found = sess.get_modelmeta().custom_metadata_map.get(GRAPH_META_KEY)
            if found != self.manifest["model_id"]:
                raise OnnxModelError(
                    f"{path} belongs to model {found!r} but {self.model_dir / MANIFEST} key "
                    f"'model_id' is {self.manifest['model_id']!r}: the manifest and the graphs "
                    "come from different exports"
                )
            sessions[name] = sess
        return sessions

    # ------------------------------------------------------------------------ steps
    def _run(self, name: str, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        self.runs[name] += 1
        return self.sessions[name].run(None, feeds)

    def _check(self, speech, index: int) -> np.ndarray:
        where = f"utterance {index}: " if index else ""
        x = np.asarray(speech)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise ValueError(f"{where}speech must be a mono waveform of shape (n_samples,), got "
                             f"shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"{where}speech is empty (0 samples)")
        if not np.isfinite(x).all():
            raise ValueError(f"{where}speech contains NaN or infinite samples")
        return x.astype(np.float32)

    def features(self, speeches: Sequence[np.ndarray], fs: Optional[int] = None):
        """Padded features of the utterances (B, T, F) float32 and their lengths (B,) int64."""
        if fs is not None and self.sample_rate and int(fs) != int(self.sample_rate):
            raise ValueError(f"speech is sampled at {fs} Hz but the model expects "
                             f"{self.sample_rate} Hz audio ({MANIFEST} key 'sample_rate'); "
                             "resample it first")
        if len(speeches) == 0:
            raise ValueError("no utterances to decode")
        spec, arrays = self.manifest["frontend"], self._frontend_arrays
        feats = [self._check(s, i) for i, s in enumerate(speeches)]
        if spec is not None:
            feats = [log_mel(f, spec, arrays["window"], arrays["melmat"]) for f in feats]
        lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
        if int(lengths.min()) < self.manifest["min_feature_frames"]:
            raise TooShortError(f"has {int(lengths.min())} frames and is too short for "
                                f"subsampling (it needs {self.manifest['min_feature_frames']})")
        padded = np.zeros((len(feats), int(lengths.max()), feats[0].shape[1]), np.float32)
        for b, f in enumerate(feats):
            padded[b, : f.shape[0]] = f
        return padded, lengths

    def _begin(self, speeches, fs) -> Dict[str, np.ndarray]:
        feats, lengths = self.features(speeches, fs)
        outs = self._run("front", {"feats": feats, "feats_lengths": lengths})
        return dict(zip([*self.manifest["hidden_inputs"], "mask"], outs))

    def _advance(self, state: Dict[str, np.ndarray], k: int) -> Dict[str, np.ndarray]:
        (hidden,) = self._run(f"segment{k}", state)
        return dict(state, hidden=hidden)

    def _logits(self, state: Dict[str, np.ndarray], k: int) -> np.ndarray:
        return self._run(f"head{k}", {"hidden": state["hidden"]})[0]

    def _result(self, stats: FrameStats, k: int, confidences: Dict[int, float]) -> OnnxResult:
        ids, score = greedy_ids(stats, self.blank_id)
        tokens, text = self.detokenize(ids)
        return OnnxResult(text, tokens, ids, score, k, dict(confidences))

    def _observe(self, trace: List[ExitView], stats: FrameStats, k: int) -> ExitView:
        """Exit k's view, appended to the utterance's ``trace`` (once per exit)."""
        if not trace or trace[-1].exit != k:
            trace.append(exit_view(stats, k, self.exit_layers.index(k), self.blank_id,
                                   trace[-1] if trace else None))
        return trace[-1]

    def _confidence(self, stats: FrameStats, k: int, trace: List[ExitView]) -> float:
        """The policy's number at exit k of one utterance (a trace policy's: from its views,
        exit k's added to ``trace``)."""
        if self._traced is None:
            return self.policy.confidence(stats, self.blank_id)
        self._observe(trace, stats, k)
        return self._traced(trace)

    # ------------------------------------------------------------------------ decoding
    def __call__(self, speech: np.ndarray, fs: Optional[int] = None) -> OnnxResult:
        """Decode one mono waveform (n_samples,)."""
        return self.decode_batch([speech], fs)[0]

    def decode_batch(self, speeches: Sequence[np.ndarray],
                     fs: Optional[int] = None) -> List[OnnxResult]:
        """Decode several utterances in one padded batch; each leaves it at its exit."""
        state = self._begin(speeches, fs)
        results: List[Optional[OnnxResult]] = [None] * len(speeches)
        confs: List[Dict[int, float]] = [{} for _ in speeches]
        traces: List[List[ExitView]] = [[] for _ in speeches]
        active = list(range(len(speeches)))
        exits = self.exit_layers if self.policy else [k for k in self.exit_layers
                                                      if k <= self.exit_layer]
        for k in exits:
            state = self._advance(state, k)
            if self.policy is None and k != self.exit_layer:
                continue
            logits, lengths = self._logits(state, k), state["mask"].sum(-1).reshape(-1)
            keep = []
            for row, i in enumerate(active):
                stats = frame_stats(logits[row, : int(lengths[row])])
                if self.policy is not None:
                    confs[i][k] = self._confidence(stats, k, traces[i])
                    if not self.policy.accept(confs[i][k], self.exit_threshold,
                                              k == self.exit_layers[-1]):
                        keep.append(row)
                        continue
                results[i] = self._result(stats, k, confs[i])
            if not keep:
                break
            active = [active[row] for row in keep]
            state = dict(state, hidden=state["hidden"][keep], mask=state["mask"][keep])
        return results  # type: ignore[return-value]

    def decode_all_exits(self, speech: np.ndarray, fs: Optional[int] = None,
                         timings: Optional[Dict[int, float]] = None) -> Dict[int, OnnxResult]:
        """Decode one utterance at every exit, running each segment once. Each exit's result
        carries its ``features`` (exit_features.FEATURES, what bin/fit_exit_policy fits on)
        and, with a dynamic policy, the policy's numbers up to it. ``timings`` (a dict) gets
        the seconds "as if decoding had stopped at exit k" (a fixed exit: the policies'
        numbers not included) added per exit."""
        t0 = time.perf_counter()
        state = self._begin([speech], fs)
        encoder = time.perf_counter() - t0
        out: Dict[int, OnnxResult] = {}
        confs: Dict[int, float] = {}
        trace: List[ExitView] = []
        for k in self.exit_layers:
            t0 = time.perf_counter()
            state = self._advance(state, k)
            t1 = time.perf_counter()
            encoder += t1 - t0
            n = int(state["mask"].sum())
            stats = frame_stats(self._logits(state, k)[0, :n])
            out[k] = self._result(stats, k, {})
            if timings is not None:
                timings[k] = timings.get(k, 0.0) + encoder + time.perf_counter() - t1
            view = self._observe(trace, stats, k)
            if self.policy is not None:
                confs[k] = self._confidence(stats, k, trace)
            out[k].confidences, out[k].features = dict(confs), view.features()
        return out
