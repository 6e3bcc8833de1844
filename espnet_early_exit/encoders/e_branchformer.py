"""ee_e_branchformer: ESPnet's E-Branchformer encoder with exits.

Each block merges a self-attention branch and a convolutional gating MLP branch; ESPnet's
`EBranchformerEncoder` builds them and always ends with an output LayerNorm.
"""

from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
from espnet_early_exit.encoders.exits import EspnetBlockEncoderMixin


class EEEBranchformerEncoder(EspnetBlockEncoderMixin, EBranchformerEncoder):
    """EBranchformerEncoder + exits (arguments: `EspnetBlockEncoderMixin`)."""
