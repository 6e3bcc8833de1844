#!/usr/bin/env python3
"""Prepare (and upload) a Hugging Face model repository for a packed model (recipe stage 15).

    python -m espnet_early_exit.bin.upload_model \
        --packed exp/asr_x/asr_model.zip --exp_dir exp/asr_x --hf_repo user/name \
        [--dry_run true] [--out_dir exp/asr_x/hf_repo] [--token_env HF_TOKEN] \
        [--training_data "LibriSpeech train-clean-100 (CC BY 4.0)"] [--license cc-by-4.0] \
        [--language en] [--dataset librispeech_asr ...] [--private false]

Writes --out_dir (default <exp_dir>/hf_repo): the packed files unpacked as they are plus a
model card README.md (per-exit results from RESULTS.md, the exit-policy thresholds of
<exp_dir>/selected_thresholds.json, how to load, citation, training data and licence). Unless
--dry_run true, then creates the repository if needed and uploads the folder with
huggingface_hub's HfApi.upload_folder.

The token is read ONLY from the environment variable named by --token_env (default HF_TOKEN):
there is no option that takes the token itself, and it is never logged or written to a file.
"""

import argparse
import logging
import sys
from typing import List, Optional

from espnet_early_exit.zoo import ModelZooError, prepare_hf_repo, upload_hf_repo
from espnet_early_exit.bin._cli import add_log_level, setup_logging, str2bool


class _RefuseToken(argparse.Action):
    """--token: refused without echoing its value (it would end up in logs and history)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} is not accepted: put the token in an environment variable and "
            "name it with --token_env (default HF_TOKEN)"
        )


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Prepare and upload a Hugging Face repository for a packed early-exit model",
        allow_abbrev=False,  # else "--token X" would silently mean "--token_env X"
    )
    parser.add_argument("--packed", required=True, help="the zip from pack_model")
    parser.add_argument("--exp_dir", required=True,
                        help="the experiment dir (RESULTS.md, selected_thresholds.json)")
    parser.add_argument("--hf_repo", required=True, help="<user or organisation>/<name>")
    parser.add_argument("--dry_run", type=str2bool, default=False,
                        help="only write the folder, do not upload (default: false)")
    parser.add_argument("--out_dir", default=None,
                        help="the repository folder (default: <exp_dir>/hf_repo)")
    parser.add_argument("--token_env", default="HF_TOKEN",
                        help="NAME of the environment variable holding the Hugging Face token "
                        "(default: HF_TOKEN)")
    parser.add_argument("--training_data", default=None,
                        help="the training data and its licence, for the model card")
    parser.add_argument("--license", default="cc-by-4.0", help="the model's licence (card; default: cc-by-4.0)")
    parser.add_argument("--language", default="en", help="language code (card; default: en); 'none' to omit")
    parser.add_argument("--dataset", action="append", default=None,
                        help="Hugging Face dataset id(s) for the card's front matter "
                        "(default: the recipe's corpus name, when run under egs2/<corpus>/asr1)")
    parser.add_argument("--private", type=str2bool, default=False,
                        help="create the repository as private (default: false)")
    parser.add_argument("--commit_message", default=None,
                        help="default: 'Upload early-exit ASR model (espnet_early_exit <version>)'")
    parser.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    add_log_level(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse would echo the values too: one of them may be a token
        options = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
        parser.error(f"unrecognized arguments: {' '.join(options) or '(values not shown)'}")
    setup_logging(args.log_level)
    try:
        folder = prepare_hf_repo(
            args.packed,
            args.exp_dir,
            args.hf_repo,
            out_dir=args.out_dir,
            training_data=args.training_data,
            license=args.license,
            language=None if args.language.lower() == "none" else args.language,
            datasets=args.dataset,
        )
        logging.info("repository folder: %s", folder)
        if args.dry_run:
            logging.info("dry run: not uploading (the folder is ready for upload)")
            return 0
        commit = upload_hf_repo(
            folder, args.hf_repo, token_env=args.token_env,
            commit_message=args.commit_message, private=args.private,
        )
        logging.info("uploaded: %s", getattr(commit, "commit_url", None)
                     or f"https://huggingface.co/{args.hf_repo}")
    except (ModelZooError, FileNotFoundError, ValueError) as e:
        logging.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
