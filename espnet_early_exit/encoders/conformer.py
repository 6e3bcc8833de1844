"""Multi-exit Conformer (ESPnet's `conformer` encoder).

The blocks, front and output norm are ESPnet's own; this class only adds exits after the blocks
named in `exit_layers` and runs the stack block by block so that inference can stop at an exit.
With `exit_layers: [num_blocks]` it is the stock encoder (same parameters, same output).
"""

from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet_early_exit.encoders.exits import EspnetBlockEncoderMixin


class EEConformerEncoder(EspnetBlockEncoderMixin, ConformerEncoder):
    """ConformerEncoder with exits.

    Args:
        input_size: feature dimension.
        exit_layers: 1-based blocks followed by an exit; sorted, unique, must include the last.
        exit_norm: "per_exit" (own LayerNorm per earlier exit), "shared" (ESPnet's output norm
            at every exit, as interCTC does) or "none".
        **espnet_conf: every argument of ESPnet's ConformerEncoder; `input_layer` may also be
            "conv1d4", the light 1-D front of `fronts.py`.
    """
