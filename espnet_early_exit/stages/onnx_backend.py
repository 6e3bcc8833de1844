"""Stage 12 with ``--inference_backend onnx``: what the ONNX runtime can decode, checked by
asr.sh before any stage runs, so that a request it cannot serve stops with one message instead
of being decoded some other way (or failing after training).

The onnx backend exports the model once (``bin/export_onnx``) and decodes it with
``bin/onnx_inference``: greedy CTC at each exit, and the exit policies of
:data:`espnet_early_exit.onnx_runtime.POLICIES` (plus ``fixed``). The decoding config is the
torch backend's (``--inference_config``); it must ask for greedy CTC too (``beam_size: 1``,
``ctc_weight: 1.0``, no length penalty), so that the decode dirs of both backends decode the
same way and compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

# decoding option: (value of greedy CTC, ESPnet's default when the config omits it; None: a
# default that is not greedy, so the config must set it)
GREEDY_CTC = {"beam_size": (1.0, None), "ctc_weight": (1.0, None), "penalty": (0.0, 0.0)}
GREEDY_CONFIG = "conf/decode_ee_ctc_greedy.yaml"


def onnx_policies() -> List[str]:
    """The exit policies the onnx runtime decodes (``fixed`` first)."""
    try:
        from espnet_early_exit.onnx_runtime import POLICIES
    except ImportError as e:
        raise ValueError(f"--inference_backend onnx needs onnxruntime ({e}); install it with "
                         "pip install 'espnet-early-exit[onnx]' (or onnxruntime)") from e
    return ["fixed", *sorted(POLICIES)]


def greedy_problems(inference_config: Optional[Path]) -> List[str]:
    """What keeps ``inference_config`` from being greedy CTC (empty: it is)."""
    if inference_config is None:
        return ["no --inference_config (ESPnet's defaults decode by beam search)"]
    import yaml

    with open(inference_config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    problems = []
    for key, (greedy, default) in GREEDY_CTC.items():
        value = config.get(key, default)
        try:
            ok = value is not None and float(value) == greedy
        except (TypeError, ValueError):
            ok = False
        if ok:
            continue
        if key in config:
            problems.append(f"{inference_config} has {key}: {value} "
                            f"(greedy CTC: {key}: {greedy:g})")
        else:
            problems.append(f"{inference_config} does not set {key} (ESPnet's default is not "
                            f"greedy CTC: {key}: {greedy:g})")
    return problems


def check_onnx_decoding(inference_config: Optional[Path], policies: Sequence[str]) -> None:
    """Raise ``ValueError`` naming every option the onnx backend cannot decode as asked."""
    problems = greedy_problems(inference_config)
    if problems:
        problems.append(f"(give a greedy-CTC --inference_config such as {GREEDY_CONFIG})")
    supported = onnx_policies()
    unknown = sorted({p for p in policies if p not in supported})
    if unknown:
        problems.append(f"--exit_policies: the onnx runtime has no policy {', '.join(unknown)} "
                        f"(it decodes {', '.join(supported)}); leave "
                        f"{'it' if len(unknown) == 1 else 'them'} out of --exit_policies")
    if problems:
        raise ValueError("--inference_backend onnx cannot decode as asked (or use "
                         "--inference_backend torch):\n  " + "\n  ".join(problems))
