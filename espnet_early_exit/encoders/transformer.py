"""ee_transformer: ESPnet's Transformer encoder with exits.

Blocks, front and output norm are ESPnet's `TransformerEncoder`; with `normalize_before: false`
the encoder has no output norm and exits use none.
"""

from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet_early_exit.encoders.exits import EspnetBlockEncoderMixin


class EETransformerEncoder(EspnetBlockEncoderMixin, TransformerEncoder):
    """TransformerEncoder + exits (arguments: `EspnetBlockEncoderMixin`)."""
