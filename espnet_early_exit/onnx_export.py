"""Export an early-exit model to ONNX by segments, for decoding with onnxruntime (no torch).

``export_onnx(out_dir, asr_train_config=..., asr_model_file=...)`` (or ``model_zip=...``, a
packed model; CLI: ``python -m espnet_early_exit.bin.export_onnx``) writes::

    out_dir/manifest.json     what the runtime needs (below)
    out_dir/front.onnx        normalisation + pre-encoder + the encoder's subsampling
                              (feats, feats_lengths) -> hidden [, pos_emb], mask
    out_dir/segment<k>.onnx   blocks k_{i-1}+1 .. k_i between consecutive exits:
                              hidden [, pos_emb], mask -> hidden_out
    out_dir/head<k>.onnx      exit k's norm + CTC projection: hidden -> logits
    out_dir/frontend.npz      the STFT window and mel matrix of ESPnet's default front-end,
                              computed in numpy by the runtime (``onnx_runtime.log_mel``)
    out_dir/bpe.model         the sentencepiece model (token type bpe)
    out_dir/exit_policy.json  the ``learned`` exit policy's fit, when the model has one beside
                              its model file (``bin/fit_exit_policy``; a packed model carries
                              it beside its model member)

Every graph has dynamic batch and time axes and carries the model's fingerprint in its
metadata (``eee_model_id``), which the runtime compares with ``manifest.json``'s ``model_id``.
``manifest.json`` holds ``format``, ``version``, ``model_id``, ``exits`` (``[{"exit": k,
"share": FLOPs share, "gflops", "head_gflops"}]`` from :func:`espnet_early_exit.costs.exit_costs`),
``front_share``, ``graphs`` (file names), ``hidden_inputs``, ``sample_rate``, ``frontend``
(STFT/log-mel parameters, or null for a model that reads features), ``min_feature_frames``,
``token_list``, ``tokenizer`` (``token_type`` + ``bpemodel`` / ``space_symbol`` /
``delimiter``), ``blank_id``, ``policies`` (the thresholds the model was packed with:
``selected_thresholds.json`` beside the config, ``{}`` if none), ``exit_policy_file``
(``"exit_policy.json"`` or ``null``: the learned policy's fit, checked against the model's
exits) and ``quantization`` (``null`` or ``"int8"``: onnxruntime's dynamic quantisation of
the MatMul weights of every graph; convolutions stay float32, see ``_quantize``).

The TorchScript-based exporter is used (``torch.onnx.export(..., dynamo=False)``; it needs
only ``onnx``, not ``onnxscript``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from espnet_early_exit.encoders.exits import EncoderState
from espnet_early_exit.exit_classifier import DEFAULT_NAME as EXIT_POLICY_FILE
from espnet_early_exit.exit_classifier import ExitClassifier
from espnet_early_exit.fileio import atomic_directory
from espnet_early_exit.onnx_runtime import FORMAT, FORMAT_VERSION, GRAPH_META_KEY, MANIFEST

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
OPSET = 17
SUPPORTED_TOKEN_TYPES = ("char", "bpe", "word")


# ------------------------------------------------------------------ the graphs' modules
def _hidden_tensors(hidden: Any) -> Tuple[torch.Tensor, ...]:
    if isinstance(hidden, torch.Tensor):
        return (hidden,)
    if isinstance(hidden, tuple) and all(isinstance(h, torch.Tensor) for h in hidden):
        return tuple(hidden)
    raise NotImplementedError(
        f"the encoder passes a {type(hidden).__name__} between blocks; ONNX export handles "
        "a tensor or ESPnet's (tensor, pos_emb) tuple"
    )


class _Front(torch.nn.Module):
    """(feats, feats_lengths) -> hidden tensors + mask: ``model.encode_begin`` on features
    (the model's waveform front-end is detached while this is traced: see ``_no_frontend``)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, feats, feats_lengths):
        state = self.model.encode_begin(feats, feats_lengths)
        if state.extra is not None:
            raise NotImplementedError("ONNX export: encoders with extra block state")
        return (*_hidden_tensors(state.hidden), state.masks)


class _Segment(torch.nn.Module):
    """Blocks ``start+1 .. end`` (1-based): hidden tensors + mask -> hidden."""

    def __init__(self, encoder, start: int, end: int):
        super().__init__()
        self.encoder, self.start, self.end = encoder, start, end

    def forward(self, *inputs):
        hidden = inputs[0] if len(inputs) == 2 else tuple(inputs[:-1])
        state = self.encoder.advance(EncoderState(hidden, inputs[-1], self.start), self.end)
        return _hidden_tensors(state.hidden)[0]


class _Head(torch.nn.Module):
    """Exit k's norm and CTC projection: hidden -> logits."""

    def __init__(self, model, k: int):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, hidden):
        return self.model.ctc_at(self.k).ctc_lo(self.model.encoder.normalize_exit(self.k, hidden))


