"""The one place that touches ESPnet's ASR task: adds the plugin's classes to its choices.

ESPnet has no plugin entry points: `espnet2.tasks.asr` keeps module-level `ClassChoices`
(`encoder_choices`, `model_choices`, ...) that training, `build_model_from_file` and
`Speech2Text` all consult. Registering = adding our classes to them before a parser is built or
a model is loaded. `import espnet_early_exit` calls `register()`; so does importing
`espnet_early_exit.task`, which ESPnet's spawned multi-GPU workers do when they unpickle the
task class.
"""

import logging
from typing import Dict, Type

logger = logging.getLogger(__name__)  # never the root logger: ESPnet configures it later

ENCODERS: Dict[str, str] = {
    "ee_conformer": "espnet_early_exit.encoders.conformer:EEConformerEncoder",
    "ee_transformer": "espnet_early_exit.encoders.transformer:EETransformerEncoder",
    "ee_e_branchformer": "espnet_early_exit.encoders.e_branchformer:EEEBranchformerEncoder",
    "ee_hf_ssl": "espnet_early_exit.encoders.hf_ssl:EEHuggingFaceSSLEncoder",
}
MODELS: Dict[str, str] = {
    "ee_espnet": "espnet_early_exit.model:EarlyExitASRModel",
}


def _load(target: str) -> Type:
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def register() -> None:
    """Add the plugin's encoders and model to `espnet2.tasks.asr` (idempotent)."""
    from espnet2.tasks import asr

    for choices, table in ((asr.encoder_choices, ENCODERS), (asr.model_choices, MODELS)):
        for key, target in table.items():
            if key in choices.classes:
                continue
            try:
                choices.classes[key] = _load(target)
            except ImportError as e:  # an optional family whose module is not there
                if not target.startswith("espnet_early_exit.encoders.hf_ssl"):
                    raise
                logger.debug(f"{key} not registered: {e}")


def registered_names() -> Dict[str, list]:
    """The plugin's keys present in ESPnet's choices now, e.g. in a spawned worker."""
    from espnet2.tasks import asr

    return {
        "encoder": sorted(k for k in ENCODERS if k in asr.encoder_choices.classes),
        "model": sorted(k for k in MODELS if k in asr.model_choices.classes),
    }
