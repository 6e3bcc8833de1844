"""Exit machinery shared by every multi-exit encoder.

`MultiExitEncoder` turns an ESPnet encoder (an ``embed`` front followed by a stack of blocks)
into one with exits after chosen blocks. It runs the stack block by block, so that inference can
stop at an exit and later resume from it without recomputing earlier blocks:

    state = encoder.begin(feats, feats_lengths)          # front-end + subsampling, once
    state = encoder.advance(state, 4)                     # blocks 1..4, nothing after
    out4 = encoder.exit_output(state)                     # (B, T', D), normalised for exit 4
    state = encoder.advance(state, 12)                    # blocks 5..12 only

Training calls ``forward``, which returns every exit the way ESPnet's intermediate-CTC encoders
do: ``((final_out, [(layer, out), ...]), olens, None)`` so that stock ESPnet code that only
knows ``encoder_out`` still works with the final exit. ``forward`` takes ESPnet's encoder
options too: ``masks`` (a padding mask used instead of ``ilens``), ``ctc`` (unused, as in
ESPnet's encoders without self-conditioning) and ``return_all_hs`` (every block's output).
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from typeguard import typechecked

from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.legacy.nets.pytorch_backend.transformer.layer_norm import LayerNorm
from espnet2.asr.encoder.abs_encoder import AbsEncoder

EXIT_NORM_MODES = ("per_exit", "shared", "none")


def validate_exit_layers(exit_layers: Sequence[int], num_blocks: int) -> List[int]:
    """Check `exit_layers` (1-based block indices) and return them as a list.

    They must be sorted, unique, within 1..num_blocks, and include num_blocks (the last block
    is always an exit, so the full model is one of the exits).
    """
    layers = list(exit_layers)
    if len(layers) == 0:
        raise ValueError(
            f"exit_layers is empty: give at least the last block ({num_blocks})"
        )
    for k in layers:
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"exit_layers: {k!r} is not an integer block index")
        if not 1 <= k <= num_blocks:
            raise ValueError(
                f"exit_layers: {k} is outside 1..{num_blocks} (the encoder has "
                f"{num_blocks} blocks; exits are 1-based block indices)"
            )
    for a, b in zip(layers, layers[1:]):
        if b == a:
            raise ValueError(f"exit_layers: {b} appears twice in {layers}")
        if b < a:
            raise ValueError(f"exit_layers: {b} comes after {a}; give them sorted")
    if layers[-1] != num_blocks:
        raise ValueError(
            f"exit_layers {layers} must include the last block {num_blocks} "
            "(the full-depth exit)"
        )
    return layers


@dataclass
class EncoderState:
    """Where a block-by-block encoder run stands.

    hidden: what the blocks pass along: a tensor (B, T', D) or ESPnet's (tensor, pos_emb) tuple.
    masks: (B, 1, T') True on valid frames.
    layer: number of blocks already run (0 = only the front-end has run).
    extra: anything else an encoder family needs to carry between blocks (e.g. WavLM's
        relative position bias).
    """

    hidden: Any
    masks: torch.Tensor
    layer: int = 0
    extra: Any = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.masks.squeeze(1).sum(1)

    @property
    def output(self) -> torch.Tensor:
        """The blocks' output tensor (B, T', D), without ESPnet's positional embedding."""
        return self.hidden[0] if isinstance(self.hidden, tuple) else self.hidden


def valid_frames(
    xs_pad: torch.Tensor, ilens: torch.Tensor, masks: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """(B, 1, L), True on valid input frames: from ESPnet's padding mask ``masks`` (B, L), True
    on padded frames, when given (as ESPnet's encoders take it), else from ``ilens``."""
    if masks is None:
        return (~make_pad_mask(ilens)[:, None, :]).to(xs_pad.device)
    if masks.dim() != 2 or tuple(masks.shape) != tuple(xs_pad.shape[:2]):
        raise ValueError(
            f"masks: ESPnet's padding mask of shape (batch, length) = "
            f"{tuple(xs_pad.shape[:2])}, True on padded frames; got shape {tuple(masks.shape)}"
        )
    return ~masks.to(device=xs_pad.device, dtype=torch.bool)[:, None, :]


class MultiExitEncoder(AbsEncoder):
    """Mixin/base for encoders with exits.

    Subclasses provide ``num_blocks``, ``blocks()`` (the list of block modules, run in order),
    ``begin`` (front-end + subsampling) and, where blocks are not ESPnet's
    ``block(hidden, masks) -> (hidden, masks)``, ``run_block``. ``init_exits`` must be called
    at the end of the subclass constructor.
    """

    exit_layers: List[int]

    # ----------------------------------------------------------------- set-up
    def init_exits(
        self,
        exit_layers: Sequence[int],
        exit_norm: str,
        final_norm: Optional[torch.nn.Module],
        layer_drop_rate: float = 0.0,
    ) -> None:
        """Validate exits and build their norms.

        final_norm: the encoder's own output norm (ESPnet's ``after_norm``), used at the last
        exit so that a single-exit model is exactly the stock encoder; ``None`` if the encoder
        has none. With ``exit_norm="shared"`` every exit uses it (as ESPnet's interCTC does);
        ``"per_exit"`` gives each earlier exit its own LayerNorm; ``"none"`` uses no norm at
        earlier exits.
        """
        self.exit_layers = validate_exit_layers(exit_layers, self.num_blocks)
        if exit_norm not in EXIT_NORM_MODES:
            raise ValueError(
                f"exit_norm: {exit_norm!r} is not one of {', '.join(EXIT_NORM_MODES)}"
            )
        if not 0.0 <= layer_drop_rate < 1.0:
            raise ValueError(f"layer_drop_rate: {layer_drop_rate} is not in [0, 1)")
        self.exit_norm = exit_norm
        self.exit_layer_drop_rate = layer_drop_rate
        self.exit_norms = torch.nn.ModuleDict()
        if exit_norm == "per_exit" and final_norm is not None:
            for k in self.exit_layers[:-1]:
                self.exit_norms[str(k)] = LayerNorm(self.output_size())
        self._final_norm_is_none = final_norm is None

    # ----------------------------------------------------------- to implement
    @property
    def num_blocks(self) -> int:
        return len(self.blocks())

    def blocks(self) -> Sequence[torch.nn.Module]:
        return list(self.encoders)

    def final_norm(self) -> Optional[torch.nn.Module]:
        return getattr(self, "after_norm", None) if getattr(
            self, "normalize_before", True
        ) else None

    def begin(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, masks: Optional[torch.Tensor] = None
    ) -> EncoderState:
        """Front-end + subsampling; ``masks``: ESPnet's padding mask (see `valid_frames`)."""
        raise NotImplementedError

    def run_block(self, index: int, state: EncoderState) -> EncoderState:
        """Run block `index` (0-based) on the state."""
        hidden, masks = self.blocks()[index](state.hidden, state.masks)
        return EncoderState(hidden, masks, index + 1, state.extra)

    # ------------------------------------------------------------- running
    def advance(self, state: EncoderState, to_layer: int) -> EncoderState:
        """Run blocks state.layer+1 .. to_layer (1-based), and none after them."""
        if to_layer < state.layer or to_layer > self.num_blocks:
            raise ValueError(
                f"cannot advance from block {state.layer} to block {to_layer} "
                f"(the encoder has {self.num_blocks} blocks)"
            )
        drop = self.training and self.exit_layer_drop_rate > 0
        for index in range(state.layer, to_layer):
            if drop and self._layer_drop_coin() < self.exit_layer_drop_rate:
                state = EncoderState(state.hidden, state.masks, index + 1, state.extra)
                continue
            state = self.run_block(index, state)
        return state

    def _layer_drop_coin(self) -> float:
        """Layer drop's draw for one block, from the encoder's own generator, seeded from
        torch's global seed (ESPnet seeds every DDP rank alike, again at every epoch): every
        rank drops the same blocks on the same step, as one process on the whole batch would,
        whatever else (dropout, masking) drew from torch's generator on that rank."""
        seed = torch.initial_seed()
        if getattr(self, "_layer_drop_seed", None) != seed:
            self._layer_drop_rng = random.Random(seed)
            self._layer_drop_seed = seed
        return self._layer_drop_rng.random()

    def unused_parameter_reasons(self) -> List[str]:
        """Why a training step may leave some trainable parameters without a gradient (so
        that DistributedDataParallel needs ``find_unused_parameters``); [] if none."""
        if self.exit_layer_drop_rate > 0:
            return [
                f"encoder layer_drop_rate {self.exit_layer_drop_rate}: a dropped block's "
                "parameters get no gradient on that step"
            ]
        return []

    def exit_output(self, state: EncoderState) -> torch.Tensor:
        """The normalised output of the exit at block `state.layer`: (B, T', D)."""
        k = state.layer
        if k not in self.exit_layers:
            raise ValueError(
                f"block {k} has no exit; exits are at {self.exit_layers}"
            )
        return self.normalize_exit(k, state.output)

    def normalize_exit(self, k: int, hidden: torch.Tensor) -> torch.Tensor:
        final = self.final_norm()
        if k == self.exit_layers[-1] or self.exit_norm == "shared":
            return final(hidden) if final is not None else hidden
        if self.exit_norm == "per_exit" and str(k) in self.exit_norms:
            return self.exit_norms[str(k)](hidden)
        return hidden

    def iter_exits(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        up_to: Optional[int] = None,
        masks: Optional[torch.Tensor] = None,
    ) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor, EncoderState]]:
        """Yield (exit_layer, output, lengths, state) exit by exit, computing lazily.

        The caller stops iterating to stop computing: blocks after the last yielded exit are
        never run. ``masks``: ESPnet's padding mask, instead of ``ilens`` (`valid_frames`).
        """
        state = self.begin(xs_pad, ilens, masks)
        for k in self.exit_layers:
            if up_to is not None and k > up_to:
                return
            state = self.advance(state, k)
            yield k, self.exit_output(state), state.lengths, state

    def forward_exits(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        up_to: Optional[int] = None,
        masks: Optional[torch.Tensor] = None,
    ) -> Tuple[List[Tuple[int, torch.Tensor]], torch.Tensor]:
        """Outputs of every exit up to `up_to` (default: all): ([(k, (B,T',D)), ...], olens)."""
        if up_to is not None and up_to not in self.exit_layers:
            raise ValueError(f"exit {up_to} is not one of the exits {self.exit_layers}")
        outs, olens = [], None
        for k, out, olens, _ in self.iter_exits(xs_pad, ilens, up_to, masks):
            outs.append((k, out))
        return outs, olens

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: torch.Tensor = None,
        masks: Optional[torch.Tensor] = None,
        ctc: Optional[torch.nn.Module] = None,
        return_all_hs: bool = False,
        **kwargs,
    ):
        """All exits, in ESPnet's intermediate-output convention; ESPnet's encoder options.

        Returns ((final (B,T',D), [(k, (B,T',D)) for earlier exits]), olens, None); with a
        single exit, (final, olens, None) exactly like the stock encoder.
        masks: ESPnet's padding mask (B, L), True on padded input frames, used instead of
            ``ilens`` (as ESPnet's encoders do).
        ctc: unused (ESPnet's encoders use it only for self-conditioned interCTC).
        return_all_hs: return ((final, [output of block 1, ..., block N]), olens, None) as
            ESPnet's encoders do: every block's output before any norm, no exit list.
        Other options of ESPnet's encoders (e.g. E-Branchformer's ``max_layer``) are refused
        unless None.
        """
        unsupported = sorted(k for k, v in kwargs.items() if v is not None)
        if unsupported:
            raise TypeError(
                f"{type(self).__name__}.forward: {', '.join(unsupported)} not supported by "
                "early-exit encoders (they take masks, ctc, return_all_hs); to stop at a "
                "block, use forward_exits(..., up_to=exit) or begin/advance"
            )
        if return_all_hs:
            state = self.begin(xs_pad, ilens, masks)
            hidden_states = []
            for layer in range(1, self.num_blocks + 1):
                state = self.advance(state, layer)
                hidden_states.append(state.output)
            return (self.exit_output(state), hidden_states), state.lengths, None
        outs, olens = self.forward_exits(xs_pad, ilens, masks=masks)
        final = outs[-1][1]
        if len(outs) == 1:
            return final, olens, None
        return (final, outs[:-1]), olens, None


