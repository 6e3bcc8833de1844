#!/usr/bin/env python3
"""Decode with an exported ONNX early-exit model (onnxruntime; no torch, no ESPnet):

    python -m espnet_early_exit.bin.onnx_inference --onnx_dir exp/asr_x/onnx \
        --data_path_and_name_and_type dump/raw/test/wav.scp,speech,sound \
        --output_dir exp/asr_x/decode_onnx/test/exit4 [--exit_layer 4 | --exit_policy entropy \
        --exit_threshold 0.3 | --all_exits true] [--key_file keys.scp] [--num_threads 2]

--exit_policy: fixed, entropy, max_posterior, agreement (--exit_threshold: the patience,
--exit_policy_conf "{max_edits: 1}") or learned (the export's exit_policy.json, or
--exit_policy_conf "{model: path}"), with the options of ``bin/asr_inference``. With
--all_exits true each exit<k>/1best_recog also gets ``features``, what ``bin/fit_exit_policy``
fits the learned policy on.

Writes what ``espnet_early_exit.bin.asr_inference`` writes (stage 12; ``merge_decode`` and
stage 13 read it): ``1best_recog/{text,token,token_int,score,exit,confidence}`` and
``timing.json`` under --output_dir, or with --all_exits true the same under ``exit<k>/`` for
every exit (``exit<k>/timing.json``: the time as if decoding had stopped at k); last, the
``.done`` marker of a stage 12 job (the digest of --key_file), in each of those dirs. Every
speech file must be sampled at the model's rate (checked before decoding, naming the file).
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from espnet_early_exit.bin._cli import add_log_level, setup_logging, str2bool
from espnet_early_exit.exit_features import format_features
from espnet_early_exit.fileio import atomic_write_text, read_table, write_table
from espnet_early_exit.onnx_runtime import (
    POLICIES,
    OnnxEarlyExitSpeech2Text,
    OnnxResult,
    TooShortError,
    format_confidences,
)
from espnet_early_exit.stages.jobs import write_job_marker

logger = logging.getLogger("espnet_early_exit.bin.onnx_inference")
FILES = ("text", "token", "token_int", "score", "exit", "confidence")


def _scalar(text: str) -> Any:
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value.lower() in ("", "null", "none", "~"):
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


class PolicyConfAction(argparse.Action):
    """``--exit_policy_conf`` as asr_inference takes it (flat): ``"{max_edits: 1}"``,
    ``"{'model': 'f.json'}"`` or ``max_edits=1``; repeated options update the dict (no yaml:
    this CLI runs without ESPnet's parser)."""

    def __call__(self, parser, namespace, values, option_string=None):
        text = values.strip()
        braced = text.startswith("{") and text.endswith("}")
        conf = dict(getattr(namespace, self.dest) or {})
        for item in filter(str.strip, text[1:-1].split(",") if braced else [text]):
            key, sep, value = item.partition(":" if braced else "=")
            if not sep or not key.strip():
                parser.error(f"{option_string} {values!r}: give key=value or {{key: value, ...}}")
            conf[str(_scalar(key))] = _scalar(value)
        setattr(namespace, self.dest, conf)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Early-exit decoding with onnxruntime",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx_dir", required=True, help="export dir (export_onnx --out_dir)")
    p.add_argument("--data_path_and_name_and_type", action="append", required=True,
                   help="wav.scp,speech,sound (ESPnet's form)")
    p.add_argument("--key_file", default=None, help="decode only these utterances")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--exit_layer", type=int, default=None, help="exit of the fixed policy")
    p.add_argument("--exit_policy", default="fixed", choices=["fixed", *sorted(POLICIES)])
    p.add_argument("--exit_threshold", type=float, default=None,
                   help="threshold of a dynamic policy (default: the one packed with the model); "
                   "in [0, 1], agreement: the patience (>= 1)")
    p.add_argument("--exit_policy_conf", action=PolicyConfAction, default=None,
                   help="further options of the policy, e.g. \"{max_edits: 1}\" (agreement) or "
                   "\"{model: exit_policy.json}\" (learned; default: the export's)")
    p.add_argument("--all_exits", type=str2bool, default=False,
                   help="decode every exit in one pass; write exit<k>/ for each")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--num_threads", type=int, default=None, help="onnxruntime intra-op threads")
    add_log_level(p)
    return p


def read_wav_scp(data: List[str], key_file: Optional[str]) -> Dict[str, str]:
    """{utt: audio path} of the ``speech`` entry, limited to ``key_file``'s keys."""
    scp = [d.split(",") for d in data]
    speech = [path for path, name, kind in scp if name == "speech" and kind == "sound"]
    if len(speech) != 1:
        raise ValueError("--data_path_and_name_and_type needs one <wav.scp>,speech,sound entry")
    table = read_table(speech[0], duplicates="last")
    if key_file is not None:
        table = {k: table[k] for k in read_table(key_file, duplicates="last") if k in table}
    return table


