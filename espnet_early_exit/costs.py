"""Per-exit compute and size of an early-exit model: parameters and FLOPs up to each exit.

For every exit k (``model.exit_layers``):

* ``params``: encoder parameters needed to reach exit k: the front (ESPnet front-end,
  normalisation, pre-encoder and the encoder's subsampling ``embed``), blocks 1..k and the
  exit's output norm (the encoder's own output norm at the last exit).
* ``head_params``: the exit's CTC head; ``decoder_params``: its attention decoder (0 if none).
* ``gflops``: GFLOPs (``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add of
  matrix products and convolutions; element-wise ops, norms, softmax and the FFT of the STFT
  are not counted) of exactly what inference runs to reach exit k -- ``encode_begin`` (feature
  extraction + subsampling) and ``encode_to(k)`` (blocks 1..k + exit norm) -- for one
  utterance of ``seconds`` seconds (batch 1). The CTC head is separate: ``head_gflops``.
* ``share``: gflops(k) / gflops(last exit); it increases with k and is 1.0 at the last exit.

``front_share`` = FLOPs of ``encode_begin`` alone / FLOPs of the full encoder: the floor every
exit pays (about 0.36 with ESPnet's conv2d subsampling on the LibriSpeech-100 Conformer).

``exit_costs(model)`` returns the dict written to ``exit_costs.json`` (docs/DESIGN.md):
``{"exits": [{"exit", "params", "head_params", "decoder_params", "gflops", "head_gflops",
"share"}, ...], "front_share", "front_params", "front_gflops", "encoder_params",
"seconds", "fs"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import torch
from torch.utils.flop_counter import FlopCounterMode

from espnet_early_exit.model import EarlyExitASRModel


def _count(modules: Iterable[Optional[torch.nn.Module]], seen: set) -> int:
    n = 0
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
    return n


def _exit_norm(model: EarlyExitASRModel, k: int) -> Optional[torch.nn.Module]:
    enc = model.encoder
    final = enc.final_norm()
    if k == model.exit_layers[-1] or enc.exit_norm == "shared":
        return final
    return enc.exit_norms[str(k)] if str(k) in enc.exit_norms else None


def _flops(fn):
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, counter.get_total_flops()


def exit_costs(
    model: EarlyExitASRModel,
    seconds: float = 10.0,
    fs: int = 16000,
    input_size: Optional[int] = None,
    frame_shift: float = 0.01,
) -> Dict:
    """Parameters and FLOPs per exit (see the module docstring).

    Args:
        model: an early-exit model (put in eval mode here).
        seconds: input duration the FLOPs are counted for (batch 1).
        fs: sampling rate of the waveform fed to the front-end.
        input_size, frame_shift: for a model without front-end (it reads features): the
            feature dimension and frame shift in seconds.
    """
    if not isinstance(model, EarlyExitASRModel):
        raise ValueError(f"exit_costs needs an early-exit model, got {type(model).__name__}")
    if not seconds > 0:
        raise ValueError(f"seconds: {seconds} must be > 0")
    model.eval()
    device = next(model.parameters()).device
    if model.frontend is not None:
        n = int(round(seconds * fs))
        speech = torch.randn(1, n, device=device)
    else:
        if input_size is None:
            raise ValueError("the model has no front-end: give input_size (feature dim)")
        n = int(round(seconds / frame_shift))
        speech = torch.randn(1, n, input_size, device=device)
    lengths = torch.tensor([n], dtype=torch.long, device=device)

    enc = model.encoder
    seen: set = set()
    front_params = _count(
        [model.frontend, model.normalize, model.preencoder, getattr(enc, "embed", None)],
        seen,
    )
    blocks = list(enc.blocks())

    rows = []
    with torch.no_grad():
        state, front_flops = _flops(lambda: model.encode_begin(speech, lengths))
        total = front_flops
        block_params = 0
        done = 0
        for k in model.exit_layers:
            (state, out, _), flops = _flops(lambda: model.encode_to(state, k))
            total += flops
            block_params += sum(_count([b], seen) for b in blocks[done:k])
            done = k
            norm = _exit_norm(model, k)
            norm_params = _count([norm], set()) if norm is not None else 0
            _, head_flops = _flops(lambda: model.ctc_at(k).log_softmax(out))
            decoder = model.decoder_at(k)
            rows.append(
                {
                    "exit": k,
                    "params": front_params + block_params + norm_params,
                    "head_params": _count([model.ctc_at(k)], set()),
                    "decoder_params": _count([decoder], set()) if decoder is not None else 0,
                    "flops": total,
                    "gflops": total / 1e9,
                    "head_gflops": head_flops / 1e9,
                }
            )
    full = rows[-1]["flops"]
    for r in rows:
        r["share"] = r.pop("flops") / full if full else float("nan")
    encoder_params = _count([model.frontend, model.normalize, model.preencoder, enc], set())
    return {
        "exits": rows,
        "front_share": front_flops / full if full else float("nan"),
        "front_params": front_params,
        "front_gflops": front_flops / 1e9,
        "encoder_params": encoder_params,
        "seconds": float(seconds),
        "fs": fs if model.frontend is not None else None,
    }


def model_fs(train_args) -> int:
    """The sampling rate a model's front-end expects (frontend_conf.fs, default 16000)."""
    fs = (getattr(train_args, "frontend_conf", None) or {}).get("fs", 16000)
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    return int(fs)


def exit_costs_from_files(
    asr_train_config: Union[str, Path],
    asr_model_file: Optional[Union[str, Path]] = None,
    seconds: float = 10.0,
    device: str = "cpu",
) -> Dict:
    """Load a trained model (weights optional: costs do not depend on them) and cost it."""
    from espnet_early_exit.task import EarlyExitASRTask

    model, args = EarlyExitASRTask.build_model_from_file(
        asr_train_config, asr_model_file, device
    )
    return exit_costs(
        model,
        seconds=seconds,
        fs=model_fs(args),
        input_size=getattr(args, "input_size", None),
    )


def write_exit_costs(costs: Dict, out: Union[str, Path]) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(costs, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out