def espnet_conf_for_exits(conf: dict) -> Tuple[dict, float, str]:
    """Split an encoder config into what the stock ESPnet constructor takes and ours.

    Returns (espnet_conf, layer_drop_rate, input_layer). Layer drop is applied block by block
    by `advance`; a light front (see `fronts.py`) replaces the stock one after construction.
    """
    from espnet_early_exit.encoders.fronts import LIGHT_FRONTS

    conf = dict(conf)
    if conf.get("interctc_layer_idx"):
        raise ValueError(
            "interctc_layer_idx: early-exit encoders attach exits with exit_layers "
            "(and give each its own head); drop interctc_layer_idx"
        )
    conf.pop("interctc_layer_idx", None)
    layer_drop_rate = float(conf.pop("layer_drop_rate", 0.0))
    input_layer = conf.get("input_layer", "conv2d")
    if input_layer in LIGHT_FRONTS:
        conf["input_layer"] = "linear"  # cheap placeholder, replaced in finish_exits
    return conf, layer_drop_rate, input_layer


class EspnetBlockEncoderMixin(MultiExitEncoder):
    """Exits for ESPnet encoders whose front is ``self.embed`` and blocks ``self.encoders``.

    Used as the first base of a class whose second base is the stock ESPnet encoder.

    Args:
        input_size: feature dimension.
        *espnet_args: the stock encoder's arguments after ``input_size``, in its order
            (``output_size``, ``attention_heads``, ...): positional calls mean what they mean
            for the stock encoder.
        exit_layers: (keyword only) 1-based blocks followed by an exit; sorted, unique, must
            include the last.
        exit_norm: (keyword only) "per_exit" (own LayerNorm per earlier exit), "shared"
            (ESPnet's output norm at every exit, as interCTC does) or "none".
        **espnet_conf: every argument of the stock encoder; `input_layer` may also be
            "conv1d4", the light 1-D front of `fronts.py`; `layer_drop_rate` drops whole blocks
            in training as ESPnet does.
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        *espnet_args: Any,
        exit_layers: Optional[List[int]] = None,
        exit_norm: str = "per_exit",
        **espnet_conf: Any,
    ):
        espnet_conf = self._name_positional(espnet_args, espnet_conf)
        conf, layer_drop_rate, input_layer = espnet_conf_for_exits(espnet_conf)
        super().__init__(input_size, **conf)  # the stock ESPnet encoder builds the blocks
        self.finish_exits(
            input_size,
            input_layer,
            exit_layers,
            exit_norm,
            layer_drop_rate,
            conf.get("dropout_rate", 0.1),
        )

    @classmethod
    def _name_positional(cls, args: Sequence[Any], conf: dict) -> dict:
        """The stock encoder's positional arguments after input_size, as keywords."""
        if not args:
            return conf
        stock = next(
            c for c in cls.__mro__
            if issubclass(c, AbsEncoder) and not issubclass(c, MultiExitEncoder)
        )
        names = [
            p.name for p in inspect.signature(stock.__init__).parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ][2:]  # after self, input_size
        if len(args) > len(names):
            raise TypeError(
                f"{cls.__name__} takes at most {len(names) + 1} positional arguments "
                f"(input_size and {stock.__name__}'s), got {len(args) + 1}; give "
                "exit_layers and exit_norm by keyword"
            )
        conf = dict(conf)
        for name, value in zip(names, args):
            if name in conf:
                raise TypeError(f"{cls.__name__}: got multiple values for argument {name!r}")
            conf[name] = value
        return conf

    def finish_exits(
        self,
        input_size: int,
        input_layer: str,
        exit_layers: Optional[Sequence[int]],
        exit_norm: str,
        layer_drop_rate: float,
        dropout_rate: float,
    ) -> None:
        from espnet_early_exit.encoders.fronts import Conv1dSubsampling4, LIGHT_FRONTS

        if input_layer in LIGHT_FRONTS:
            pos_enc = self.embed[-1]  # the stock linear front ends with its pos. encoding
            self.embed = Conv1dSubsampling4(
                input_size, self.output_size(), dropout_rate, pos_enc
            )
        if exit_layers is None:
            raise ValueError(
                "exit_layers: missing; give the 1-based blocks that get an exit, "
                f"e.g. [{self.num_blocks}] for a single-exit model"
            )
        self.init_exits(exit_layers, exit_norm, self.final_norm(), layer_drop_rate)

    def begin(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, masks: Optional[torch.Tensor] = None
    ) -> EncoderState:
        from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import (
            TooShortUttError,
            check_short_utt,
        )

        masks = valid_frames(xs_pad, ilens, masks)
        embed = self.embed
        if embed is None:
            return EncoderState(xs_pad, masks, 0)
        short, limit = check_short_utt(embed, xs_pad.size(1))
        min_frames = getattr(embed, "min_frames", None)
        if min_frames is not None and xs_pad.size(1) < min_frames:
            short, limit = True, min_frames - 1
        if short:
            raise TooShortUttError(
                f"has {xs_pad.size(1)} frames and is too short for subsampling "
                f"(it needs more than {limit} frames)",
                xs_pad.size(1),
                limit,
            )
        if isinstance(embed, (torch.nn.Sequential, torch.nn.Linear)):
            hidden = embed(xs_pad)
        else:
            hidden, masks = embed(xs_pad, masks)
        return EncoderState(hidden, masks, 0)
