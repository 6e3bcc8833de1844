"""TED-LIUM release 3 (legacy distribution) -> Kaldi data dirs with segments, stm and glm.

Corpus: TED-LIUM 3 (Hernandez et al., SPECOM 2018), English TED talks, 16 kHz
NIST sphere audio with aligned STM transcripts, https://www.openslr.org/51.
Licence: CC BY-NC-ND 3.0; all talks and text are property of TED Conferences LLC.

Expected layout (``corpus_dir`` is the folder *holding* ``TEDLIUM_release-3/``;
that folder itself is accepted too)::

    <corpus_dir>/TEDLIUM_release-3/legacy/{train,dev,test}/sph/<talk>.sph
    <corpus_dir>/TEDLIUM_release-3/legacy/{train,dev,test}/stm/<talk>.stm

STM lines: ``<talk> <channel> <speaker> <start> <end> <label> <transcript...>``,
e.g. ``AlGore_2009 1 AlGore_2009 12.34 17.82 <o,f0,male> that 's what {NOISE} <unk>``.
Gaps carry the transcript ``ignore_time_segment_in_scoring``.

What is done, following ESPnet's ``egs2/tedlium3/asr1/local/prepare_data.sh``
(itself Kaldi's ``egs/tedlium/s5_r3``):

- STM comment lines (``;;``) are ignored; lines with fewer than 6 fields,
  non-numeric times, a negative start or ``end <= start`` are skipped with a
  warning and counted (``bad_line``); so are segments starting past the end of
  the audio (``beyond_audio``), transcripts that are empty after the
  normalisation below (``empty_transcript``) and repeated ids (``duplicate_id``).
- Transcript normalisation (as ESPnet): pronunciation variants ``(2)`` and
  ``<sil>`` are removed, a trailing ``(utterance-name)`` is removed, and a token
  starting with an apostrophe is joined to the one before (``that 's`` ->
  ``that's``, Kaldi's ``join_suffix.py``; unlike it, a leading apostrophe
  token is never glued onto the STM label).
- Non-lexical marks: ``{NOISE}``, ``{BREATH}``, ``{SMACK}``, ``{COUGH}``,
  ``{UH}``, ``{UM}`` ... become ``[NOISE]``, ``[BREATH]`` ... (ESPnet:
  ``tr '{}' '[]'``) and other ``<x>`` tokens ``[x]``. ``<unk>`` is kept as
  ``<unk>`` by default (``--unk_symbol``); ESPnet writes ``[unk]`` and passes
  ``--bpe_nlsyms "[unk]"`` to its token step, because sentencepiece spells a
  literal ``<unk>`` in the text out as characters instead of mapping it to its
  ``<unk>`` id. Whichever symbol is used, the token step should declare the
  bracketed marks as non-linguistic symbols.
- ``ignore_time_segment_in_scoring`` lines give no utterance (kept in ``stm``).
- Utterance id ``<talk>-<start*100 as %07d>-<end*100 as %07d>`` (ESPnet's
  format; the hundredths are rounded, where ESPnet's awk truncates, so
  ``17.82`` gives ``0001782`` and not ``0001781``); speaker = recording id =
  talk id. ESPnet afterwards splits speakers into 180 s pseudo-speakers; that
  only matters for per-speaker normalisation and is not done here.
- ``train`` segments are widened by 0.15 s before / 0.10 s after
  (``--train_padding``, ESPnet's ``extend_segment_times.py``), never by more
  than half the gap to the neighbouring segment of the same talk and never
  outside the audio; the utterance id keeps the original times. A segment
  ending after the audio is cut at its end.

Files per set: ``wav.scp`` (talk id -> absolute sph path), ``segments``
(seconds, 2 decimals), ``text``, ``utt2spk``, ``spk2utt``,
``reco2file_and_channel``, ``stm`` (for sclite: ESPnet's ``;; LABEL`` header,
then every well-formed STM line incl. the ignore lines, channel set to ``A``,
dev labels ``<F0_M>``/``<F0_F>`` mapped to ``<o,f0,male>``/``<o,f0,female>``,
transcripts normalised exactly as ``text`` so reference and training text
agree, sorted by talk, channel and start time) and ``glm`` (ESPnet's minimal
one: no real mappings; TED-LIUM ships none).
A talk with an STM file but no sphere file is an error naming the file.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from dataclasses import dataclass
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

logger = logging.getLogger("local.tedlium3")

SETS = ("train", "dev", "test")
IGNORE = "ignore_time_segment_in_scoring"
OPENSLR_URL = "https://www.openslr.org/resources/51/TEDLIUM_release-3.tgz"
LAYOUT = (
    "<corpus_dir>/TEDLIUM_release-3/legacy/{train,dev,test}/sph/<talk>.sph and "
    "<corpus_dir>/TEDLIUM_release-3/legacy/{train,dev,test}/stm/<talk>.stm "
    "(download from https://www.openslr.org/51)"
)
STM_HEADER = (
    ";;\n"
    ';; LABEL "o" "Overall" "Overall results"\n'
    ';; LABEL "f0" "f0" "Wideband channel"\n'
    ';; LABEL "f2" "f2" "Telephone channel"\n'
    ';; LABEL "male" "Male" "Male Talkers"\n'
    ';; LABEL "female" "Female" "Female Talkers"\n'
    ";;\n"
)
GLM = ";; empty.glm\n  [FAKE]     =>  %HESITATION     / [ ] __ [ ] ;; hesitation token\n"
LABEL_MAP = {"<F0_M>": "<o,f0,male>", "<F0_F>": "<o,f0,female>"}
PRONUNCIATION_VARIANT = re.compile(r"\([0-9]\)")


def download_tedlium3(target_dir: Path, url: str = OPENSLR_URL) -> Path:
    """Download (resumable) and extract TED-LIUM 3 (about 50 GB) into ``target_dir``.

    A ``TEDLIUM_release-3/.completed`` marker skips a finished extraction.
    Returns ``target_dir`` (the ``corpus_dir`` for :func:`prepare_tedlium3`).
    """
    target_dir = Path(target_dir)
    completed = target_dir / "TEDLIUM_release-3" / ".completed"
    if completed.is_file():
        logger.info("TED-LIUM 3 already extracted (%s)", completed)
        return target_dir
    archive = download_file(url, target_dir / "TEDLIUM_release-3.tgz")
    safe_extract(archive, target_dir)
    completed.touch()
    return target_dir


@dataclass(frozen=True)
class StmLine:
    talk: str
    speaker: str
    start: float
    end: float
    start_text: str  # the times as written in the corpus, for the output stm
    end_text: str
    label: str
    words: tuple[str, ...]  # normalised transcript

    @property
    def ignored(self) -> bool:
        return self.words == (IGNORE,)


def normalise_words(tokens: Sequence[str], unk_symbol: str = "<unk>") -> list[str]:
    """Apply the transcript normalisation described in the module docstring."""
    words = [PRONUNCIATION_VARIANT.sub("", t) for t in tokens]
    if words and words[-1].startswith("(") and words[-1].endswith(")"):
        words = words[:-1]  # utterance name at the end of a line
    words = [w for w in words if w and w != "<sil>"]
    joined: list[str] = []
    for w in words:
        if w.startswith("'") and joined:
            joined[-1] += w
        else:
            joined.append(w)
    out = []
    for w in joined:
        if w == "<unk>":
            w = unk_symbol
        else:
            w = w.translate(str.maketrans("{}<>", "[][]"))
        out.append(w)
    return out


def parse_stm_line(line: str, where: str, skips: SkipCounter, unk_symbol: str) -> StmLine | None:
    """One STM line -> :class:`StmLine`; ``None`` (counted) when malformed."""
    fields = line.split()
    if len(fields) < 6:
        skips.skip("bad_line", f"{where}: fewer than 6 fields: {line.strip()!r}")
        return None
    talk, _channel, speaker, start_text, end_text, label = fields[:6]
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        skips.skip("bad_line", f"{where}: non-numeric times {start_text!r} {end_text!r}")
        return None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        skips.skip("bad_line", f"{where}: bad times start={start_text} end={end_text}")
        return None
    if fields[6:] == [IGNORE]:
        words: tuple[str, ...] = (IGNORE,)
    else:
        words = tuple(normalise_words(fields[6:], unk_symbol))
    return StmLine(talk, speaker, start, end, start_text, end_text, LABEL_MAP.get(label, label), words)


def utterance_id(talk: str, start: float, end: float) -> str:
    return f"{talk}-{round(start * 100):07d}-{round(end * 100):07d}"


def find_tedlium_root(corpus_dir: Path) -> Path:
    corpus_dir = Path(corpus_dir)
    for root in (corpus_dir / "TEDLIUM_release-3", corpus_dir):
        if root.name == "TEDLIUM_release-3" and (root / "legacy").is_dir():
            return root
    raise CorpusError(
        f"TED-LIUM 3 not found: {corpus_dir / 'TEDLIUM_release-3' / 'legacy'} does not exist. "
        f"Expected layout: {LAYOUT}"
    )


def padded_times(
    lines: Sequence[StmLine], duration: float, padding: tuple[float, float]
) -> list[tuple[float, float]]:
    """Segment times of the (sorted, same-talk) speech ``lines`` widened by ``padding``.

    Each side grows by at most half the gap to the neighbour, and stays inside ``[0, duration]``.
    """
    before, after = padding
    times = []
    for i, ln in enumerate(lines):
        room_before = (ln.start - lines[i - 1].end) / 2 if i > 0 else math.inf
        room_after = (lines[i + 1].start - ln.end) / 2 if i + 1 < len(lines) else math.inf
        start = ln.start - min(before, max(0.0, room_before))
        end = ln.end + min(after, max(0.0, room_after))
        times.append((max(0.0, start), min(duration, end)))
    return times


def read_set(
    set_dir: Path, skips: SkipCounter, unk_symbol: str, padding: tuple[float, float]
) -> tuple[list[Utterance], list[StmLine]]:
    """Utterances and well-formed STM lines of one ``legacy/<set>`` folder."""
    stm_dir, sph_dir = set_dir / "stm", set_dir / "sph"
    for d in (stm_dir, sph_dir):
        if not d.is_dir():
            raise CorpusError(f"TED-LIUM 3 folder missing: {d}. Expected layout: {LAYOUT}")
    stm_files = sorted(stm_dir.glob("*.stm"))
    sph_files = sorted(sph_dir.glob("*.sph"))
    if not stm_files:
        raise CorpusError(f"no STM files in {stm_dir}. Expected layout: {LAYOUT}")
    if len(stm_files) != len(sph_files):
        logger.warning(
            "found %d sphere files and %d STM files in %s; you might be missing part of TED-LIUM",
            len(sph_files), len(stm_files), set_dir,
        )
    all_lines: list[StmLine] = []
    for stm in stm_files:
        for lineno, raw in enumerate(stm.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip() or raw.startswith(";;"):
                continue
            parsed = parse_stm_line(raw, f"{stm}:{lineno}", skips, unk_symbol)
            if parsed is not None:
                all_lines.append(parsed)
    all_lines.sort(key=lambda ln: (ln.talk, ln.start, ln.end))

    utterances: list[Utterance] = []
    seen: set[str] = set()
    for talk in sorted({ln.talk for ln in all_lines}):
        sph = sph_dir / f"{talk}.sph"
        if not sph.is_file():
            raise CorpusError(f"talk {talk}: sphere file {sph} does not exist (it has STM lines)")
        try:
            duration = soundfile.info(str(sph)).duration
        except Exception as e:
            raise CorpusError(f"unreadable sphere file {sph}: {e}") from e
        speech = []
        for ln in all_lines:
            if ln.talk != talk or ln.ignored:
                continue
            utt_id = utterance_id(talk, ln.start, ln.end)
            if not ln.words:
                skips.skip("empty_transcript", f"{utt_id}: no words left after normalisation")
            elif ln.start >= duration:
                skips.skip("beyond_audio", f"{utt_id}: starts after the end of {sph} ({duration:.2f} s)")
            elif utt_id in seen:
                skips.skip("duplicate_id", f"{utt_id} appears twice")
            else:
                seen.add(utt_id)
                speech.append((utt_id, ln))
        times = padded_times([ln for _, ln in speech], duration, padding)
        for (utt_id, ln), (start, end) in zip(speech, times):
            utterances.append(Utterance(utt_id, talk, " ".join(ln.words), sph.resolve(), talk, start, end))
    utterances.sort(key=lambda u: u.utt_id)
    return utterances, all_lines


def format_stm(lines: Sequence[StmLine]) -> str:
    body = "".join(
        f"{ln.talk} A {ln.speaker} {ln.start_text} {ln.end_text} {ln.label} {' '.join(ln.words)}".rstrip() + "\n"
        for ln in sorted(lines, key=lambda ln: (ln.talk, ln.start, ln.end))
    )
    return STM_HEADER + body


def prepare_tedlium3(
    corpus_dir: Path,
    output_dir: Path,
    sets: Sequence[str] = SETS,
    unk_symbol: str = "<unk>",
    train_padding: tuple[float, float] = (0.15, 0.1),
    force: bool = False,
) -> dict[str, PreparedSet]:
    """Write ``output_dir/<set>`` for each of ``sets`` (train, dev, test)."""
    root = find_tedlium_root(corpus_dir)
    output_dir = Path(output_dir)
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise CorpusError(f"unknown TED-LIUM 3 set(s) {unknown}; known: {', '.join(SETS)}")
    for name in sets:
        if not (root / "legacy" / name).is_dir():
            raise CorpusError(f"TED-LIUM 3 set missing: {root / 'legacy' / name}. Expected layout: {LAYOUT}")
    results: dict[str, PreparedSet] = {}
    for name in sets:
        padding = tuple(train_padding) if name == "train" else (0.0, 0.0)
        params = {"corpus": str((root / "legacy" / name).resolve()), "unk_symbol": unk_symbol,
                  "padding": list(padding)}
        if is_done(output_dir / name, params, force):
            results[name] = reused_set(output_dir / name)
            continue
        skips = SkipCounter(logger, name)
        utterances, stm_lines = read_set(root / "legacy" / name, skips, unk_symbol, padding)  # type: ignore[arg-type]
        skips.log_summary()
        if not utterances:
            raise CorpusError(f"no usable utterances in {root / 'legacy' / name}")
        talks = sorted({u.recording_id for u in utterances if u.recording_id})
        extra = {
            "stm": format_stm(stm_lines),
            "glm": GLM,
            "reco2file_and_channel": "".join(f"{t} {t} A\n" for t in talks),
        }
        results[name] = write_kaldi_dir(output_dir / name, utterances, params, skips.as_dict(), extra)
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--corpus_dir", type=Path, required=True,
                        help="folder holding TEDLIUM_release-3/ (also the download target with --download)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets to prepare")
    parser.add_argument("--unk_symbol", default="<unk>",
                        help="what <unk> in the transcripts becomes (ESPnet's recipe uses [unk])")
    parser.add_argument("--train_padding", nargs=2, type=float, default=[0.15, 0.1],
                        metavar=("BEFORE", "AFTER"), help="seconds added around train segments")
    parser.add_argument("--download", action="store_true",
                        help="first download and extract TED-LIUM 3 from OpenSLR into --corpus_dir")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.download:
        download_tedlium3(args.corpus_dir)
    prepare_tedlium3(args.corpus_dir, args.output_dir, args.sets, args.unk_symbol,
                     tuple(args.train_padding), args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
