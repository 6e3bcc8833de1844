"""espnet_early_exit: early-exit (dynamic-depth) speech recognition for ESPnet.

Importing the package registers its encoders (`ee_conformer`, `ee_transformer`,
`ee_e_branchformer`, `ee_hf_ssl`) and model (`ee_espnet`) with ESPnet's ASR task (at once if
ESPnet's task is loaded, else when it is: see `registry.py`).
"""

__version__ = "0.1.0"

from espnet_early_exit.registry import register, register_on_import

register_on_import()

_LAZY = {
    "EarlyExitASRModel": "espnet_early_exit.model",
    "EarlyExitSpeech2Text": "espnet_early_exit.inference",
}


def __getattr__(name):
    # the model and inference API pull in torch and ESPnet: load them on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'espnet_early_exit' has no attribute {name!r}")


def from_pretrained(model_tag=None, **kwargs):
    """``EarlyExitSpeech2Text.from_pretrained(model_tag, **kwargs)``: a packed model (local
    .zip, model-zoo name, URL or Hugging Face repo id), checked and unpacked by the zoo."""
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    return EarlyExitSpeech2Text.from_pretrained(model_tag, **kwargs)


__all__ = ["EarlyExitASRModel", "EarlyExitSpeech2Text", "from_pretrained", "register",
           "__version__"]
