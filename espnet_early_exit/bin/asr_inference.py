#!/usr/bin/env python3
"""Early-exit ASR decoding: ``python -m espnet_early_exit.bin.asr_inference``.

Every option of ESPnet's ``espnet2.bin.asr_inference`` (its parser is reused), plus:

  --exit_layer K            exit of the fixed policy (default: the last exit)
  --exit_policy NAME        fixed | entropy | max_posterior | nbest_posterior | agreement |
                            learned | oracle
  --exit_policy_conf DICT   further options of the policy ("{max_edits: 1}", "{model: F}")
  --exit_threshold X        threshold of a dynamic policy (see espnet_early_exit/policies.py)
  --exit_policy_nbest N     n of nbest_posterior (default 4)
  --exit_policy_frame_stride N   entropy / max_posterior from every n-th frame (default 1)
  --ref_text FILE           Kaldi text file with the references (oracle policy)
  --all_exits true          decode every exit in one pass (the encoder runs once per
                            utterance, resuming from exit to exit)

Output, under --output_dir (ESPnet's layout, one line per utterance):

  <n>best_recog/{text,token,token_int,score}   as ESPnet writes them
  <n>best_recog/exit                           the exit each utterance stopped at
  <n>best_recog/confidence                     "k1:c1 k2:c2 ..." of the exits the policy
                                               evaluated (empty for the fixed policy)
  timing.json                                  {"rtf", "audio_seconds", "wall_seconds", ...}:
                                               decode wall time (model loading excluded)

The output dir is written as ``<output_dir>.tmp`` and renamed into place (replacing an older
one) once every utterance is decoded, with a ``.done`` marker (the digest of --key_file): a
killed or failed run (a full disk) leaves no output that looks finished.

Every speech file (type ``sound``) is checked before decoding: its sampling rate must be the
model's (this tool does not resample; a wrong rate stops it with the file's name).

With --all_exits true the same files go to ``exit<k>/<n>best_recog/`` for every exit k
(``confidence`` then holds the policy's numbers at k and before it, when --exit_policy is a
dynamic policy; the threshold is not needed; ``features`` the numbers of
``espnet_early_exit.exit_trace.FEATURES`` at k, from which the policies' decisions at any
threshold are derived: ``espnet_early_exit.bin.tradeoff``), ``exit<k>/timing.json`` holds the time as if
decoding had stopped at k (front-end + blocks up to k + the search at k) and ``timing.json``
the whole pass.
"""

import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import soundfile

from espnet2.bin.asr_inference import _too_short_result
from espnet2.bin.asr_inference import get_parser as espnet_get_parser
from espnet2.fileio.datadir_writer import DatadirWriter
from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError
from espnet2.legacy.utils.cli_utils import get_commandline_args
from espnet2.torch_utils.set_all_random_seed import set_all_random_seed
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import float_or_none, int_or_none, str2bool, str_or_none

from espnet_early_exit.bin._cli import setup_logging
from espnet_early_exit.exit_trace import format_features
from espnet_early_exit.fileio import atomic_directory, read_table
from espnet_early_exit.inference import (
    _S2T_PARAMS,
    EarlyExitResult,
    EarlyExitSpeech2Text,
    format_confidences,
)
from espnet_early_exit.policies import POLICIES
from espnet_early_exit.stages.jobs import write_job_marker
from espnet_early_exit.task import EarlyExitASRTask

logger = logging.getLogger(__name__)