@contextlib.contextmanager
def _no_frontend(model):
    frontend = model.frontend
    model.frontend = None
    try:
        yield
    finally:
        model.frontend = frontend


# ------------------------------------------------------------------ manifest parts
def frontend_spec(model, fs: int) -> Tuple[Optional[dict], Dict[str, np.ndarray]]:
    """The numpy front-end's parameters and arrays (STFT window, mel matrix), or (None, {})
    for a model that reads features."""
    from espnet2.asr.frontend.default import DefaultFrontend

    fe = model.frontend
    if fe is None:
        return None, {}
    enh = getattr(fe, "frontend", None)
    if not isinstance(fe, DefaultFrontend) or fe.stft is None or (
        enh is not None and (getattr(enh, "use_wpe", False) or getattr(enh, "use_beamformer", False))
    ):
        raise NotImplementedError(
            f"ONNX export handles ESPnet's default STFT + log-mel front-end, not "
            f"{type(fe).__name__} (with its options)"
        )
    stft = fe.stft
    if stft.window is None:
        window = np.ones(stft.win_length, dtype=np.float32)
    else:
        window = getattr(torch, f"{stft.window}_window")(stft.win_length).numpy()
    spec = {
        "type": "stft_logmel",
        "fs": fs,
        "n_fft": int(stft.n_fft),
        "win_length": int(stft.win_length),
        "hop_length": int(stft.hop_length),
        "center": bool(stft.center),
        "normalized": bool(stft.normalized),
        "onesided": bool(stft.onesided),
        "log_base": fe.logmel.log_base,
        "min_samples": int(stft.n_fft) // 2 + 1 if stft.center else int(stft.n_fft),
    }
    if spec["normalized"] or not spec["onesided"]:
        raise NotImplementedError("ONNX export: normalized or two-sided STFT front-ends")
    return spec, {"window": window.astype(np.float32),
                  "melmat": fe.logmel.melmat.detach().cpu().numpy().astype(np.float32)}


def min_feature_frames(encoder) -> int:
    """Fewest feature frames the encoder's subsampling accepts."""
    from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import check_short_utt

    embed = getattr(encoder, "embed", None)
    if embed is None:
        return 1
    short, limit = check_short_utt(embed, 0)
    frames = limit if short else 1
    return max(frames, int(getattr(embed, "min_frames", None) or 1))


def tokenizer_spec(s2t, out_dir: Path) -> dict:
    """The token type and what turns tokens into text (the bpe model is copied)."""
    token_type = getattr(s2t.asr_train_args, "token_type", None)
    if token_type not in SUPPORTED_TOKEN_TYPES:
        raise NotImplementedError(
            f"ONNX export: token_type {token_type!r}; supported: {', '.join(SUPPORTED_TOKEN_TYPES)}"
        )
    tok = s2t.tokenizer
    spec: Dict[str, Any] = {"token_type": token_type}
    if token_type == "bpe":
        if tok is None:
            raise ValueError("token_type bpe but no bpemodel: give the config's bpemodel")
        shutil.copyfile(str(tok.model), out_dir / "bpe.model")
        spec["bpemodel"] = "bpe.model"
    elif token_type == "char":
        spec["space_symbol"] = tok.space_symbol
    else:
        spec["delimiter"] = tok.delimiter
    return spec


