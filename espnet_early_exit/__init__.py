"""espnet_early_exit: early-exit (dynamic-depth) speech recognition for ESPnet.

Importing the package registers its encoders (`ee_conformer`, `ee_transformer`,
`ee_e_branchformer`, `ee_hf_ssl`) and model (`ee_espnet`) with ESPnet's ASR task.
"""

__version__ = "0.1.0"

from espnet_early_exit.registry import register

register()

from espnet_early_exit.model import EarlyExitASRModel  # noqa: E402


def __getattr__(name):
    # the inference API pulls in ESPnet's beam search; load it on first use
    if name == "EarlyExitSpeech2Text":
        from espnet_early_exit.inference import EarlyExitSpeech2Text

        return EarlyExitSpeech2Text
    raise AttributeError(name)


__all__ = ["EarlyExitASRModel", "EarlyExitSpeech2Text", "register", "__version__"]
