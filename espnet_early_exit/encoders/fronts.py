"""Lighter subsampling fronts for multi-exit encoders.

ESPnet's `conv2d` subsampling (two 3x3 convolutions with `output_size` channels) costs about as
much as seven Conformer blocks of d_model 256, and that cost is a floor under every exit. The
paper's own Conformer used two cheap 1-D convolutions instead; `Conv1dSubsampling4` is that front:
two stride-2 1-D convolutions over time (4x subsampling, like `conv2d`), so blocks see the same
number of frames as with ESPnet's default.
"""

from typing import Optional, Tuple

import torch

from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import (
    _subsample_mask,  # per-utterance lengths, as ESPnet's conv2d front computes them
)

LIGHT_FRONTS = ("conv1d4",)


class Conv1dSubsampling4(torch.nn.Module):
    """(B, T, idim) -> (B, ((T-1)//2-1)//2, odim): two 1-D convs, kernel 3, stride 2, GELU."""

    def __init__(
        self,
        idim: int,
        odim: int,
        dropout_rate: float,
        pos_enc: Optional[torch.nn.Module] = None,
    ):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(idim, odim, 3, 2),
            torch.nn.GELU(),
            torch.nn.Conv1d(odim, odim, 3, 2),
            torch.nn.GELU(),
        )
        self.out = torch.nn.Sequential(
            torch.nn.Linear(odim, odim), torch.nn.Dropout(dropout_rate)
        )
        self.pos_enc = pos_enc if pos_enc is not None else torch.nn.Identity()

    min_frames = 7  # shortest input that leaves one output frame

    def forward(
        self, x: torch.Tensor, x_mask: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.pos_enc(self.out(x))
        # a relative positional encoding returns (x, pos_emb)
        n_out = (x[0] if isinstance(x, tuple) else x).size(1)
        return x, _subsample_mask(x_mask, n_out, ((3, 2), (3, 2)))
