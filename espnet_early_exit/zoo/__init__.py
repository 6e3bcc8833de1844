"""Model zoo: pack a trained early-exit model, load a packed one safely, publish it.

- :mod:`~espnet_early_exit.zoo.pack`: :func:`pack_model` (recipe stage 14,
  ``python -m espnet_early_exit.bin.pack_model``), an ordinary ESPnet model-zoo zip written by
  ESPnet's own packer, plus a marker entry stock ESPnet stops at and the plugin's keys in
  ``meta.yaml``; a learned exit policy beside the model file (``exit_policy.json``) is packed
  beside the model's member (:func:`exit_policy_member`) and recorded in ``meta.yaml``
  (:func:`packed_exit_policy`);
- :mod:`~espnet_early_exit.zoo.archive`: the safety checks of an archive, an unpacked repository
  and a ``.pth`` (:func:`check_archive`, :func:`check_model_dir`, :func:`check_model_file`);
- :mod:`~espnet_early_exit.zoo.load`: :func:`unpack_model` (fetch / unpack / check, return the
  files) and :func:`from_pretrained` (build a given class from them: inference passes
  ``EarlyExitSpeech2Text``; this package does not import the inference code);
- :mod:`~espnet_early_exit.zoo.card` and :mod:`~espnet_early_exit.zoo.publish`: the model card,
  the Hugging Face repository folder (:func:`prepare_hf_repo`) and its upload
  (:func:`upload_hf_repo`, recipe stage 15, ``python -m espnet_early_exit.bin.upload_model``);
- :mod:`~espnet_early_exit.zoo.errors` and :mod:`~espnet_early_exit.zoo.common`: the errors,
  the marker's names, limits and path helpers they share.

See docs/model_zoo.md.
"""

from espnet_early_exit.zoo.archive import check_archive, check_model_dir, check_model_file
from espnet_early_exit.zoo.card import (
    CITATION_ESPNET,
    CITATION_PAPER,
    render_model_card,
    results_tables,
)
from espnet_early_exit.zoo.common import (
    EXIT_POLICY_NAME,
    LOADER,
    MARKER_NAME,
    MAX_META_BYTES,
    MAX_UNPACKED_BYTES,
    PIP_NAME,
    PLUGIN_KEY,
    exit_policy_member,
    packed_exit_policy,
)
from espnet_early_exit.zoo.errors import (
    CorruptArchiveError,
    IncompleteArchiveError,
    ModelZooError,
    UnsafeArchiveError,
    UnsafeModelFileError,
)
from espnet_early_exit.zoo.load import from_pretrained, unpack_model
from espnet_early_exit.zoo.pack import EXP_EXTRAS, INFERENCE_FILE_KEYS, pack_model
from espnet_early_exit.zoo.publish import prepare_hf_repo, upload_hf_repo

__all__ = [
    "CITATION_ESPNET",
    "CITATION_PAPER",
    "EXIT_POLICY_NAME",
    "EXP_EXTRAS",
    "INFERENCE_FILE_KEYS",
    "LOADER",
    "MARKER_NAME",
    "MAX_META_BYTES",
    "MAX_UNPACKED_BYTES",
    "PIP_NAME",
    "PLUGIN_KEY",
    "CorruptArchiveError",
    "IncompleteArchiveError",
    "ModelZooError",
    "UnsafeArchiveError",
    "UnsafeModelFileError",
    "check_archive",
    "check_model_dir",
    "check_model_file",
    "exit_policy_member",
    "from_pretrained",
    "pack_model",
    "packed_exit_policy",
    "prepare_hf_repo",
    "render_model_card",
    "results_tables",
    "unpack_model",
    "upload_hf_repo",
]
