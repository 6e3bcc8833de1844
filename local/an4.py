"""CMU AN4 -> Kaldi data dirs ``train``, ``train_nodev``, ``train_dev`` and ``test`` (ESPnet's splits).

Corpus: the CMU AN4 (Census) database, read speech recorded at Carnegie Mellon
University around 1991 (spelled letters, digits, names, dates, short commands),
16 kHz 16-bit NIST sphere, as CMU ships it in ``an4_sphere.tar.gz``
(http://www.speech.cs.cmu.edu/databases/an4/). Licence: CMU's BSD-style
licence (``an4/LICENSE``: free for any use, keep the notice).

Expected layout (``an4_root`` is the folder *holding* ``an4/``; the ``an4``
folder itself is accepted too)::

    <an4_root>/an4/wav/an4_clstk/<spk>/<fileid>.sph       (train: 948 utterances, 74 speakers)
    <an4_root>/an4/wav/an4test_clstk/<spk>/<fileid>.sph   (test: 130 utterances, 10 speakers)
    <an4_root>/an4/etc/an4_{train,test}.transcription     ("[<s>] WORDS [</s>] (fileid)")
    <an4_root>/an4/etc/an4_{train,test}.fileids

Each audio file may be ``<fileid>.sph`` (CMU's archive) or ``<fileid>.flac``
(the same samples stored losslessly); ``.sph`` wins when both exist.

Sets, exactly as ESPnet's ``egs2/an4/asr1/local/data.sh`` makes them (its
published results were measured on them): the file id ``an251-fash-b``
becomes the utterance id ``fash-an251-b`` (the speaker ``fash`` first), sorted
in C locale order; ``train`` = all 948 training utterances, ``train_dev`` =
the first ``--ndev_utt`` (100) of them, ``train_nodev`` = the other 848,
``test`` = the 130 test utterances. The transcript is the words between
``<s>`` and ``</s>`` as written (no case change). ``wav.scp`` holds absolute
paths of the audio files (no pipes).

A missing or partial corpus (a transcription file, a wav folder, or the audio
of a transcribed utterance) is one error naming the missing path and where
AN4 comes from; ``--download`` first fetches and unpacks CMU's archive into
``--an4_root``. Every audio header is read (16 kHz expected). The corpus is
only read; outputs are written atomically with ``.done`` markers.
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
    Utterance,
    download_file,
    is_done,
    new_parser,
    reused_set,
    run_cli,
    safe_extract,
    write_kaldi_dir,
)

logger = logging.getLogger("local.an4")

AN4_URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
ARCHIVE_NAME = "an4_sphere.tar.gz"
COMPLETED = ".an4.completed"
SAMPLE_RATE = 16000
NDEV_UTT = 100
AUDIO_SUFFIXES = (".sph", ".flac")
# corpus part -> wav sub-folder
WAV_FOLDERS = {"train": "an4_clstk", "test": "an4test_clstk"}
LAYOUT = (
    "<an4_root>/an4/wav/{an4_clstk,an4test_clstk}/<spk>/<fileid>.sph (or .flac) and "
    "<an4_root>/an4/etc/an4_{train,test}.transcription"
)
WHERE_TO_GET = (
    f"AN4 is CMU's {ARCHIVE_NAME} ({AN4_URL}), which unpacks to an4/: pass the folder holding an4/ "
    "($AN4 or --an4_root), or run with --download true to fetch and unpack it there. "
    f"Expected layout: {LAYOUT}"
)
TRANSCRIPT_LINE = re.compile(r"^(?P<words>.*?)\s*\((?P<fileid>[^()\s]+)\)$")
FILEID = re.compile(r"^(?P<utt>[^-\s/]+)-(?P<spk>[^-\s/]+)-(?P<n>[^-\s/]+)$")


def missing(path: Path, what: str) -> CorpusError:
    return CorpusError(f"AN4 {what} missing: {path} does not exist. {WHERE_TO_GET}")


def find_an4_root(an4_root: Path) -> Path:
    """The ``an4`` folder inside ``an4_root`` (or ``an4_root`` itself if it is one)."""
    an4_root = Path(an4_root)
    if (an4_root / "an4").is_dir():
        return an4_root / "an4"
    if an4_root.name == "an4" and (an4_root / "etc").is_dir():
        return an4_root
    raise missing(an4_root / "an4", "corpus")


def check_layout(corpus: Path) -> None:
    """Raise :class:`CorpusError` naming the first missing transcription file or wav folder."""
    for part, folder in WAV_FOLDERS.items():
        transcription = corpus / "etc" / f"an4_{part}.transcription"
        if not transcription.is_file():
            raise missing(transcription, "transcription")
        if not (corpus / "wav" / folder).is_dir():
            raise missing(corpus / "wav" / folder, "wav folder")


def download_an4(target_dir: Path, url: str = AN4_URL) -> Path:
    """Fetch and unpack CMU's archive into ``target_dir`` (``an4/`` appears there); returns ``target_dir``.

    Skipped when a ``target_dir/.an4.completed`` marker records a finished
    extraction, or when ``target_dir/an4`` is laid out as AN4 and no download
    was started there (a corpus put there by hand). The download resumes where
    it stopped; an interrupted extraction is redone from the archive.
    """
    target_dir = Path(target_dir)
    corpus = target_dir / "an4"
    archive = target_dir / ARCHIVE_NAME
    if (target_dir / COMPLETED).is_file() and corpus.is_dir():
        logger.info("AN4 already downloaded and unpacked (%s)", target_dir / COMPLETED)
        return target_dir
    if not archive.is_file() and not archive.with_name(archive.name + ".part").is_file():
        try:
            check_layout(corpus)
            logger.info("AN4 already present in %s; not downloading", corpus)
            return target_dir
        except CorpusError:
            pass
    try:
        download_file(url, archive)
    except OSError as e:  # urllib's URLError/HTTPError, an incomplete download
        raise CorpusError(f"could not download AN4 from {url}: {e}. {WHERE_TO_GET}") from e
    logger.info("unpacking %s into %s", archive, target_dir)
    safe_extract(archive, target_dir)
    if not corpus.is_dir():
        raise CorpusError(f"{archive} (from {url}) did not contain an4/")
    check_layout(corpus)
    (target_dir / COMPLETED).touch()
    return target_dir


def parse_transcription_line(line: str, where: str) -> tuple[str, str]:
    """``<s> WORDS </s> (fileid)`` -> ``(fileid, "WORDS")`` (``<s>``/``</s>`` are optional)."""
    m = TRANSCRIPT_LINE.match(line.strip())
    if m is None:
        raise CorpusError(f"{where}: malformed AN4 transcription line {line.strip()!r}")
    words = m["words"].split()
    if words[:1] == ["<s>"]:
        words = words[1:]
    if words[-1:] == ["</s>"]:
        words = words[:-1]
    if not words:
        raise CorpusError(f"{where}: no words for {m['fileid']}")
    return m["fileid"], " ".join(words)


def utterance_id(fileid: str, where: str) -> tuple[str, str]:
    """``an251-fash-b`` -> (``fash-an251-b``, ``fash``)."""
    m = FILEID.match(fileid)
    if m is None:
        raise CorpusError(f"{where}: AN4 file id {fileid!r} is not <utt>-<spk>-<n>")
    return f"{m['spk']}-{m['utt']}-{m['n']}", m["spk"]


def audio_file(speaker_dir: Path, fileid: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        path = speaker_dir / f"{fileid}{suffix}"
        if path.is_file():
            return path
    return None


def check_audio(path: Path) -> None:
    try:
        info = soundfile.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise CorpusError(f"unreadable AN4 audio file {path}: {e}") from e
    if info.samplerate != SAMPLE_RATE or info.frames <= 0:
        raise CorpusError(f"{path}: {info.frames} samples at {info.samplerate} Hz, expected 16 kHz audio")


def read_part(corpus: Path, part: str) -> list[Utterance]:
    """All utterances of ``part`` (``train`` or ``test``), sorted by utterance id."""
    transcription = corpus / "etc" / f"an4_{part}.transcription"
    wav_dir = corpus / "wav" / WAV_FOLDERS[part]
    utterances: dict[str, Utterance] = {}
    absent: list[Path] = []
    for lineno, line in enumerate(transcription.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{transcription}:{lineno}"
        fileid, words = parse_transcription_line(line, where)
        utt_id, speaker = utterance_id(fileid, where)
        if utt_id in utterances:
            raise CorpusError(f"{where}: {fileid} is listed twice")
        audio = audio_file(wav_dir / speaker, fileid)
        if audio is None:
            absent.append(wav_dir / speaker / f"{fileid}.sph")
            continue
        check_audio(audio)
        utterances[utt_id] = Utterance(utt_id, speaker, words, audio.resolve())
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise CorpusError(
            f"AN4 is incomplete: audio of {absent[0].stem} missing: {absent[0]} (or .flac) "
            f"does not exist{more}; {transcription} lists it. {WHERE_TO_GET}"
        )
    if not utterances:
        raise CorpusError(f"{transcription} lists no utterances. {WHERE_TO_GET}")
    return [utterances[k] for k in sorted(utterances)]


def split_sets(train: list[Utterance], test: list[Utterance], ndev_utt: int) -> dict[str, list[Utterance]]:
    """ESPnet's sets from the sorted parts: the first ``ndev_utt`` training utterances are ``train_dev``."""
    if not 0 < ndev_utt < len(train):
        raise CorpusError(f"--ndev_utt must be between 1 and {len(train) - 1} (the training utterances "
                          f"less one), got {ndev_utt}")
    return {"train": train, "train_dev": train[:ndev_utt], "train_nodev": train[ndev_utt:], "test": test}


