"""The Python steps of the stage driver (egs2/TEMPLATE/asr1/asr.sh), one command line.

    python -m espnet_early_exit.bin.stage speed_perturb --data_dir data/train --out_dir data/train_sp \
        --audio_dir dump/speed_perturb/train --factors 0.9 1.0 1.1 [--nj 4]
    python -m espnet_early_exit.bin.stage format_audio --data_dir data/test --out_dir dump/raw/test \
        [--fs 16000] [--audio_format flac] [--nj 4] [--resample] [--skip_bad] [--force]
    python -m espnet_early_exit.bin.stage filter_dir --in_dir dump/raw/org/train --out_dir dump/raw/train \
        --fs 16000 --min_wav_duration 0.1 --max_wav_duration 20
    python -m espnet_early_exit.bin.stage bpe_token_list --text data/train/text \
        --out_dir data/token_list/bpe_unigram30 --nbpe 30 [--bpemode unigram] [--nlsyms "[unk]"]
    python -m espnet_early_exit.bin.stage split_keys --key_file dump/raw/test/wav.scp --nj 4 \
        --out_template DIR/keys.JOB.scp
    python -m espnet_early_exit.bin.stage pending_jobs --out_template DIR/output.JOB \
        --key_template DIR/keys.JOB.scp --nj 4      # prints FIRST:LAST ranges of unfinished jobs
    python -m espnet_early_exit.bin.stage merge_decode --out_dir DIR/exit4 [--require_done] PART_DIR ...
    python -m espnet_early_exit.bin.stage text_shape --in_file text_shape --out_file text_shape.bpe \
        --token_list tokens.txt
    python -m espnet_early_exit.bin.stage config_get --config exp/asr_x/config.yaml KEY.SUBKEY [--default X]
    python -m espnet_early_exit.bin.stage onnx_check [--inference_config conf/decode.yaml] \
        [--policies entropy max_posterior]      # can --inference_backend onnx decode as asked

The work is done by :mod:`espnet_early_exit.stages`; every command that writes a directory writes
``<dir>.tmp`` first and renames it into place with a ``.done`` marker inside. An error in the
input is logged (naming the file) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from espnet_early_exit.bin._cli import setup_logging

logger = logging.getLogger("espnet_early_exit.bin.stage")


def add_data_commands(sub) -> None:
    """Stages 2-4: speed perturbation, audio formatting, duration filter."""
    p = sub.add_parser("speed_perturb", help="stage 2: speed-perturbed copy of a Kaldi data dir")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--audio_dir", type=Path, required=True, help="perturbed flac files go here")
    p.add_argument("--factors", nargs="+", required=True)
    p.add_argument("--nj", type=int, default=1)

    p = sub.add_parser("format_audio", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="stage 3: cut and convert a Kaldi data dir's audio to 16-bit files")
    p.add_argument("--data_dir", type=Path, required=True, help="Kaldi data dir (wav.scp, text, ...)")
    p.add_argument("--out_dir", type=Path, required=True, help="output dir, e.g. dump/raw/<set>")
    p.add_argument("--fs", type=int, default=16000, help="expected (or, with --resample, target) rate")
    p.add_argument("--audio_format", default="flac", choices=("flac", "wav"))
    p.add_argument("--nj", type=int, default=1, help="parallel workers (threads)")
    p.add_argument("--resample", action="store_true", help="resample audio whose rate is not --fs")
    p.add_argument("--skip_bad", action="store_true", help="skip unreadable audio with a warning instead of failing")
    p.add_argument("--force", action="store_true", help="redo a complete out_dir")

    p = sub.add_parser("filter_dir", help="stage 4: drop too short/long utterances and empty transcripts")
    p.add_argument("--in_dir", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--fs", type=int, required=True)
    p.add_argument("--min_wav_duration", type=float, required=True)
    p.add_argument("--max_wav_duration", type=float, required=True)


def add_token_and_job_commands(sub) -> None:
    """Stage 5's token list, text shapes, job splitting/merging and config values."""
    p = sub.add_parser("bpe_token_list", help="stage 5: sentencepiece model + token list")
    p.add_argument("--text", type=Path, required=True, help="Kaldi text (<utt> <words>)")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--nbpe", type=int, required=True)
    p.add_argument("--bpemode", default="unigram", choices=("unigram", "bpe", "char", "word"))
    p.add_argument("--char_cover", type=float, default=1.0)
    p.add_argument("--input_sentence_size", type=int, default=100000000)
    p.add_argument("--nlsyms", default="", help="comma-separated user-defined symbols")
    p.add_argument("--blank", default="<blank>")
    p.add_argument("--oov", default="<unk>")
    p.add_argument("--sos_eos", default="<sos/eos>")

    p = sub.add_parser("split_keys", help="split a key file into nj parts")
    p.add_argument("--key_file", type=Path, required=True)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("--out_template", required=True, help="output path with JOB for the part number")

    p = sub.add_parser("pending_jobs", help="the decoding jobs without a complete output")
    p.add_argument("--out_template", required=True, help="a job's output dir, JOB for its number")
    p.add_argument("--key_template", required=True, help="a job's key file, JOB for its number")
    p.add_argument("--nj", type=int, required=True)

    p = sub.add_parser("merge_decode", help="merge the decoding outputs of parallel jobs")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--require_done", action="store_true", help="refuse a part without its .done")
    p.add_argument("parts", type=Path, nargs="+")

    p = sub.add_parser("text_shape", help="append the vocabulary size to text shapes")
    p.add_argument("--in_file", type=Path, required=True)
    p.add_argument("--out_file", type=Path, required=True)
    p.add_argument("--token_list", type=Path, required=True)

    p = sub.add_parser("config_get", help="print a value of a YAML config")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--default", default=None)
    p.add_argument("key")

    p = sub.add_parser("onnx_check", help="stage 12: can the onnx backend decode as asked")
    p.add_argument("--inference_config", type=Path, default=None, help="the decoding config")
    p.add_argument("--policies", nargs="*", default=[], help="the --exit_policies names")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_data_commands(sub)
    add_token_and_job_commands(sub)
    return parser


