"""LibriSpeech -> Kaldi data dirs (the LibriSpeech-100 recipe's sets).

Corpus: LibriSpeech ASR corpus (Panayotov et al., ICASSP 2015), read English
audiobooks at 16 kHz, https://www.openslr.org/12. Licence: CC BY 4.0.

Expected layout (``corpus_dir`` is the folder *holding* ``LibriSpeech/``; the
``LibriSpeech`` folder itself is accepted too)::

    <corpus_dir>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac
    <corpus_dir>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt
        (lines "<spk>-<chapter>-<nnnn> UPPER CASE WORDS")

Splits ``train-clean-100, dev-clean, dev-other, test-clean, test-other`` become
``data/{train_clean_100,dev_clean,dev_other,test_clean,test_other}``, and
``data/dev`` = dev_clean + dev_other when both dev splits are prepared (the
recipe's validation set). As in ESPnet's recipe, the utterance id is
``<spk>-<chapter>-<nnnn>`` and the speaker is ``<spk>-<chapter>``; ``wav.scp``
holds absolute paths of the flac files (no pipes).

Skipped with a warning and counted (reported per set, stored in ``.done``):
``missing_audio`` (transcript line whose flac does not exist),
``missing_transcript`` (flac without a transcript line, including a chapter
without ``trans.txt``), ``empty_transcript`` (id without words),
``malformed_line`` (id not of the form ``<spk>-<chapter>-<digits>`` for the
chapter folder it is in), ``duplicate_id``. Audio is only checked to exist;
``--check_audio`` also reads every flac header and fails naming a bad file
(decoding errors are otherwise caught in the format step).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Sequence

import soundfile

from local.common import (
    CorpusError,
    PreparedSet,
    SkipCounter,
    Utterance,
    download_file,
    is_done,
    new_parser,
    reused_set,
    run_cli,
    safe_extract,
    write_kaldi_dir,
)

logger = logging.getLogger("local.librispeech")

SPLITS = ("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other")
ALL_SPLITS = SPLITS + ("train-clean-360", "train-other-500")
COMBINED_DEV = ("dev-clean", "dev-other")
OPENSLR_URL = "https://www.openslr.org/resources/12"

LAYOUT = (
    "<corpus_dir>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac and "
    "<corpus_dir>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt "
    "(download from https://www.openslr.org/12)"
)


def set_name(split: str) -> str:
    """``train-clean-100`` -> ``train_clean_100``."""
    return split.replace("-", "_")


def download_librispeech(
    target_dir: Path,
    splits: Sequence[str] = SPLITS,
    base_url: str = OPENSLR_URL,
) -> Path:
    """Download and extract ``splits`` from OpenSLR into ``target_dir/LibriSpeech``.

    Resumable: a part's archive download resumes where it stopped, and a
    ``LibriSpeech/<split>/.completed`` marker skips parts already extracted.
    Returns ``target_dir`` (the ``corpus_dir`` for :func:`prepare_librispeech`).
    """
    target_dir = Path(target_dir)
    for split in splits:
        if split not in ALL_SPLITS:
            raise CorpusError(f"unknown LibriSpeech split {split!r}; known: {', '.join(ALL_SPLITS)}")
        completed = target_dir / "LibriSpeech" / split / ".completed"
        if completed.is_file():
            logger.info("%s already extracted (%s)", split, completed)
            continue
        archive = download_file(f"{base_url}/{split}.tar.gz", target_dir / f"{split}.tar.gz")
        logger.info("extracting %s", archive)
        safe_extract(archive, target_dir)
        if not completed.parent.is_dir():
            raise CorpusError(f"{archive} did not contain LibriSpeech/{split}/")
        completed.touch()
    return target_dir


def find_librispeech_root(corpus_dir: Path) -> Path:
    """The ``LibriSpeech`` folder inside ``corpus_dir`` (or ``corpus_dir`` itself if it is one)."""
    corpus_dir = Path(corpus_dir)
    if (corpus_dir / "LibriSpeech").is_dir():
        return corpus_dir / "LibriSpeech"
    if corpus_dir.name == "LibriSpeech" and corpus_dir.is_dir():
        return corpus_dir
    raise CorpusError(
        f"LibriSpeech not found: {corpus_dir / 'LibriSpeech'} does not exist. Expected layout: {LAYOUT}"
    )


def read_split(split_dir: Path, skips: SkipCounter, check_audio: bool = False) -> list[Utterance]:
    """All utterances of one split folder, sorted by id."""
    utterances: dict[str, Utterance] = {}
    chapter_dirs = sorted(p for p in split_dir.glob("*/*") if p.is_dir())
    if not chapter_dirs:
        raise CorpusError(f"{split_dir} holds no <spk>/<chapter>/ folders. Expected layout: {LAYOUT}")
    for chapter_dir in chapter_dirs:
        spk, chapter = chapter_dir.parent.name, chapter_dir.name
        speaker = f"{spk}-{chapter}"
        id_pattern = re.compile(rf"{re.escape(speaker)}-\d+")
        flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
        transcribed: set[str] = set()
        trans = chapter_dir / f"{speaker}.trans.txt"
        lines = trans.read_text(encoding="utf-8").splitlines() if trans.is_file() else []
        if not trans.is_file():
            logger.warning("no transcript file %s", trans)
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            utt_id, _, words = line.strip().partition(" ")
            where = f"{trans}:{lineno}"
            if not id_pattern.fullmatch(utt_id):
                skips.skip("malformed_line", f"{where}: id {utt_id!r} is not {speaker}-<nnnn>")
                continue
            transcribed.add(utt_id)
            if not words.strip():
                skips.skip("empty_transcript", f"{where}: {utt_id} has no words")
                continue
            if utt_id in utterances:
                skips.skip("duplicate_id", f"{where}: {utt_id} seen before")
                continue
            if utt_id not in flacs:
                skips.skip("missing_audio", f"{where}: {chapter_dir / (utt_id + '.flac')} does not exist")
                continue
            audio = flacs[utt_id].resolve()
            if check_audio:
                check_readable(audio)
            utterances[utt_id] = Utterance(utt_id, speaker, " ".join(words.split()), audio)
        for stem in sorted(set(flacs) - transcribed):
            skips.skip("missing_transcript", f"{flacs[stem]} has no line in {trans.name}")
    return [utterances[k] for k in sorted(utterances)]


def check_readable(audio: Path) -> None:
    """Read the header of ``audio``; raise :class:`CorpusError` naming it if that fails."""
    try:
        info = soundfile.info(str(audio))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise CorpusError(f"unreadable audio file {audio}: {e}") from e
    if info.frames <= 0:
        raise CorpusError(f"empty audio file {audio}")


def prepare_librispeech(
    corpus_dir: Path,
    output_dir: Path,
    splits: Sequence[str] = SPLITS,
    check_audio: bool = False,
    force: bool = False,
) -> dict[str, PreparedSet]:
    """Write ``output_dir/<set>`` for each split (and ``dev`` when both dev splits are asked for).

    Returns ``{set name: PreparedSet}``. Sets already complete with the same
    options are kept (``force`` redoes them).
    """
    root = find_librispeech_root(corpus_dir)
    output_dir = Path(output_dir)
    unknown = [s for s in splits if s not in ALL_SPLITS]
    if unknown:
        raise CorpusError(f"unknown LibriSpeech split(s) {unknown}; known: {', '.join(ALL_SPLITS)}")
    for split in splits:
        if not (root / split).is_dir():
            raise CorpusError(f"LibriSpeech split missing: {root / split} does not exist. Expected layout: {LAYOUT}")

    results: dict[str, PreparedSet] = {}
    per_split: dict[str, tuple[list[Utterance], dict[str, int]]] = {}

    def load(split: str) -> tuple[list[Utterance], dict[str, int]]:
        if split not in per_split:
            skips = SkipCounter(logger, set_name(split))
            utts = read_split(root / split, skips, check_audio)
            skips.log_summary()
            if not utts:
                raise CorpusError(f"no usable utterances in {root / split}")
            per_split[split] = (utts, skips.as_dict())
        return per_split[split]

    for split in splits:
        name = set_name(split)
        params = {"corpus": str(root.resolve() / split)}  # --check_audio does not change the output
        if is_done(output_dir / name, params, force):
            results[name] = reused_set(output_dir / name)
            continue
        utts, skipped = load(split)
        results[name] = write_kaldi_dir(output_dir / name, utts, params, skipped)

    if all(s in splits for s in COMBINED_DEV):
        params = {"corpus": [str(root.resolve() / s) for s in COMBINED_DEV]}
        if is_done(output_dir / "dev", params, force):
            results["dev"] = reused_set(output_dir / "dev")
        else:
            utts, skipped = [], {}
            for split in COMBINED_DEV:
                split_utts, split_skipped = load(split)
                utts += split_utts
                for kind, count in split_skipped.items():
                    skipped[kind] = skipped.get(kind, 0) + count
            results["dev"] = write_kaldi_dir(output_dir / "dev", utts, params, skipped)
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--corpus_dir", type=Path, required=True,
                        help="folder holding LibriSpeech/ (also the download target with --download)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=ALL_SPLITS, metavar="SPLIT",
                        help=f"splits to prepare, from: {', '.join(ALL_SPLITS)}")
    parser.add_argument("--check_audio", action="store_true",
                        help="read every flac header and fail on an unreadable file")
    parser.add_argument("--download", action="store_true",
                        help="first download and extract the splits from OpenSLR into --corpus_dir")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.download:
        download_librispeech(args.corpus_dir, args.splits)
    prepare_librispeech(args.corpus_dir, args.output_dir, args.splits, args.check_audio, args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