def prepare_an4(
    an4_root: Path, output_dir: Path, ndev_utt: int = NDEV_UTT, force: bool = False
) -> dict[str, PreparedSet]:
    """Write ``output_dir/{train,train_dev,train_nodev,test}``; returns ``{set name: PreparedSet}``.

    Sets already complete with the same options are kept (``force`` redoes them).
    """
    corpus = find_an4_root(an4_root)
    check_layout(corpus)
    output_dir = Path(output_dir)
    params = {
        "train": {"corpus": str(corpus.resolve()), "part": "train"},
        "train_dev": {"corpus": str(corpus.resolve()), "part": "train", "first": ndev_utt},
        "train_nodev": {"corpus": str(corpus.resolve()), "part": "train", "after_first": ndev_utt},
        "test": {"corpus": str(corpus.resolve()), "part": "test"},
    }
    results: dict[str, PreparedSet] = {}
    todo = [name for name in params if not is_done(output_dir / name, params[name], force)]
    for name in params:
        if name not in todo:
            results[name] = reused_set(output_dir / name)
    if todo:
        sets = split_sets(read_part(corpus, "train"), read_part(corpus, "test"), ndev_utt)
        for name in todo:
            results[name] = write_kaldi_dir(output_dir / name, sets[name], params[name])
    return dict(sorted(results.items()))


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--an4_root", type=Path, required=True,
                        help="folder holding an4/ (also the download target with --download)")
    parser.add_argument("--ndev_utt", type=int, default=NDEV_UTT,
                        help="the first N training utterances (C-locale order) form train_dev")
    parser.add_argument("--download", action="store_true",
                        help=f"first fetch and unpack {ARCHIVE_NAME} into --an4_root "
                             "(skipped when AN4 is there)")
    parser.add_argument("--url", default=AN4_URL, help="where --download fetches the archive from")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.download:
        download_an4(args.an4_root, args.url)
    prepare_an4(args.an4_root, args.output_dir, args.ndev_utt, args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
