"""Multi-exit encoder around a pre-trained Hugging Face SSL speech model (`ee_hf_ssl`).

The backbone is a `transformers` wav2vec2, HuBERT or WavLM model (its base `*Model`, loaded with
`AutoModel.from_pretrained`). It takes the raw waveform (ESPnet: `frontend: null`, top-level
`input_size: 1`) and is run piece by piece so that inference can stop at an exit:

    begin:      [waveform normalisation] -> CNN feature encoder -> feature projection
                -> [SpecAugment-like masking, optional] -> padded frames zeroed
                -> positional conv embedding -> (layer norm, post-LN variants only) -> dropout
    run_block:  one transformer layer (WavLM: with its relative position bias, carried between
                layers in `EncoderState.extra`)
    final norm: the encoder's `layer_norm` after the last layer, only for the
                `do_stable_layer_norm=True` (pre-LN) variants; the post-LN variants
                (wav2vec2-base, HuBERT-base, WavLM-base(-plus)) apply it before the layers.

These are the operations of the backbone's own forward, in the same order and with the same
modules, so exit k's output (before the exit's own norm) is the backbone's
`hidden_states[k]` (the output of layer k; `hidden_states[0]` is the input of layer 1), and the
last exit's output is the backbone's `last_hidden_state`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from typeguard import typechecked

from espnet_early_exit.encoders.exits import EncoderState, MultiExitEncoder, valid_frames
from espnet_early_exit.fileio import atomic_directory

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
PUBLIC_MODELS = (
    "facebook/wav2vec2-base",
    "microsoft/wavlm-base-plus",
    "facebook/hubert-base-ls960",
)
_HELP_NAMES = ", ".join(PUBLIC_MODELS)


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path (hub ids are `name` or `owner/name`)."""
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~"))
        or name.endswith(("/", os.sep))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def load_backbone(
    model_name_or_path: str,
    load_pretrained: bool = True,
    download_dir: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
    saved_config: Optional[Dict[str, Any]] = None,
):
    """`AutoModel.from_pretrained(model_name_or_path)` with errors that say what to pass.

    overrides: config attributes to change (`from_pretrained`'s config kwargs), e.g.
    `mask_time_prob`, `hidden_dropout`, `num_hidden_layers`.
    With `load_pretrained=False` only the config is read and the weights are random (for
    building a model whose weights come from an ESPnet checkpoint right after); the config is
    `saved_config` (a `to_dict()` of it, see `saved_backbone_conf`) when given: then neither
    the hub nor `model_name_or_path` is read.
    """
    import transformers

    overrides = dict(overrides or {})
    if saved_config is not None and not load_pretrained:
        try:
            config = transformers.AutoConfig.for_model(**saved_config)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"ee_hf_ssl: backbone_config is not a transformers config this version can "
                f"build ({type(e).__name__}: {e})"
            ) from e
        for key, value in overrides.items():
            setattr(config, key, value)
        return transformers.AutoModel.from_config(config)
    if not os.path.isdir(model_name_or_path) and _looks_like_path(model_name_or_path):
        raise FileNotFoundError(
            f"ee_hf_ssl: model_name_or_path {model_name_or_path!r} is not an existing "
            "folder. Give a folder written by `save_pretrained` (config.json + weights) or a "
            f"Hugging Face hub name such as {_HELP_NAMES} (downloaded on first use, which "
            "needs internet access or a filled Hugging Face cache)."
        )
    try:
        if load_pretrained:
            model = transformers.AutoModel.from_pretrained(
                model_name_or_path, cache_dir=download_dir, **overrides
            )
        else:
            config = transformers.AutoConfig.from_pretrained(
                model_name_or_path, cache_dir=download_dir, **overrides
            )
            model = transformers.AutoModel.from_config(config)
    except (OSError, ValueError) as e:
        raise OSError(
            f"ee_hf_ssl: cannot load the pre-trained model {model_name_or_path!r}: it is "
            "neither a local folder with config.json and weights nor a model found on the "
            "Hugging Face hub or in the local Hugging Face cache (no internet access here? "
            "weights are downloaded on first use). Public names users pass: "
            f"{_HELP_NAMES}. Cause: {type(e).__name__}: {e}"
        ) from e
    return model


def read_do_normalize(model_name_or_path: str, download_dir: Optional[str] = None) -> bool:
    """The checkpoint's feature extractor `do_normalize` (True if it has none)."""
    import transformers

    try:
        extractor = transformers.AutoFeatureExtractor.from_pretrained(
            model_name_or_path, cache_dir=download_dir
        )
    except (OSError, ValueError) as e:
        logger.warning(
            f"ee_hf_ssl: no feature extractor config for {model_name_or_path} ({e}); "
            "normalising the waveform (do_normalize=True)"
        )
        return True
    return bool(getattr(extractor, "do_normalize", True))


