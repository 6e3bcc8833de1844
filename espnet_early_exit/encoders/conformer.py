"""ee_conformer: ESPnet's Conformer with exits.

The paper's main model (12 blocks, d_model 256, exits every second block). Blocks, front and
output norm are ESPnet's `ConformerEncoder`; `exit_layers: [num_blocks]` is that encoder exactly.
"""

from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet_early_exit.encoders.exits import EspnetBlockEncoderMixin


class EEConformerEncoder(EspnetBlockEncoderMixin, ConformerEncoder):
    """ConformerEncoder + exits (arguments: `EspnetBlockEncoderMixin`)."""