def model_fingerprint(model) -> str:
    """sha256 of the state dict (names, shapes, values): which model a graph belongs to."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _selected_policies(config_dir: Path) -> dict:
    path = config_dir / "selected_thresholds.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a {{policy: {{threshold: ...}}}} mapping")
    return {p: v for p, v in data.items() if isinstance(v, dict) and v.get("threshold") is not None}


def copy_exit_policy(model_file: Optional[PathLike], exit_layers: List[int],
                     out_dir: Path) -> Optional[str]:
    """The learned exit policy's fit beside the model file (``exit_policy.json``, where
    ``bin/fit_exit_policy`` writes it and a packed model is unpacked with it), checked and
    copied into ``out_dir``; returns its name there, or None when the model has none."""
    if model_file is None:
        return None
    src = Path(model_file).parent / EXIT_POLICY_FILE
    if not src.is_file():
        return None
    ExitClassifier.load(src).check_exits(exit_layers, src)
    shutil.copyfile(src, out_dir / EXIT_POLICY_FILE)
    return EXIT_POLICY_FILE


# ------------------------------------------------------------------ writing graphs
def _export(module, args, path: Path, inputs: List[str], outputs: List[str], axes: dict):
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
        torch.onnx.export(
            module, tuple(args), str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )


def _tag_graph(path: Path, model_id: str, name: str) -> None:
    import onnx

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in ((GRAPH_META_KEY, model_id), ("eee_graph", name)):
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


# The op types that int8 quantises. Only MatMul (every linear layer: attention, feed-forward,
# heads): onnxruntime runs dynamically quantised convolutions (ConvInteger) on CPU more slowly
# than float32 ones, and quantising them made the whole LibriSpeech-100 graph about twice as
# slow as float32 (benchmarks/bench_onnx.py), while MatMul-only int8 is faster than float32.
QUANTIZED_OPS = ["MatMul"]


def _quantize(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.stem + ".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run shape inference first, once per graph
    try:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8,
                         op_types_to_quantize=QUANTIZED_OPS)
    finally:
        root.setLevel(level)
    tmp.replace(path)


def _axes(names: List[str]) -> dict:
    known = {
        "feats": {0: "batch", 1: "frames"}, "feats_lengths": {0: "batch"},
        "hidden": {0: "batch", 1: "time"}, "hidden_out": {0: "batch", 1: "time"},
        "pos_emb": {0: "pos_batch", 1: "pos_time"}, "mask": {0: "batch", 2: "time"},
        "logits": {0: "batch", 1: "time"},
    }
    return {n: known[n] for n in names}


def write_graphs(model, out_dir: Path, input_size: int, quantize: Optional[str]) -> dict:
    """front, segment<k>, head<k> graphs into out_dir; -> {"graphs": ..., "hidden_inputs": ...}."""
    model.eval()
    feats = torch.randn(2, 120, input_size)
    feats_lengths = torch.tensor([120, 97])
    front = _Front(model)
    with _no_frontend(model), torch.no_grad():
        outs = front(feats, feats_lengths)
    hidden_names = ["hidden", "pos_emb"][: len(outs) - 1]
    if len(hidden_names) != len(outs) - 1:
        raise NotImplementedError(f"ONNX export: the encoder passes {len(outs) - 1} tensors")
    graphs: Dict[str, Any] = {"front": "front.onnx", "segments": {}, "heads": {}}
    with _no_frontend(model):
        _export(front, (feats, feats_lengths), out_dir / "front.onnx",
                ["feats", "feats_lengths"], hidden_names + ["mask"],
                _axes(["feats", "feats_lengths", *hidden_names, "mask"]))
    seg_inputs = [*hidden_names, "mask"]
    start, state_args = 0, outs
    for k in model.exit_layers:
        name = f"segment{k}.onnx"
        segment = _Segment(model.encoder, start, k)
        _export(segment, state_args, out_dir / name, seg_inputs, ["hidden_out"],
                _axes([*seg_inputs, "hidden_out"]))
        with torch.no_grad():
            hidden = segment(*state_args)
        head = f"head{k}.onnx"
        _export(_Head(model, k), (hidden,), out_dir / head, ["hidden"], ["logits"],
                _axes(["hidden", "logits"]))
        graphs["segments"][str(k)], graphs["heads"][str(k)] = name, head
        start, state_args = k, (hidden, *state_args[1:])
    if quantize == "int8":
        for name in [graphs["front"], *graphs["segments"].values(), *graphs["heads"].values()]:
            _quantize(out_dir / name)
    elif quantize is not None:
        raise ValueError(f"quantize: {quantize!r} is not supported (int8 or none)")
    return {"graphs": graphs, "hidden_inputs": hidden_names}


# ------------------------------------------------------------------ the whole export
def load_speech2text(asr_train_config: Optional[PathLike] = None,
                     asr_model_file: Optional[PathLike] = None,
                     model_zip: Optional[PathLike] = None):
    """-> (EarlyExitSpeech2Text with greedy CTC on CPU, the config's path, the model file's
    path or None)."""
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    if model_zip is not None:
        if asr_train_config is not None or asr_model_file is not None:
            raise ValueError("give --model_zip or --asr_train_config/--asr_model_file, not both")
        from espnet_early_exit.zoo import unpack_model

        files = unpack_model(model_zip)
        asr_train_config, asr_model_file = files["asr_train_config"], files["asr_model_file"]
    if asr_train_config is None:
        raise ValueError("give --asr_train_config (and --asr_model_file) or --model_zip")
    s2t = EarlyExitSpeech2Text(
        str(asr_train_config), None if asr_model_file is None else str(asr_model_file),
        device="cpu", beam_size=1, ctc_weight=1.0, nbest=1,
    )
    return s2t, Path(asr_train_config), asr_model_file


def build_manifest(s2t, config: Path, out_dir: Path, cost_seconds: float) -> dict:
    """Everything of manifest.json but the graphs (writes frontend.npz / bpe.model)."""
    from espnet_early_exit.costs import exit_costs

    model, args = s2t.asr_model, s2t.asr_train_args
    fs = s2t.model_fs
    spec, arrays = frontend_spec(model, fs) if fs else (None, {})
    if arrays:
        np.savez(out_dir / "frontend.npz", **arrays)
    input_size = getattr(args, "input_size", None)
    costs = exit_costs(model, seconds=cost_seconds, fs=fs or 16000, input_size=input_size)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model_id": model_fingerprint(model),
        "exits": [{key: e[key] for key in ("exit", "share", "gflops", "head_gflops")}
                  for e in costs["exits"]],
        "front_share": costs["front_share"],
        "cost_seconds": cost_seconds,
        "sample_rate": fs,
        "frontend": spec,
        "input_size": input_size,
        "min_feature_frames": min_feature_frames(model.encoder),
        "token_list": list(model.token_list),
        "tokenizer": tokenizer_spec(s2t, out_dir),
        "blank_id": int(model.blank_id),
        "policies": _selected_policies(config.parent),
    }


def export_onnx(out_dir: PathLike, asr_train_config: Optional[PathLike] = None,
                asr_model_file: Optional[PathLike] = None, model_zip: Optional[PathLike] = None,
                quantize: Optional[str] = None, cost_seconds: float = 10.0) -> Path:
    """Write the ONNX graphs and manifest.json of a model into ``out_dir`` (atomically:
    ``out_dir`` is replaced at the end). Returns ``out_dir``."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize: {quantize!r} is not supported (int8 or none)")
    s2t, config, model_file = load_speech2text(asr_train_config, asr_model_file, model_zip)
    model = s2t.asr_model
    with atomic_directory(out_dir) as tmp:
        policy_file = copy_exit_policy(model_file, list(model.exit_layers), tmp)
        manifest = build_manifest(s2t, config, tmp, cost_seconds)
        manifest["exit_policy_file"] = policy_file
        input_size = (model.frontend.output_size() if model.frontend is not None
                      else int(manifest["input_size"]))
        manifest.update(write_graphs(model, tmp, input_size, quantize))
        manifest["quantization"] = quantize
        for name in [manifest["graphs"]["front"], *manifest["graphs"]["segments"].values(),
                     *manifest["graphs"]["heads"].values()]:
            _tag_graph(tmp / name, manifest["model_id"], name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    logger.info(f"exported {len(model.exit_layers)} exits to {out_dir}")
    return Path(out_dir)