def saved_backbone_conf(config, normalize: bool) -> Dict[str, Any]:
    """The `encoder_conf` entries that rebuild a trained model's backbone offline: its whole
    config (JSON types), the resolved `normalize_waveform`, and `load_pretrained: false` (the
    weights come from the checkpoint). Training writes them into config.yaml; packing adds
    them to a config that lacks them (`offline_encoder_conf`)."""
    return {
        "backbone_config": json.loads(config.to_json_string(use_diff=False)),
        "normalize_waveform": bool(normalize),
        "load_pretrained": False,
    }


def offline_encoder_conf(encoder_conf: Dict[str, Any]) -> Dict[str, Any]:
    """`encoder_conf` of a trained `ee_hf_ssl` model with `saved_backbone_conf`'s entries,
    read from `model_name_or_path` (the hub, its cache or a folder) if it has none yet."""
    import transformers

    conf = dict(encoder_conf)
    if conf.get("backbone_config") is not None and conf.get("load_pretrained") is False:
        return conf
    name, cache = conf["model_name_or_path"], conf.get("download_dir")
    try:
        config = transformers.AutoConfig.from_pretrained(
            name, cache_dir=cache, **(conf.get("backbone_conf") or {})
        )
    except (OSError, ValueError) as e:
        raise OSError(
            f"ee_hf_ssl: cannot read the config of the backbone {name!r} to record it "
            f"(is it reachable here?): {type(e).__name__}: {e}"
        ) from e
    normalize = conf.get("normalize_waveform", True)
    if normalize is None:
        normalize = read_do_normalize(name, cache)
    conf.update(saved_backbone_conf(config, normalize))
    return conf


def normalize_waveform(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples; padding stays 0.

    The same computation as `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm` (population
    variance, eps 1e-7), batched in torch.
    """
    valid = torch.arange(wav.size(1), device=wav.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1).to(wav.dtype)[:, None]
    x = wav.masked_fill(~valid, 0.0)
    mean = x.sum(1, keepdim=True) / n
    var = ((x - mean).masked_fill(~valid, 0.0) ** 2).sum(1, keepdim=True) / n
    return ((wav - mean) / torch.sqrt(var + 1e-7)).masked_fill(~valid, 0.0)


def layer_attention_mask(config, hidden: torch.Tensor, valid: torch.Tensor):
    """The attention mask wav2vec2/HuBERT layers take, made as their encoder makes it."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers 4.x: the encoders built the mask inline, like this
        if getattr(config, "_attn_implementation", None) == "flash_attention_2":
            return valid if not bool(valid.all()) else None
        mask = 1.0 - valid[:, None, None, :].to(hidden.dtype)
        mask = mask * torch.finfo(hidden.dtype).min
        return mask.expand(mask.shape[0], 1, mask.shape[-1], mask.shape[-1])
    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=valid)


