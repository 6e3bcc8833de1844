"""Turn a trained single-exit ESPnet ASR model into the starting point of an early-exit one.

Source: a model trained by `espnet2.bin.asr_train` with a stock encoder (`conformer`,
`transformer`, `e_branchformer`) and the stock `espnet` model, or a single-exit `ee_espnet`
model (`exit_layers: [num_blocks]`, the no-EE baseline): an experiment dir, a packed zip
(`espnet2.bin.pack asr`) or a config.yaml + model .pth. Output (`out_dir`):

    config.yaml    the same architecture with the `ee_*` encoder (exits at `exit_layers`) and
                   `model: ee_espnet`; training options are kept, run-specific ones dropped
    init.pth       weights for ESPnet's `--init_param`: every source weight under its own
                   name (encoder front and blocks, `encoder.after_norm` = the last exit's norm,
                   `ctc` = the last exit's CTC head, `decoder` = the last exit's decoder), plus,
                   with `init_exit_heads="copy"`, copies of them for the earlier exits' CTC
                   heads, decoders and norms; with "fresh" those keys are absent, so they keep
                   the new model's random initialisation
    add_exits.json what was mapped from where, and the training command
    tokens.txt, feats_stats.npz, bpe.model   the source's token list, feature statistics and
                   BPE model (those it has), which the new config points at

Fine-tune with `asr_train --config <out_dir>/config.yaml --init_param <out_dir>/init.pth`.

`interctc_to_ee` (CLI: `python -m espnet_early_exit.bin.interctc_to_ee`) is the other
conversion of a stock model: an ESPnet Conformer trained with intermediate CTC
(`interctc_layer_idx`) rewritten, weights unchanged, as the equivalent `ee_conformer` with an
exit at every interCTC layer (ESPnet applies `after_norm` to every intermediate output and its
interCTC uses the one `ctc` head: `exit_norm: shared` + `share_exit_heads: true`), so its
intermediate layers can be decoded like exits.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import yaml

logger = logging.getLogger(__name__)

# stock ESPnet encoder -> its early-exit counterpart
ENCODER_MAP = {
    "conformer": "ee_conformer",
    "transformer": "ee_transformer",
    "e_branchformer": "ee_e_branchformer",
}
INIT_EXIT_HEADS = ("copy", "fresh")
# model files tried in an experiment dir, in this order ("*best.pth" = valid.acc.best.pth,
# valid.loss.best.pth, then any other *best.pth in name order)
MODEL_FILE_ORDER = ("valid.acc.ave.pth", "valid.loss.ave.pth", "*best.pth", "latest.pth")
# options of a training run that must not be inherited by the fine-tuning run
RUN_SPECIFIC_KEYS = (
    "config",
    "output_dir",
    "train_data_path_and_name_and_type",
    "valid_data_path_and_name_and_type",
    "train_shape_file",
    "valid_shape_file",
    "init_param",
    "ignore_init_mismatch",
    "resume",
    "collect_stats",
    "write_collected_feats",
    "print_config",
    "dry_run",
    "dist_backend",
    "dist_init_method",
    "dist_world_size",
    "dist_rank",
    "local_rank",
    "dist_master_addr",
    "dist_master_port",
    "dist_launcher",
    "multiprocessing_distributed",
    "distributed",
    "required",
    "version",
    "ngpu",
)


@dataclass
class SourceModel:
    config_path: Path
    model_path: Path
    config: Dict[str, Any]


# ------------------------------------------------------------------ finding the source
def pick_model_file(exp_dir: Union[str, Path]) -> Path:
    """The model file of an experiment dir, by `MODEL_FILE_ORDER`."""
    exp_dir = Path(exp_dir)
    for pattern in MODEL_FILE_ORDER:
        if "*" in pattern:
            found = sorted(p for p in exp_dir.glob(pattern) if p.is_file())
            preferred = [exp_dir / "valid.acc.best.pth", exp_dir / "valid.loss.best.pth"]
            found = [p for p in preferred if p in found] + [
                p for p in found if p not in preferred
            ]
            if found:
                return found[0]
        elif (exp_dir / pattern).is_file():
            return exp_dir / pattern
    raise FileNotFoundError(
        f"{exp_dir}: no model file; looked for {', '.join(MODEL_FILE_ORDER)} (give a .pth "
        "file instead of the dir to choose one)"
    )


def unpack_zip(zip_path: Union[str, Path], unpack_dir: Union[str, Path]) -> Tuple[Path, Path]:
    """Unpack a packed ESPnet ASR model offline; returns (config, model file).

    Uses espnet_model_zoo's `ModelDownloader.download_and_unpack` (what `Speech2Text.
    from_pretrained` uses) with its cache in `unpack_dir`, or, without that package, ESPnet's
    own `pack_funcs.unpack`; both refuse archive members outside the target folder and
    rewrite the paths inside the yaml to the unpacked files.
    """
    zip_path = Path(zip_path).absolute()
    unpack_dir = Path(unpack_dir).absolute()
    unpack_dir.mkdir(parents=True, exist_ok=True)
    try:
        from espnet_model_zoo.downloader import ModelDownloader
    except ImportError:
        ModelDownloader = None
    if ModelDownloader is not None:
        info = ModelDownloader(unpack_dir).download_and_unpack(str(zip_path))
    else:
        from espnet2.main_funcs.pack_funcs import unpack

        info = unpack(zip_path, unpack_dir / zip_path.stem)
    if "asr_train_config" not in info or "asr_model_file" not in info:
        raise ValueError(
            f"{zip_path}: not a packed ASR model (its meta.yaml lists {sorted(info)}, "
            "expected asr_train_config and asr_model_file)"
        )
    return Path(info["asr_train_config"]), Path(info["asr_model_file"])


def resolve_source(
    src: Union[str, Path],
    src_config: Optional[Union[str, Path]] = None,
    unpack_dir: Optional[Union[str, Path]] = None,
) -> SourceModel:
    """Find config + model file of `src` (exp dir, packed .zip or model .pth).

    A packed .zip is unpacked into `unpack_dir`, which is then required (the caller owns it).
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"--src {src}: no such file or directory")
    if src.is_dir():
        model_path = pick_model_file(src)
        config_path = Path(src_config) if src_config else src / "config.yaml"
    elif src.suffix == ".zip":
        if unpack_dir is None:
            raise ValueError(f"--src {src}: a packed model needs unpack_dir (where to unpack it)")
        config_path, model_path = unpack_zip(src, unpack_dir)
        if src_config:
            config_path = Path(src_config)
    else:
        model_path = src
        config_path = Path(src_config) if src_config else src.parent / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path}: no config.yaml for the source model (give --src_config)"
        )
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: not an ESPnet config (not a mapping)")
    return SourceModel(config_path, model_path, config)


def load_state_dict(model_path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """A model state dict from an ESPnet model file (or a training checkpoint's 'model')."""
    from espnet2.torch_utils.safe_torch_load import safe_torch_load

    state = safe_torch_load(model_path, map_location="cpu")
    for key in ("module", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{model_path}: not a model state dict")
    return state


# ------------------------------------------------------------------ the new config
def _stock_encoder_default(encoder: str, name: str) -> Any:
    from espnet2.tasks.asr import encoder_choices

    cls = encoder_choices.get_class(encoder)
    return inspect.signature(cls.__init__).parameters[name].default


def _resolve_path(value: str, bases: Sequence[Path]) -> Optional[Path]:
    path = Path(value)
    if path.is_absolute():
        return path if path.exists() else None
    for base in bases:
        if (base / path).exists():
            return (base / path).resolve()
    return None


def convert_config(
    config: Dict[str, Any],
    exit_layers: Sequence[int],
    exit_norm: str = "per_exit",
    exit_decoders: str = "per_exit",
    share_exit_heads: bool = False,
    ctc_weight: Optional[float] = None,
) -> Dict[str, Any]:
    """The early-exit config of a stock ESPnet ASR config (paths are left as they are)."""
    from espnet_early_exit.encoders.exits import EXIT_NORM_MODES, validate_exit_layers
    from espnet_early_exit.model import EXIT_DECODER_MODES

    new = copy.deepcopy(config)
    for key in RUN_SPECIFIC_KEYS:
        new.pop(key, None)

    model = new.get("model") or "espnet"
    encoder = new.get("encoder")
    if model == "ee_espnet" and encoder in ENCODER_MAP.values():
        # a single-exit early-exit model (the no-EE baseline trained through the same code)
        src_enc = new.get("encoder_conf") or {}
        src_exits = list(src_enc.get("exit_layers") or [])
        stock = {v: k for k, v in ENCODER_MAP.items()}[encoder]
        src_blocks = src_enc.get("num_blocks")
        if src_blocks is None:
            src_blocks = _stock_encoder_default(stock, "num_blocks")
        if src_exits != [int(src_blocks)]:
            raise ValueError(
                f"encoder_conf.exit_layers: {src_exits}; an ee_espnet source must be a "
                f"single-exit model (exit_layers: [{src_blocks}])"
            )
        src_model_conf = new.get("model_conf") or {}
        for key in ("exit_weights", "share_exit_heads", "exit_decoders"):
            src_model_conf.pop(key, None)  # chosen anew for the exits being added
        encoder = new["encoder"] = stock
    elif model != "espnet":
        raise ValueError(
            f"model: {model!r}; only the stock `espnet` model or a single-exit `ee_espnet` "
            "model can be converted to ee_espnet"
        )
    if encoder not in ENCODER_MAP:
        raise ValueError(
            f"encoder: {encoder!r} has no early-exit version; supported: "
            f"{', '.join(ENCODER_MAP)}"
        )
    if exit_norm not in EXIT_NORM_MODES:
        raise ValueError(f"exit_norm: {exit_norm!r} is not one of {', '.join(EXIT_NORM_MODES)}")
    if exit_decoders not in EXIT_DECODER_MODES:
        raise ValueError(
            f"exit_decoders: {exit_decoders!r} is not one of {', '.join(EXIT_DECODER_MODES)}"
        )
    enc_conf = dict(new.get("encoder_conf") or {})
    num_blocks = enc_conf.get("num_blocks", _stock_encoder_default(encoder, "num_blocks"))
    validate_exit_layers(list(exit_layers), int(num_blocks))
    if enc_conf.pop("interctc_use_conditioning", False):
        raise ValueError(
            "encoder_conf.interctc_use_conditioning: self-conditioned CTC is not supported "
            "by the early-exit encoders"
        )
    if enc_conf.pop("interctc_layer_idx", None):
        logger.warning(
            "dropping encoder_conf.interctc_layer_idx (and model_conf.interctc_weight): "
            "the exits replace intermediate CTC"
        )
    new["encoder"] = ENCODER_MAP[encoder]
    enc_conf["exit_layers"] = [int(k) for k in exit_layers]
    enc_conf["exit_norm"] = exit_norm
    new["encoder_conf"] = enc_conf

    model_conf = dict(new.get("model_conf") or {})
    model_conf.pop("interctc_weight", None)
    if ctc_weight is not None:
        model_conf["ctc_weight"] = float(ctc_weight)
    weight = float(model_conf.get("ctc_weight", 0.5))
    if not 0.0 < weight <= 1.0:
        raise ValueError(
            f"model_conf.ctc_weight is {weight}: every exit needs a CTC head; give a "
            "ctc_weight in (0, 1] (e.g. 0.3: the CTC heads then start untrained)"
        )
    model_conf["share_exit_heads"] = bool(share_exit_heads)
    model_conf["exit_decoders"] = exit_decoders
    new["model"] = "ee_espnet"
    new["model_conf"] = model_conf
    return new


def localize_files(
    config: Dict[str, Any], bases: Sequence[Path], out_dir: Path
) -> Dict[str, str]:
    """Copy the files the config needs (stats, BPE model, token list) into out_dir."""
    copied = {}

    def take(value: Any, name: str) -> Any:
        if not isinstance(value, str) or value.lower() in ("none", "null", ""):
            return value
        found = _resolve_path(value, bases)
        if found is None:
            logger.warning(f"{value}: not found; left as it is in the new config")
            return value
        target = out_dir / name
        if found.resolve() != target.resolve():
            shutil.copyfile(found, target)
        copied[value] = str(target)
        return str(target)

    conf = config.get("normalize_conf")
    if isinstance(conf, dict) and "stats_file" in conf:
        conf["stats_file"] = take(conf["stats_file"], "feats_stats.npz")
    if "bpemodel" in config:
        config["bpemodel"] = take(config["bpemodel"], "bpe.model")
    if isinstance(config.get("token_list"), str):
        config["token_list"] = take(config["token_list"], "tokens.txt")
    elif isinstance(config.get("token_list"), list):  # for recipes that want the file
        (out_dir / "tokens.txt").write_text(
            "\n".join(config["token_list"]) + "\n", encoding="utf-8"
        )
    return copied


# ------------------------------------------------------------------ the new weights
def map_state_dict(
    src_state: Dict[str, torch.Tensor],
    target_state: Dict[str, torch.Tensor],
    init_exit_heads: str = "copy",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Weights for the early-exit model whose (randomly initialised) state is `target_state`.

    Every source weight keeps its name; earlier exits' CTC heads (`exit_ctc_heads.<k>.*`),
    decoders (`exit_att_decoders.<k>.*`) and norms (`encoder.exit_norms.<k>.*`) are copies of
    `ctc.*`, `decoder.*` and `encoder.after_norm.*` with "copy", absent with "fresh".
    Returns (state, report).
    """
    if init_exit_heads not in INIT_EXIT_HEADS:
        raise ValueError(
            f"init_exit_heads: {init_exit_heads!r} is not one of {', '.join(INIT_EXIT_HEADS)}"
        )
    unexpected = sorted(k for k in src_state if k not in target_state)
    if unexpected:
        raise ValueError(
            f"{len(unexpected)} source weights have no place in the early-exit model "
            f"(first: {unexpected[:5]}); is the source a stock espnet model?"
        )
    copies = (
        ("exit_ctc_heads.", "ctc."),
        ("exit_att_decoders.", "decoder."),
        ("encoder.exit_norms.", "encoder.after_norm."),
    )
    state: Dict[str, torch.Tensor] = {}
    report: Dict[str, Any] = {"same_name": 0, "copied": {}, "fresh": []}
    for key, target in target_state.items():
        if key in src_state:
            value = src_state[key]
            if value.shape != target.shape:
                raise ValueError(
                    f"{key}: shape {tuple(value.shape)} in the source, "
                    f"{tuple(target.shape)} in the early-exit model"
                )
            state[key] = value
            report["same_name"] += 1
            continue
        src_key = None
        for prefix, src_prefix in copies:
            if key.startswith(prefix):
                rest = key[len(prefix):].split(".", 1)  # "<exit>", "<param path>"
                if len(rest) == 2:
                    src_key = src_prefix + rest[1]
                break
        if (
            init_exit_heads == "copy"
            and src_key is not None
            and src_key in src_state
            and src_state[src_key].shape == target.shape
        ):
            state[key] = src_state[src_key]
            report["copied"][key] = src_key
        else:
            report["fresh"].append(key)
    return state, report


# ------------------------------------------------------------------ all together
def add_exits(
    src: Union[str, Path],
    exit_layers: Sequence[int],
    out_dir: Union[str, Path],
    src_config: Optional[Union[str, Path]] = None,
    exit_norm: str = "per_exit",
    exit_decoders: str = "per_exit",
    share_exit_heads: bool = False,
    init_exit_heads: str = "copy",
    ctc_weight: Optional[float] = None,
    verify: bool = True,
) -> Dict[str, Any]:
    """Write `out_dir/{config.yaml,init.pth,add_exits.json}`; returns the report.

    verify: build the source and the new model and check that, in eval mode on a random
    input, the last exit's encoder output and CTC log-posteriors equal the source model's.
    """
    from espnet_early_exit.task import EarlyExitASRTask

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = resolve_source(src, src_config, unpack_dir=out_dir / "src_unpacked")
    logger.info(f"source: {source.config_path} + {source.model_path}")
    config = convert_config(
        source.config,
        exit_layers,
        exit_norm=exit_norm,
        exit_decoders=exit_decoders,
        share_exit_heads=share_exit_heads,
        ctc_weight=ctc_weight,
    )
    cfg_dir = source.config_path.resolve().parent
    bases = [Path.cwd(), cfg_dir, cfg_dir.parent, cfg_dir.parent.parent]
    localize_files(config, bases, out_dir)

    # the training parser must accept every key of the new config (ESPnet rejects others)
    parser = EarlyExitASRTask.get_parser()
    known = {action.dest for action in parser._actions}
    for key in [k for k in config if k not in known]:
        logger.warning(f"dropping {key!r} from the config: not an option of asr_train")
        config.pop(key)
    for action in parser._actions:  # command-line values append to these: keep them out
        if isinstance(action, argparse._AppendAction):
            config.pop(action.dest, None)
    config_path = out_dir / "config.yaml"
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, allow_unicode=True, sort_keys=False)
    parser.parse_args(["--config", str(config_path)])

    model, _ = EarlyExitASRTask.build_model_from_file(config_path, None, "cpu")
    src_state = load_state_dict(source.model_path)
    state, report = map_state_dict(src_state, model.state_dict(), init_exit_heads)
    init_path = out_dir / "init.pth"
    torch.save(state, init_path)

    model.load_state_dict(state, strict=False)  # the keys left out stay fresh
    if verify:
        src_config = copy.deepcopy(source.config)
        localize_files(src_config, bases, out_dir)  # its stats file etc., found as above
        report["verified_max_abs_diff"] = verify_last_exit(
            src_config, source.model_path, model
        )

    report.update(
        source_config=str(source.config_path),
        source_model=str(source.model_path),
        config=str(config_path),
        init_param=str(init_path),
        exit_layers=[int(k) for k in exit_layers],
        init_exit_heads=init_exit_heads,
        train_command=(
            "python -m espnet_early_exit.bin.asr_train --config "
            f"{config_path} --init_param {init_path} <data and output options>"
        ),
    )
    with open(out_dir / "add_exits.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    logger.info(
        f"{report['same_name']} weights mapped by name, {len(report['copied'])} copied into "
        f"earlier exits, {len(report['fresh'])} fresh; wrote {config_path} and {init_path}"
    )
    return report


@torch.no_grad()
def verify_last_exit(
    src_config: Dict[str, Any],
    src_model_path: Union[str, Path],
    ee_model: torch.nn.Module,
    atol: float = 1e-4,
) -> float:
    """Max |difference| of encoder output and CTC log-probs between source and last exit."""
    from espnet2.tasks.asr import ASRTask

    src_args = argparse.Namespace(**copy.deepcopy(src_config))
    src_model = ASRTask.build_model(src_args)
    src_model.load_state_dict(load_state_dict(src_model_path))
    src_model.eval()
    ee_model.eval()
    gen = torch.Generator().manual_seed(0)
    input_size = getattr(src_args, "input_size", None)
    if input_size is None:
        speech = torch.randn(2, 16000, generator=gen) * 0.1
        lengths = torch.tensor([16000, 12000])
    else:
        speech = torch.randn(2, 200, int(input_size), generator=gen)
        lengths = torch.tensor([200, 150])
    enc, enc_lens = src_model.encode(speech, lengths)
    if isinstance(enc, tuple):  # intermediate CTC outputs of the source
        enc = enc[0]
    exits, ee_lens = ee_model.encode_exits(speech, lengths)
    k_last, out = exits[-1]
    if not torch.equal(enc_lens, ee_lens):
        raise AssertionError(f"lengths differ: {enc_lens.tolist()} vs {ee_lens.tolist()}")
    diff = (enc - out).abs().max().item()
    if src_model.ctc is not None:
        diff = max(
            diff,
            (src_model.ctc.log_softmax(enc) - ee_model.ctc_at(k_last).log_softmax(out))
            .abs()
            .max()
            .item(),
        )
    if diff > atol:
        raise AssertionError(
            f"the early-exit model's last exit differs from the source model by {diff}"
        )
    return diff


# ------------------------------------------------------------------ interCTC as early exit
def interctc_config_to_ee(config: Dict[str, Any]) -> Dict[str, Any]:
    """The `ee_conformer`/`ee_espnet` config equivalent to a stock Conformer interCTC config:
    exits at every `interctc_layer_idx` layer and the last block, shared norm, one CTC head."""
    if config.get("encoder") != "conformer":
        raise ValueError(f"encoder is {config.get('encoder')!r}, expected the stock 'conformer'")
    config = copy.deepcopy(config)
    enc = config.setdefault("encoder_conf", {}) or {}
    inter = [int(k) for k in enc.pop("interctc_layer_idx", None) or []]
    if enc.pop("interctc_use_conditioning", False):
        raise ValueError("interctc_use_conditioning: true (self-conditioning) has no EE equivalent")
    config["encoder_conf"] = enc
    num_blocks = int(enc.get("num_blocks", _stock_encoder_default("conformer", "num_blocks")))
    return convert_config(config, sorted(set(inter) | {num_blocks}), exit_norm="shared",
                          exit_decoders="last", share_exit_heads=True)


def _greedy_ctc_tokens(log_probs: torch.Tensor, token_list: Sequence[str]) -> str:
    """Greedy CTC of one utterance's (T, V) log-probs: repeats collapsed, blanks (0) dropped,
    the tokens joined by spaces (tokens, not text: no tokenizer's detokenisation in between)."""
    ids = torch.unique_consecutive(log_probs.argmax(-1)).tolist()
    return " ".join(token_list[i] for i in ids if i != 0)


def interctc_to_ee(
    src_exp: Union[str, Path],
    out_exp: Union[str, Path],
    model_file: str = "valid.loss.ave.pth",
    verify_wav_scp: Optional[Union[str, Path]] = None,
) -> Dict[str, Any]:
    """Write `out_exp/{config.yaml,<model_file>}`: the interCTC experiment `src_exp` as an
    early-exit one (same weights, loaded strictly). Returns the report; with
    `verify_wav_scp`, it also compares, on that file's first utterance, the stock model's
    greedy CTC output at every interCTC layer and the last with the early-exit decoder's at
    each exit (`identical`) and the last layer's encoder outputs (`last_layer_max_abs_diff`).
    """
    from espnet2.tasks.asr import ASRTask

    import espnet_early_exit  # noqa: F401  (registers the ee_* classes)

    src_exp, out_exp = Path(src_exp), Path(out_exp)
    with open(src_exp / "config.yaml", encoding="utf-8") as f:
        ee_config = interctc_config_to_ee(yaml.safe_load(f))
    out_exp.mkdir(parents=True, exist_ok=True)
    with open(out_exp / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(ee_config, f, sort_keys=False)
    shutil.copyfile(src_exp / model_file, out_exp / model_file)
    if (src_exp / "train.log").is_file():  # kept for the record (wall time, losses)
        shutil.copyfile(src_exp / "train.log", out_exp / "src_train.log")

    # strict load: every key of the stock model maps to the EE model and back
    ee_model, _ = ASRTask.build_model_from_file(out_exp / "config.yaml", None, "cpu")
    missing, unexpected = ee_model.load_state_dict(load_state_dict(out_exp / model_file),
                                                   strict=False)
    report: Dict[str, Any] = {"missing_keys": list(missing), "unexpected_keys": list(unexpected)}
    if missing or unexpected:
        raise RuntimeError(f"state dict does not map 1:1: {report}")
    if verify_wav_scp is not None:
        report.update(_verify_interctc(src_exp, out_exp, model_file, ee_model, verify_wav_scp))
    return report


@torch.no_grad()
def _verify_interctc(src_exp: Path, out_exp: Path, model_file: str, ee_model: torch.nn.Module,
                     wav_scp: Union[str, Path]) -> Dict[str, Any]:
    import soundfile
    from espnet2.tasks.asr import ASRTask

    from espnet_early_exit.inference import EarlyExitSpeech2Text

    utt, path = Path(wav_scp).read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)
    wav, fs = soundfile.read(path, dtype="float32")
    stock, _ = ASRTask.build_model_from_file(src_exp / "config.yaml", src_exp / model_file, "cpu")
    speech = torch.from_numpy(wav)[None]
    lengths = torch.tensor([speech.shape[1]])
    enc, _ = stock.eval().encode(speech, lengths)
    layers: Dict[int, torch.Tensor] = {}
    if isinstance(enc, tuple):
        enc, inter = enc
        layers.update({int(k): h for k, h in inter})
    layers[int(ee_model.encoder.exit_layers[-1])] = enc
    token_list = list(stock.token_list)
    stock_text = {k: _greedy_ctc_tokens(stock.ctc.log_softmax(h)[0], token_list)
                  for k, h in layers.items()}

    s2t = EarlyExitSpeech2Text(str(out_exp / "config.yaml"), str(out_exp / model_file),
                               device="cpu", beam_size=1, ctc_weight=1.0, lm_weight=0.0, nbest=1)
    ee_text = {int(k): " ".join(r[0].token) for k, r in s2t.decode_all_exits(wav, fs=fs).items()}
    ee_enc, _ = ee_model.eval().encode(speech, lengths)
    if isinstance(ee_enc, tuple):
        ee_enc = ee_enc[0]
    return {"utt": utt, "stock_greedy": stock_text, "ee_greedy": ee_text,
            "last_layer_max_abs_diff": float((ee_enc - enc).abs().max()),
            "identical": all(stock_text[k] == ee_text.get(k) for k in stock_text)}
