"""Multi-exit encoders: one module per encoder family, the exit machinery in `exits`."""

from espnet_early_exit.encoders.conformer import EEConformerEncoder
from espnet_early_exit.encoders.e_branchformer import EEEBranchformerEncoder
from espnet_early_exit.encoders.exits import EncoderState, MultiExitEncoder
from espnet_early_exit.encoders.transformer import EETransformerEncoder

__all__ = [
    "EEConformerEncoder",
    "EEEBranchformerEncoder",
    "EETransformerEncoder",
    "EncoderState",
    "MultiExitEncoder",
]