def _padding_mask_lengths(
    xs_pad: torch.Tensor, ilens: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """Lengths from ESPnet's padding mask; refuses a mask with holes (the backbone takes
    lengths only)."""
    from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask

    valid = valid_frames(xs_pad, ilens, masks)[:, 0, :]
    lengths = valid.sum(1)
    if not torch.equal(make_pad_mask(lengths, maxlen=valid.size(1)).to(valid.device), ~valid):
        raise ValueError(
            "ee_hf_ssl: masks must be a padding mask (True only after each utterance's last "
            "sample); the backbone cannot mask samples inside an utterance"
        )
    return lengths


class EEHuggingFaceSSLEncoder(MultiExitEncoder):
    """A pre-trained wav2vec2 / HuBERT / WavLM model with exits after chosen layers.

    Args:
        input_size: must be 1 (raw waveform; ESPnet `input_size: 1`, no front-end).
        model_name_or_path: hub name (e.g. facebook/wav2vec2-base, microsoft/wavlm-base-plus,
            facebook/hubert-base-ls960) or a local `save_pretrained` folder.
        exit_layers: 1-based transformer layers followed by an exit; must include the last.
        exit_norm: "per_exit" | "shared" | "none" (as `MultiExitEncoder`). The post-LN
            families (wav2vec2-base, HuBERT-base, WavLM-base) have no output norm (every
            layer ends in a LayerNorm), so no exit gets an extra norm; for the pre-LN
            (`do_stable_layer_norm`) variants the last exit uses the backbone's final
            `layer_norm`, and earlier exits their own LayerNorm / the shared one / none.
        freeze_feature_encoder: never train the CNN feature encoder (as the paper did).
        freeze_backbone_steps: keep the whole backbone frozen (only exit norms and heads
            train) for that many training forward calls; the count is a buffer
            (`num_training_calls`), so it survives checkpoint resume.
        apply_spec_augment: apply the backbone's own time/feature masking (its config's
            `mask_time_prob`, `mask_feature_prob`, ...) in training.
        normalize_waveform: zero-mean/unit-variance per utterance as the model's feature
            extractor does when `do_normalize`; None = read `do_normalize` from the
            checkpoint's preprocessor_config.json (True if it has none).
        layer_drop_rate: probability of skipping a layer in training; None = the backbone
            config's `layerdrop` (WavLM never skips its first layer, which holds the
            relative position embedding).
        load_pretrained: False = build the backbone from its config only (random weights),
            for loading a trained ESPnet checkpoint without the pre-trained weights.
        download_dir: Hugging Face cache folder (`cache_dir`).
        backbone_conf: config attributes overridden at load (e.g. mask_time_prob,
            hidden_dropout, attention_dropout, activation_dropout, feat_proj_dropout).
        backbone_config: the backbone's whole config, recorded by training in config.yaml
            (with `load_pretrained: false` and the resolved `normalize_waveform`, see
            `saved_backbone_conf`): with `load_pretrained: false` the backbone is built from
            it, so loading the trained model reads neither the hub nor `model_name_or_path`.
            Ignored with `load_pretrained: true` (set it to train again from the pre-trained
            weights with a saved config.yaml).
    """

    @typechecked
    def __init__(
        self,
        input_size: int,
        model_name_or_path: str,
        exit_layers: Optional[List[int]] = None,
        exit_norm: str = "per_exit",
        freeze_feature_encoder: bool = True,
        freeze_backbone_steps: int = 0,
        apply_spec_augment: bool = False,
        normalize_waveform: Optional[bool] = True,
        layer_drop_rate: Optional[float] = None,
        load_pretrained: bool = True,
        download_dir: Optional[str] = None,
        backbone_conf: Optional[Dict[str, Any]] = None,
        backbone_config: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if input_size != 1:
            raise ValueError(
                f"ee_hf_ssl: input_size is {input_size}, but the encoder takes the raw "
                "waveform: set `input_size: 1` in the config (ESPnet then builds no "
                "front-end) and `normalize: null`"
            )
        if freeze_backbone_steps < 0:
            raise ValueError(f"freeze_backbone_steps: {freeze_backbone_steps} is < 0")
        self.model_name_or_path = model_name_or_path
        self.backbone = load_backbone(
            model_name_or_path, load_pretrained, download_dir, backbone_conf, backbone_config
        )
        config = self.backbone.config
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"ee_hf_ssl: {model_name_or_path} is a {model_type!r} model; supported "
                f"families: {', '.join(SUPPORTED_MODEL_TYPES)} (e.g. {_HELP_NAMES})"
            )
        if getattr(config, "add_adapter", False):
            raise ValueError(
                f"ee_hf_ssl: {model_name_or_path} has add_adapter=True (an adapter after "
                "the last layer changes the frame rate); not supported"
            )
        self._is_wavlm = model_type == "wavlm"
        self._stable_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))
        self._layer_takes_index = "index" in inspect.signature(
            type(self.blocks()[0]).forward
        ).parameters
        config.apply_spec_augment = apply_spec_augment  # read by _mask_hidden_states
        self.apply_spec_augment = apply_spec_augment
        mask_params = inspect.signature(self.backbone._mask_hidden_states).parameters
        self._mask_takes_attention = "attention_mask" in mask_params
        if normalize_waveform is None:
            normalize_waveform = read_do_normalize(model_name_or_path, download_dir)
        self.normalize_waveform = normalize_waveform

        self.freeze_feature_encoder = freeze_feature_encoder
        if freeze_feature_encoder:
            extractor = self.backbone.feature_extractor
            if hasattr(extractor, "_freeze_parameters"):
                extractor._freeze_parameters()
            else:
                for p in extractor.parameters():
                    p.requires_grad = False
        self.freeze_backbone_steps = freeze_backbone_steps
        self.register_buffer("num_training_calls", torch.zeros((), dtype=torch.long))

        depth = len(self.blocks())
        if exit_layers is None:
            raise ValueError(
                f"exit_layers: missing; give the 1-based layers of {model_name_or_path} "
                f"({depth} layers) that get an exit, e.g. {list(range(2, depth + 1, 2))}"
            )
        if layer_drop_rate is None:
            layer_drop_rate = float(getattr(config, "layerdrop", 0.0) or 0.0)
        try:
            self.init_exits(exit_layers, exit_norm, self.final_norm(), layer_drop_rate)
        except ValueError as e:
            raise ValueError(
                f"{e} [ee_hf_ssl: {model_name_or_path} has {depth} transformer layers]"
            ) from e

    def checkpoint_conf(self) -> Dict[str, Any]:
        """`encoder_conf` entries for config.yaml that rebuild this encoder for its
        checkpoint offline (`saved_backbone_conf`); `EarlyExitASRTask` records them."""
        return saved_backbone_conf(self.backbone.config, self.normalize_waveform)

    # ------------------------------------------------------------ structure
    def output_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    def blocks(self):
        return self.backbone.encoder.layers

    def final_norm(self) -> Optional[torch.nn.Module]:
        # pre-LN ("stable") variants normalise after the last layer; post-LN ones before
        # the first, inside `begin`
        return self.backbone.encoder.layer_norm if self._stable_layer_norm else None

    def min_samples(self) -> int:
        """The fewest waveform samples giving one frame (the CNN's receptive field)."""
        config = self.backbone.config
        field, jump = 1, 1
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def frame_lengths(self, ilens: torch.Tensor) -> torch.Tensor:
        """Number of frames the CNN feature encoder gives for `ilens` samples."""
        fn = self.backbone._get_feat_extract_output_lengths
        if "add_adapter" in inspect.signature(fn).parameters:
            return fn(ilens, add_adapter=False).to(torch.long)
        return fn(ilens).to(torch.long)

    # ---------------------------------------------------------- freezing
    def backbone_frozen(self) -> bool:
        """Whether the next training forward keeps the backbone frozen."""
        return int(self.num_training_calls) < self.freeze_backbone_steps

    def unused_parameter_reasons(self) -> List[str]:
        reasons = super().unused_parameter_reasons()
        if self.freeze_backbone_steps > 0:
            reasons.append(
                f"encoder freeze_backbone_steps {self.freeze_backbone_steps}: the backbone "
                "gets no gradient while it is frozen"
            )
        embed = getattr(self.backbone, "masked_spec_embed", None)
        masks = self.apply_spec_augment and (
            float(getattr(self.backbone.config, "mask_time_prob", 0.0) or 0.0) > 0
        )
        if embed is not None and embed.requires_grad and not masks:
            reasons.append(
                "encoder apply_spec_augment off (or mask_time_prob 0): the backbone's "
                "masked_spec_embed is never used"
            )
        return reasons

    def _grad_context(self, frozen: bool):
        return torch.no_grad() if frozen else contextlib.nullcontext()

    # ------------------------------------------------------------- running
    def begin(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, masks: Optional[torch.Tensor] = None
    ) -> EncoderState:
        """Waveform (B, L) or (B, L, 1) -> input of the first transformer layer.

        masks: ESPnet's padding mask (B, L), True on padded samples, instead of ``ilens``;
        the backbone takes lengths, so it must mark each utterance's end (no holes)."""
        from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import (
            TooShortUttError,
        )

        if xs_pad.dim() == 3:
            if xs_pad.size(-1) != 1:
                raise ValueError(
                    f"ee_hf_ssl takes a single-channel waveform, got {xs_pad.size(-1)} "
                    "channels"
                )
            xs_pad = xs_pad.squeeze(-1)
        if xs_pad.dim() != 2:
            raise ValueError(
                f"ee_hf_ssl takes a waveform (B, L), got a tensor of shape "
                f"{tuple(xs_pad.shape)} (is a front-end configured? use input_size: 1)"
            )
        if masks is not None:
            ilens = _padding_mask_lengths(xs_pad, ilens, masks)
        ilens = ilens.to(xs_pad.device)
        xs_pad = xs_pad[:, : int(ilens.max())]
        if int(ilens.min()) < self.min_samples():
            raise TooShortUttError(
                f"has {int(ilens.min())} samples and is too short for the CNN feature "
                f"encoder (it needs at least {self.min_samples()})",
                int(ilens.min()),
                self.min_samples(),
            )

        frozen = False
        if self.training:
            frozen = self.backbone_frozen()
            self.num_training_calls += 1
        backbone = self.backbone
        encoder = backbone.encoder
        with self._grad_context(frozen):
            wav = xs_pad
            if self.normalize_waveform:
                wav = normalize_waveform(wav, ilens)
            feats = backbone.feature_extractor(wav).transpose(1, 2)
            olens = self.frame_lengths(ilens)
            valid = torch.arange(feats.size(1), device=feats.device)[None, :] < olens[:, None]
            projected = backbone.feature_projection(feats)
            hidden = projected[0] if isinstance(projected, tuple) else projected
            if self.apply_spec_augment and self.training:
                if self._mask_takes_attention:
                    hidden = backbone._mask_hidden_states(hidden, attention_mask=valid)
                else:
                    hidden = backbone._mask_hidden_states(hidden)
            hidden = hidden.masked_fill(~valid[:, :, None], 0.0)  # padded frames give 0
            if self._is_wavlm:
                attention_mask = valid  # WavLM's layers take the (B, T) padding mask
            else:
                attention_mask = layer_attention_mask(encoder.config, hidden, valid)
            hidden = hidden + encoder.pos_conv_embed(hidden)
            if not self._stable_layer_norm:
                hidden = encoder.layer_norm(hidden)
            hidden = encoder.dropout(hidden)
        extra = {"attention_mask": attention_mask, "position_bias": None, "frozen": frozen}
        return EncoderState(hidden, valid[:, None, :], 0, extra)

    def run_block(self, index: int, state: EncoderState) -> EncoderState:
        layer = self.blocks()[index]
        extra = dict(state.extra)
        with self._grad_context(extra.get("frozen", False)):
            if self._is_wavlm:
                kwargs = {"position_bias": extra["position_bias"]}
                if self._layer_takes_index:
                    kwargs["index"] = index
                out = layer(state.hidden, attention_mask=extra["attention_mask"], **kwargs)
                hidden, extra["position_bias"] = out[0], out[1]
            else:
                out = layer(state.hidden, attention_mask=extra["attention_mask"])
                hidden = out[0] if isinstance(out, tuple) else out
        return EncoderState(hidden, state.masks, index + 1, extra)

    def advance(self, state: EncoderState, to_layer: int) -> EncoderState:
        # WavLM's first layer computes the relative position bias for all others: as in
        # the HF model, layer drop never skips it
        if (
            self._is_wavlm
            and state.layer == 0
            and to_layer >= 1
            and self.training
            and self.exit_layer_drop_rate > 0
        ):
            state = self.run_block(0, state)
        return super().advance(state, to_layer)

    def exit_output(self, state: EncoderState) -> torch.Tensor:
        frozen = isinstance(state.extra, dict) and state.extra.get("frozen", False)
        uses_backbone_norm = self.final_norm() is not None and (
            state.layer == self.exit_layers[-1] or self.exit_norm == "shared"
        )
        # the backbone's final norm is part of the frozen backbone; per-exit norms train
        with self._grad_context(frozen and uses_backbone_norm):
            return super().exit_output(state)