def get_parser():
    """ESPnet's asr_inference parser plus the early-exit options."""
    parser = espnet_get_parser()
    parser.description = "Early-exit ASR decoding"
    # ESPnet's help texts contain a bare "%" ("3.19% CER"), which breaks --help under
    # ArgumentDefaultsHelpFormatter; escape lone percent signs
    for action in parser._actions:
        if action.help:
            action.help = re.sub(r"(?<!%)%(?![(%])", "%%", action.help)
    group = parser.add_argument_group("Early exit related")
    group.add_argument(
        "--exit_layer",
        type=int_or_none,
        default=None,
        help="Exit of the fixed policy (one of the model's exit_layers; default: the last)",
    )
    group.add_argument(
        "--exit_policy",
        type=str,
        default="fixed",
        choices=sorted(POLICIES),
        help="How to choose the exit per utterance (see espnet_early_exit/policies.py)",
    )
    group.add_argument(
        "--exit_threshold",
        type=float_or_none,
        default=None,
        help="Threshold of a dynamic policy: entropy stops when its normalised entropy "
        "< threshold; max_posterior / nbest_posterior when the confidence >= threshold "
        "(all in [0, 1]); agreement: the patience (>= 1), learned: a probability",
    )
    group.add_argument(
        "--exit_policy_nbest",
        type=int,
        default=4,
        help="Hypotheses in the n-best softmax of nbest_posterior",
    )
    group.add_argument(
        "--exit_policy_frame_stride",
        type=int,
        default=1,
        help="entropy / max_posterior: estimate the confidence from every n-th encoder frame "
        "(cheaper CTC head at the exits that are only evaluated; 1 = exact)",
    )
    group.add_argument(
        "--exit_policy_conf",
        action=NestedDictAction,
        default=dict(),
        help="Further options of the exit policy, e.g. \"{max_edits: 1}\" (agreement) or "
        "\"{model: exit_policy.json}\" (learned)",
    )
    group.add_argument(
        "--ref_text",
        type=str_or_none,
        default=None,
        help="Kaldi text file (<uttid> <transcript>) with references, for --exit_policy oracle",
    )
    group.add_argument(
        "--all_exits",
        type=str2bool,
        default=False,
        help="Decode every exit in one pass and write exit<k>/<n>best_recog/ for each",
    )
    return parser


def _write_nbest(
    writer: DatadirWriter,
    key: str,
    results: List,
    nbest: int,
    exit_layer: int,
    confidences: Dict[int, float],
) -> None:
    """ESPnet's <n>best_recog files plus `exit` and `confidence`."""
    for n, res in zip(range(1, nbest + 1), results):
        text, token, token_int, hyp = res
        w = writer[f"{n}best_recog"]
        w["token"][key] = " ".join(token)
        w["token_int"][key] = " ".join(map(str, token_int))
        w["score"][key] = str(float(hyp.score))
        if text is not None:
            w["text"][key] = text
    for n in range(1, max(1, min(nbest, len(results))) + 1):
        w = writer[f"{n}best_recog"]
        w["exit"][key] = str(exit_layer)
        w["confidence"][key] = format_confidences(confidences)
        if results and results[0].features is not None:
            w["features"][key] = format_features(results[0].features)


def _write_timing(path: Path, wall: float, audio: Optional[float], **extra) -> None:
    info = {
        "rtf": (wall / audio) if audio else None,
        "audio_seconds": audio,
        "wall_seconds": wall,
    }
    info.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")



def _check_replaceable(output_dir: Path) -> None:
    """The output dir is replaced as a whole: refuse a folder that holds files and is not an
    earlier output of ours (no ``.done`` marker), so that no user file is ever deleted."""
    if output_dir.resolve() == Path.cwd().resolve() or output_dir.name in ("", ".", ".."):
        raise ValueError(f"--output_dir {output_dir}: give a folder of its own (it is replaced "
                         "as a whole when the decode finishes)")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / ".done").exists():
        raise ValueError(f"--output_dir {output_dir} exists, is not empty and was not written by "
                         "this decoder (no .done marker): it would be replaced as a whole; "
                         "choose another folder or remove it")