def run(args: argparse.Namespace) -> None:
    """Run one command (its module is imported only now: config_get stays fast)."""
    if args.command == "speed_perturb":
        from espnet_early_exit.stages.data_dirs import speed_perturb
        speed_perturb(args.data_dir, args.out_dir, args.audio_dir, args.factors, args.nj)
    elif args.command == "format_audio":
        from espnet_early_exit.stages.format_audio import format_data_dir
        format_data_dir(args.data_dir, args.out_dir, args.fs, args.audio_format, args.nj,
                        args.resample, args.skip_bad, args.force)
    elif args.command == "filter_dir":
        from espnet_early_exit.stages.data_dirs import filter_dir
        filter_dir(args.in_dir, args.out_dir, args.fs, args.min_wav_duration, args.max_wav_duration)
    elif args.command == "bpe_token_list":
        from espnet_early_exit.stages.tokens import bpe_token_list
        bpe_token_list(args.text, args.out_dir, args.nbpe, args.bpemode, args.char_cover,
                       args.input_sentence_size, args.nlsyms, args.blank, args.oov, args.sos_eos)
    elif args.command == "split_keys":
        from espnet_early_exit.stages.jobs import split_keys
        split_keys(args.key_file, args.nj, args.out_template)
    elif args.command == "merge_decode":
        from espnet_early_exit.stages.jobs import merge_decode
        merge_decode(args.parts, args.out_dir, args.require_done)
    elif args.command == "pending_jobs":
        from espnet_early_exit.stages.jobs import job_ranges, pending_jobs
        for first, last in job_ranges(pending_jobs(args.out_template, args.key_template, args.nj)):
            print(f"{first}:{last}")
    elif args.command == "text_shape":
        from espnet_early_exit.stages.tokens import text_shape
        text_shape(args.in_file, args.out_file, args.token_list)
    elif args.command == "config_get":
        from espnet_early_exit.stages.config import config_get
        print(config_get(args.config, args.key, args.default))
    elif args.command == "onnx_check":
        from espnet_early_exit.stages.onnx_backend import check_onnx_decoding
        check_onnx_decoding(args.inference_config, args.policies)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging("INFO")
    try:
        run(args)
    except (ValueError, KeyError, FileNotFoundError) as e:  # ValueError: also AudioFormatError
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