# --------------------------------------------------------------------------------------
# a tiny random backbone, for smoke tests and the mini_an4 grid's SSL rows
# --------------------------------------------------------------------------------------
# family -> (transformers config class, extra config arguments)
TINY_SSL_FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", {}),
    "wavlm": ("WavLMConfig", {"num_buckets": 16, "max_bucket_distance": 32}),
    "hubert": ("HubertConfig", {}),
}


def make_tiny_ssl(
    out_dir,
    family: str = "wav2vec2",
    num_layers: int = 4,
    hidden: int = 32,
    heads: int = 2,
    conv_dim: int = 16,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Save a tiny RANDOM wav2vec2 / WavLM / HuBERT model (`save_pretrained`) into ``out_dir``.

    The folder (config.json, the weights, preprocessor_config.json, tiny_ssl.json) loads through
    `AutoModel.from_pretrained` like a hub checkpoint, so `ee_hf_ssl` configs can point
    `model_name_or_path` at it and run offline. An existing folder with a config.json is left as
    it is unless ``overwrite``. Returns the folder (a `Path`).
    """
    import transformers

    if family not in TINY_SSL_FAMILIES:
        raise ValueError(f"family {family!r}: one of {', '.join(TINY_SSL_FAMILIES)}")
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and not overwrite:
        return out_dir
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    cls_name, extra = TINY_SSL_FAMILIES[family]
    config = getattr(transformers, cls_name)(
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        # 3 conv layers with strides 5*8*8: a 320-sample (20 ms) hop like the base models
        conv_dim=(conv_dim, conv_dim, conv_dim),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.05,
        mask_time_length=2,
        layerdrop=0.0,
        **extra,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        transformers.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True
        ).save_pretrained(tmp)
        with open(tmp / "tiny_ssl.json", "w", encoding="utf-8") as f:
            json.dump(
                {"family": family, "num_layers": num_layers, "hidden": hidden, "heads": heads,
                 "conv_dim": conv_dim, "seed": seed, "random_weights": True},
                f, indent=2,
            )
    return out_dir