def inference(
    output_dir: str,
    batch_size: int,
    ngpu: int,
    seed: int,
    num_workers: int,
    log_level,
    data_path_and_name_and_type,
    key_file: Optional[str],
    allow_variable_data_keys: bool,
    model_tag: Optional[str],
    word_lm_train_config: Optional[str],
    word_lm_file: Optional[str],
    exit_layer: Optional[int],
    exit_policy: str,
    exit_threshold: Optional[float],
    exit_policy_nbest: int,
    exit_policy_frame_stride: int,
    exit_policy_conf: Optional[Dict[str, Any]],
    ref_text: Optional[str],
    all_exits: bool,
    **speech2text_kwargs,
):
    """ESPnet's inference() loop with EarlyExitSpeech2Text and the early-exit outputs."""
    if word_lm_train_config is not None:
        raise NotImplementedError("Word LM is not implemented")
    if ngpu > 1:
        raise NotImplementedError("only single GPU decoding is supported")
    setup_logging(log_level)
    device = "cuda" if ngpu >= 1 else "cpu"
    set_all_random_seed(seed)
    refs = _policy_refs(exit_policy, exit_threshold, exit_layer, ref_text, all_exits)

    # 1. Build speech2text
    unknown = [k for k in speech2text_kwargs if k not in _S2T_PARAMS]
    if unknown:
        raise ValueError(f"options not understood by Speech2Text: {unknown}")
    kwargs = dict(speech2text_kwargs, device=device, batch_size=batch_size)
    speech2text = EarlyExitSpeech2Text.from_pretrained(
        model_tag=model_tag,
        exit_layer=exit_layer,
        exit_policy=exit_policy,
        exit_threshold=exit_threshold,
        exit_policy_nbest=exit_policy_nbest,
        exit_policy_frame_stride=exit_policy_frame_stride,
        exit_policy_conf=exit_policy_conf,
        **kwargs,
    )
    fs = speech2text.model_fs
    check_sample_rates(data_path_and_name_and_type, key_file, fs)

    # 2. Build data-iterator
    loader = EarlyExitASRTask.build_streaming_iterator(
        data_path_and_name_and_type,
        dtype=speech2text.dtype,
        batch_size=batch_size,
        key_file=key_file,
        num_workers=num_workers,
        preprocess_fn=EarlyExitASRTask.build_preprocess_fn(
            speech2text.asr_train_args, False
        ),
        collate_fn=EarlyExitASRTask.build_collate_fn(speech2text.asr_train_args, False),
        allow_variable_data_keys=allow_variable_data_keys,
        inference=True,
    )

    # 3. Decode into <output_dir>.tmp, renamed into place once complete with its .done
    _check_replaceable(Path(output_dir))
    with atomic_directory(output_dir) as out:
        with DatadirWriter(out) as writer:
            totals = _decode_loader(speech2text, loader, writer, refs, ref_text, all_exits)

        audio = totals.audio if fs else None
        extra = dict(
            n_utt=totals.n_utt,
            policy=exit_policy,
            threshold=exit_threshold,
            frame_stride=exit_policy_frame_stride,
        )
        _write_timing(out / "timing.json", totals.wall, audio, **extra)
        done = dict(n_utt=totals.n_utt, command=sys.argv)
        if all_exits:
            for k, seconds in sorted(totals.exit_seconds.items()):
                _write_timing(
                    out / f"exit{k}" / "timing.json",
                    seconds,
                    audio,
                    n_utt=totals.n_utt,
                    estimated_from_all_exits_pass=True,
                )
                write_job_marker(out / f"exit{k}", key_file, done)
        write_job_marker(out, key_file, done)


def _policy_refs(
    exit_policy: str,
    exit_threshold: Optional[float],
    exit_layer: Optional[int],
    ref_text: Optional[str],
    all_exits: bool,
) -> Optional[Dict[str, str]]:
    """Check the early-exit options together; the references where the policy reads them."""
    policy_cls = POLICIES[exit_policy]
    if all_exits and exit_layer is not None:
        raise ValueError("--exit_layer and --all_exits true exclude each other")
    if not all_exits and policy_cls.dynamic and not policy_cls.needs_reference:
        if exit_threshold is None:
            raise ValueError(f"--exit_policy {exit_policy} needs --exit_threshold")
    if not policy_cls.needs_reference:
        return None
    if ref_text is None:
        raise ValueError(f"--exit_policy {exit_policy} needs --ref_text")
    return read_table(ref_text, duplicates="last")


def check_sample_rates(
    data_path_and_name_and_type: Sequence[Tuple[str, str, str]],
    key_file: Optional[str],
    fs: Optional[int],
) -> None:
    """Stop before decoding if a speech file (type ``sound``) is not sampled at ``fs`` Hz.

    Only the utterances of ``key_file`` are checked where it is given; nothing is checked
    for a model that reads features (``fs`` None). Reads the files' headers only.
    """
    if not fs:
        return
    keys = None if key_file is None else set(read_table(key_file, duplicates="last"))
    for path, name, data_type in data_path_and_name_and_type:
        if name != "speech" or data_type != "sound":
            continue
        for key, audio_file in read_table(path, duplicates="last").items():
            if (keys is not None and key not in keys) or audio_file == "None":
                continue
            rate = soundfile.info(audio_file).samplerate
            if rate != fs:
                raise ValueError(
                    f"{audio_file} (utterance {key} of {path}) is sampled at {rate} Hz but "
                    f"the model expects {fs} Hz audio; resample it first"
                )


@dataclass
class _Totals:
    wall: float = 0.0  # decoding seconds
    audio: float = 0.0  # seconds of audio (where the model's rate is known)
    n_utt: int = 0
    exit_seconds: Dict[int, float] = field(default_factory=dict)  # --all_exits: per exit


