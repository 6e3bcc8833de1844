"""mini_an4 -> Kaldi data dirs ``train``, ``dev`` and ``test`` (the smoke-test corpus).

Corpus: 8 real recordings (7 transcribed) from CMU's AN4 (Census) database, 16 kHz NIST sphere,
shipped inside the espnet wheel as
``<site-packages>/egs3/mini_an4/esp2_asr/downloads.tar.gz`` (ESPnet's own CI
recipe corpus). Licence: the AN4 licence (BSD-style, Copyright 1991-2005
Carnegie Mellon University; see ``an4/LICENSE`` in the archive).

Layout after extraction into ``--download_dir`` (the archive's leading
``downloads/`` folder is stripped; ``rirs/`` and ``noise/`` come along)::

    <download_dir>/an4/wav/an4_clstk/<spk>/<fileid>.sph       (train)
    <download_dir>/an4/wav/an4test_clstk/<spk>/<fileid>.sph   (test)
    <download_dir>/an4/etc/an4_{train,test}.transcription     ("<s> WORDS </s> (fileid)")
    <download_dir>/an4/etc/an4_{train,test}.fileids

``fileid`` is ``<utt>-<spk>-<n>`` (e.g. ``an251-fash-b``). As in ESPnet's
``egs2/an4/asr1/local/data_prep.py`` the utterance id is ``<spk>-<utt>-<n>``
(``fash-an251-b``, the speaker is a prefix), the speaker is ``<spk>``, and the
words are the transcription without ``<s>``/``</s>``, upper-cased. Only
transcribed files are used: the archive holds 6 train sphere files but 5 train
transcriptions (``cen7-fash-b`` has none; it is skipped with a warning), and 2
test ones, so ``train`` has 5 utterances and ``test`` 2.

mini_an4 has no development set: ``dev`` is a copy of ``test`` (same
utterances). Use it only as a smoke test, never to report results.
Every sphere file is checked to read with ``soundfile`` at 16 kHz.
An already extracted full AN4 (``an4/`` with the same layout) can be given
with ``--corpus_dir`` instead.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    is_done,
    new_parser,
    reused_set,
    run_cli,
    safe_extract,
    write_kaldi_dir,
)

logger = logging.getLogger("local.mini_an4")

ARCHIVE_IN_WHEEL = Path("mini_an4") / "esp2_asr" / "downloads.tar.gz"
COMPLETED = ".mini_an4.completed"
SAMPLE_RATE = 16000
# set name -> (transcription file part, wav sub-folder)
SOURCES = {"train": ("train", "an4_clstk"), "test": ("test", "an4test_clstk")}
LAYOUT = (
    "<corpus_dir>/wav/{an4_clstk,an4test_clstk}/<spk>/<fileid>.sph and "
    "<corpus_dir>/etc/an4_{train,test}.transcription"
)
TRANSCRIPT_LINE = re.compile(r"^(?P<words>.*?)\s*\((?P<fileid>[^()\s]+)\)\s*$")


def find_archive() -> Path:
    """The mini_an4 archive inside the installed espnet wheel."""
    candidates = []
    spec = importlib.util.find_spec("egs3")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / ARCHIVE_IN_WHEEL for p in spec.submodule_search_locations]
    espnet_spec = importlib.util.find_spec("espnet")
    if espnet_spec is not None and espnet_spec.origin:
        candidates.append(Path(espnet_spec.origin).parent.parent / "egs3" / ARCHIVE_IN_WHEEL)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CorpusError(
        "mini_an4 archive not found: looked for egs3/mini_an4/esp2_asr/downloads.tar.gz in the "
        f"installed espnet wheel ({', '.join(map(str, candidates)) or 'egs3 not importable'}). "
        "Install espnet==202611 (pip install 'espnet[asr]==202611') or pass --archive."
    )


def download_mini_an4(target_dir: Path, archive: Path | None = None) -> Path:
    """Extract the wheel's mini_an4 archive into ``target_dir``; returns ``target_dir/an4``.

    A ``target_dir/.mini_an4.completed`` marker skips a finished extraction.
    """
    target_dir = Path(target_dir)
    corpus_dir = target_dir / "an4"
    completed = target_dir / COMPLETED
    if completed.is_file() and corpus_dir.is_dir():
        logger.info("mini_an4 already extracted (%s)", completed)
        return corpus_dir
    archive = Path(archive) if archive is not None else find_archive()
    logger.info("extracting %s into %s", archive, target_dir)
    safe_extract(archive, target_dir, strip_prefix="downloads")
    if not corpus_dir.is_dir():
        raise CorpusError(f"{archive} did not contain downloads/an4/")
    completed.touch()
    return corpus_dir


def parse_transcription_line(line: str) -> tuple[str, str]:
    """``<s> WORDS </s> (fileid)`` -> ``(fileid, "WORDS")``."""
    m = TRANSCRIPT_LINE.match(line.strip())
    if m is None:
        raise CorpusError(f"malformed AN4 transcription line: {line.strip()!r}")
    words = [w.upper() for w in m.group("words").split() if w not in ("<s>", "</s>")]
    return m.group("fileid"), " ".join(words)


def utterance_id(fileid: str) -> tuple[str, str]:
    """``an251-fash-b`` -> (``fash-an251-b``, ``fash``)."""
    parts = fileid.split("-")
    if len(parts) != 3:
        raise CorpusError(f"AN4 file id {fileid!r} is not <utt>-<spk>-<n>")
    utt, spk, n = parts
    return f"{spk}-{utt}-{n}", spk


def check_sphere(path: Path) -> None:
    try:
        info = soundfile.info(str(path))
    except Exception as e:
        raise CorpusError(f"unreadable sphere file {path}: {e}") from e
    if info.samplerate != SAMPLE_RATE:
        raise CorpusError(f"{path}: sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}")


def read_set(corpus_dir: Path, name: str) -> tuple[list[Utterance], dict[str, int]]:
    part, wav_folder = SOURCES[name]
    transcription = corpus_dir / "etc" / f"an4_{part}.transcription"
    wav_dir = corpus_dir / "wav" / wav_folder
    for p in (transcription, wav_dir):
        if not p.exists():
            raise CorpusError(f"AN4 file missing: {p}. Expected layout: {LAYOUT}")
    skips = SkipCounter(logger, name)
    utterances = []
    transcribed = set()
    for line in transcription.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        fileid, words = parse_transcription_line(line)
        utt_id, spk = utterance_id(fileid)
        transcribed.add(fileid)
        sph = wav_dir / spk / f"{fileid}.sph"
        if not sph.is_file():
            skips.skip("missing_audio", f"{sph} does not exist")
            continue
        if not words:
            skips.skip("empty_transcript", f"{fileid} has no words")
            continue
        check_sphere(sph)
        utterances.append(Utterance(utt_id, spk, words, sph.resolve()))
    for sph in sorted(wav_dir.glob("*/*.sph")):
        if sph.stem not in transcribed:
            skips.skip("missing_transcript", f"{sph} has no line in {transcription.name}")
    skips.log_summary()
    if not utterances:
        raise CorpusError(f"no usable utterances for {name} in {corpus_dir}")
    return sorted(utterances, key=lambda u: u.utt_id), skips.as_dict()


def prepare_mini_an4(corpus_dir: Path, output_dir: Path, force: bool = False) -> dict[str, PreparedSet]:
    """Write ``output_dir/{train,dev,test}`` from an extracted ``an4/`` folder (``dev`` = ``test``)."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / "etc").is_dir() or not (corpus_dir / "wav").is_dir():
        raise CorpusError(f"AN4 not found at {corpus_dir}: expected etc/ and wav/. Expected layout: {LAYOUT}")
    output_dir = Path(output_dir)
    results: dict[str, PreparedSet] = {}
    for name, source in (("train", "train"), ("test", "test"), ("dev", "test")):
        params = {"corpus": str(corpus_dir.resolve()), "source": source}
        if is_done(output_dir / name, params, force):
            results[name] = reused_set(output_dir / name)
            continue
        utterances, skipped = read_set(corpus_dir, source)
        results[name] = write_kaldi_dir(output_dir / name, utterances, params, skipped)
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--download_dir", type=Path, default=Path("downloads"),
                        help="where the archive is extracted (an4/ appears inside)")
    parser.add_argument("--archive", type=Path, default=None,
                        help="mini_an4 downloads.tar.gz; none: the one in the installed espnet wheel")
    parser.add_argument("--corpus_dir", type=Path, default=None,
                        help="an already extracted an4/ folder; skips the extraction")
    return parser


def run(args: argparse.Namespace) -> None:
    corpus_dir = args.corpus_dir or download_mini_an4(args.download_dir, args.archive)
    prepare_mini_an4(corpus_dir, args.output_dir, args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
