"""The one place that touches ESPnet's ASR task: adds the plugin's classes to its choices.

ESPnet has no plugin entry points: `espnet2.tasks.asr` keeps module-level `ClassChoices`
(`encoder_choices`, `model_choices`, ...) that training, `build_model_from_file` and
`Speech2Text` all consult. Registering = adding our classes to them before a parser is built or
a model is loaded.

`import espnet_early_exit` calls `register_on_import()`: it registers at once if ESPnet's ASR
task is already imported, and otherwise the moment it is (an import hook), so that light tools
of the package (scoring, data formatting) do not pay ESPnet's import time. Importing
`espnet_early_exit.task`, as ESPnet's spawned multi-GPU workers do when they unpickle the task
class, registers too.
"""

import importlib.abc
import logging
import sys
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

    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
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


_ASR_TASK = "espnet2.tasks.asr"


class _LoaderThatRegisters(importlib.abc.Loader):
    """Wraps the loader of espnet2.tasks.asr: runs it, then registers the plugin."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register()


class _RegisterWhenImported(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _ASR_TASK:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _LoaderThatRegisters(spec.loader)
                return spec
        return None


_HOOK = _RegisterWhenImported()


def register_on_import() -> None:
    """Register now if ESPnet's ASR task is loaded, else as soon as it is imported."""
    if _ASR_TASK in sys.modules:
        register()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def registered_names() -> Dict[str, list]:
    """The plugin's keys present in ESPnet's choices now, e.g. in a spawned worker."""
    from espnet2.tasks import asr

    return {
        "encoder": sorted(k for k in ENCODERS if k in asr.encoder_choices.classes),
        "model": sorted(k for k in MODELS if k in asr.model_choices.classes),
    }