def _decode_loader(
    speech2text: EarlyExitSpeech2Text,
    loader,
    writer: DatadirWriter,
    refs: Optional[Dict[str, str]],
    ref_text: Optional[str],
    all_exits: bool,
) -> _Totals:
    """Decode every batch of ``loader`` and write its results; the time and audio totals."""
    totals = _Totals()
    nbest = speech2text.nbest
    fs = speech2text.model_fs
    for keys, batch in loader:
        assert isinstance(batch, dict), type(batch)
        assert all(isinstance(s, str) for s in keys), keys
        speech = batch["speech"]
        lengths = batch.get("speech_lengths")
        if lengths is None:
            lengths = [speech.size(1)] * speech.size(0)
        waves = [speech[b, : int(n)] for b, n in enumerate(lengths)]
        utt_refs = None
        if refs is not None:
            missing = [k for k in keys if k not in refs]
            if missing:
                raise ValueError(f"--ref_text {ref_text} has no reference for {missing}")
            utt_refs = [refs[k] for k in keys]
        totals.n_utt += len(keys)
        if fs:
            totals.audio += sum(int(n) for n in lengths) / fs
        t0 = time.perf_counter()
        if all_exits:
            per_utt = _decode_all(speech2text, waves, utt_refs, keys, totals.exit_seconds)
        else:
            per_utt = _decode(speech2text, waves, utt_refs, keys)
        totals.wall += time.perf_counter() - t0

        for key, res in zip(keys, per_utt):
            if all_exits:
                for k, results in res.items():
                    confs = results[0].confidences if results else {}
                    _write_nbest(writer[f"exit{k}"], key, results, nbest, k, confs)
            else:
                results, k = res
                confs = results[0].confidences if results else {}
                _write_nbest(writer, key, results, nbest, k, confs)
    return totals


def _placeholder(speech2text: EarlyExitSpeech2Text, k: int) -> List[EarlyExitResult]:
    """ESPnet's too-short placeholder hypothesis, as EarlyExitResults at exit k."""
    rows = _too_short_result(speech2text.nbest, False, speech2text)
    return [EarlyExitResult(t, tok, ti, hyp, k, {}) for t, tok, ti, hyp in rows]


def _fallback_exit(speech2text: EarlyExitSpeech2Text) -> int:
    # a too-short utterance computes nothing; report the fixed exit, else the first one
    return speech2text.exit_layer or speech2text.exit_layers[0]


def _retrying(
    decode: Callable[[List[Any], Optional[List[Optional[str]]]], List[Any]],
    placeholder: Callable[[], Any],
    waves: List[Any],
    refs: Optional[List[Optional[str]]],
    keys: List[str],
) -> List[Any]:
    """``decode(waves, refs)``, one result per utterance; a batch with a too-short utterance
    is retried one utterance at a time, and a too-short one alone gets ``placeholder()``."""
    try:
        return decode(waves, refs)
    except TooShortUttError as e:
        if len(waves) == 1:
            logging.warning(f"Utterance {keys} {e}")
            return [placeholder()]
        logging.warning(f"Utterances {keys} {e}; retrying them one at a time")
        return [
            _retrying(decode, placeholder, [w], None if refs is None else [r], [key])[0]
            for w, r, key in zip(waves, refs or [None] * len(waves), keys)
        ]


def _decode(speech2text, waves, refs, keys):
    """[(results, exit), ...] per utterance; too-short utterances get ESPnet's placeholder."""

    def decode(waves, refs):
        batch = speech2text.decode_batch(waves, refs=refs)
        return [(r, r[0].exit_layer if r else _fallback_exit(speech2text)) for r in batch]

    def placeholder():
        k = _fallback_exit(speech2text)
        return (_placeholder(speech2text, k), k)

    return _retrying(decode, placeholder, waves, refs, keys)


def _decode_all(speech2text, waves, refs, keys, exit_seconds):
    """[{exit: results}, ...] per utterance."""

    def decode(waves, refs):
        return speech2text.decode_all_exits_batch(waves, refs=refs, timings=exit_seconds)

    def placeholder():
        return {k: _placeholder(speech2text, k) for k in speech2text.exit_layers}

    return _retrying(decode, placeholder, waves, refs, keys)


def main(cmd=None):
    print(get_commandline_args(), file=sys.stderr)
    parser = get_parser()
    args = parser.parse_args(cmd)
    kwargs = vars(args)
    kwargs.pop("config", None)
    inference(**kwargs)


if __name__ == "__main__":
    main()