def read_audio(table: Dict[str, str], fs: Optional[int]) -> Dict[str, tuple]:
    """{utt: (waveform, rate)}; stops at a file not sampled at ``fs`` (naming it)."""
    import soundfile

    if fs:
        for key, path in table.items():
            rate = soundfile.info(path).samplerate
            if rate != fs:
                raise ValueError(f"{path} (utterance {key}) is sampled at {rate} Hz but the "
                                 f"model expects {fs} Hz audio; resample it first")
    return {key: soundfile.read(path, dtype="float32") for key, path in table.items()}


def _rows(result: OnnxResult) -> Dict[str, str]:
    rows = {
        "text": result.text, "token": " ".join(result.token),
        "token_int": " ".join(map(str, result.token_int)), "score": str(result.score),
        "exit": str(result.exit_layer), "confidence": format_confidences(result.confidences),
    }
    if result.features is not None:
        rows["features"] = format_features(result.features)
    return rows


def _placeholder(k: int) -> OnnxResult:
    # ESPnet's too-short placeholder hypothesis (espnet2.bin.asr_inference._too_short_result)
    return OnnxResult(" ", ["<space>"], [2], 0.0, k, {})


def _decode(dec: OnnxEarlyExitSpeech2Text, keys: List[str], audio, all_exits: bool,
            timings: Dict[int, float]) -> List:
    """Results of a batch (dicts {exit: result} with all_exits); too-short ones alone."""
    waves = [audio[k][0] for k in keys]
    try:
        if all_exits:
            return [dec.decode_all_exits(w, timings=timings) for w in waves]
        return dec.decode_batch(waves)
    except TooShortError as e:
        if len(keys) > 1:
            return [r for k in keys for r in _decode(dec, [k], audio, all_exits, timings)]
        logger.warning(f"Utterance {keys[0]} {e}")
        fallback = dec.exit_layer if dec.policy is None else dec.exit_layers[0]
        return [{k: _placeholder(k) for k in dec.exit_layers} if all_exits
                else _placeholder(fallback)]


def _write(out: Path, results: Dict[str, OnnxResult], timing: dict) -> None:
    rows = {key: _rows(r) for key, r in results.items()}
    for name in FILES:
        write_table(out / "1best_recog" / name, {key: row[name] for key, row in rows.items()})
    features = {key: row["features"] for key, row in rows.items() if "features" in row}
    if features:  # all-exits pass (too-short utterances have none, as in asr_inference)
        write_table(out / "1best_recog" / "features", features)
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=1) + "\n")


def run(args) -> None:
    dec = OnnxEarlyExitSpeech2Text(args.onnx_dir, exit_layer=args.exit_layer,
                                   exit_policy=args.exit_policy,
                                   exit_threshold=args.exit_threshold,
                                   num_threads=args.num_threads,
                                   exit_policy_conf=args.exit_policy_conf)
    audio = read_audio(read_wav_scp(args.data_path_and_name_and_type, args.key_file),
                       dec.sample_rate)
    keys = list(audio)
    seconds = sum(len(w) / rate for w, rate in audio.values())
    timings: Dict[int, float] = {}
    results: Dict[str, object] = {}
    t0 = time.perf_counter()
    for i in range(0, len(keys), max(1, args.batch_size)):
        batch = keys[i:i + max(1, args.batch_size)]
        results.update(zip(batch, _decode(dec, batch, audio, args.all_exits, timings)))
    wall = time.perf_counter() - t0
    info = dict(n_utt=len(keys), backend="onnxruntime", policy=args.exit_policy,
                threshold=dec.exit_threshold, quantization=dec.manifest.get("quantization"))
    out = Path(args.output_dir)

    def timing(w: float, **extra) -> dict:
        return dict(rtf=w / seconds if seconds else None, audio_seconds=seconds,
                    wall_seconds=w, **info, **extra)

    done = dict(n_utt=len(keys), command=sys.argv)  # stage 12's job marker, written last
    for d in [out, *(out / f"exit{k}" for k in dec.exit_layers)]:
        (d / ".done").unlink(missing_ok=True)  # an earlier run's: not for what is written now
    if args.all_exits:
        for k in dec.exit_layers:
            _write(out / f"exit{k}", {key: r[k] for key, r in results.items()},
                   timing(timings.get(k, 0.0), estimated_from_all_exits_pass=True))
            write_job_marker(out / f"exit{k}", args.key_file, done)
        atomic_write_text(out / "timing.json", json.dumps(timing(wall), indent=1) + "\n")
    else:
        _write(out, results, timing(wall))
    write_job_marker(out, args.key_file, done)
    logger.info(f"decoded {len(keys)} utterances in {wall:.2f} s -> {out}")


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        logger.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
