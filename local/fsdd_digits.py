"""Connected-digit utterances made from the Free Spoken Digit Dataset -> 16 kHz flac + Kaldi dirs.

Corpus: Free Spoken Digit Dataset (FSDD), https://github.com/Jakobovski/free-spoken-digit-dataset,
folder ``recordings/``: isolated English digits, 8 kHz mono 16-bit wav, silence
trimmed, 6 speakers (george, jackson, lucas, nicolas, theo, yweweler) x 10
digits x 50 takes. Licence: CC BY-SA 4.0 (so are the utterances made here).

Expected layout: ``<fsdd_dir>/<digit>_<speaker>_<index>.wav`` (digit 0-9, index 0-49).
The recordings are only read; generated audio goes to ``--output_audio_dir``
(outside the repository), never next to them.

Each generated utterance is 3-7 recordings (``--min_digits``/``--max_digits``)
of ONE speaker, resampled to 16 kHz with soxr (high quality), joined by gaps of
50-250 ms, with 100-300 ms before the first and after the last digit; silences
hold faint Gaussian noise (about -70 dBFS) rather than digital zeros. The
transcript is the digit words in upper case (``THREE ONE FOUR``).

Sets (takes ``index`` of each digit decide where a recording may be used):

- ``train``: the 5 training speakers (all but ``--unseen_speaker``), takes 0-39;
- ``dev``: the same speakers, takes 40-44; ``test``: the same speakers, takes 45-49;
- ``test_unseen_spk``: only ``--unseen_speaker`` (default ``yweweler``, never in
  the other sets), all its takes 0-49.

Utterance ``i`` of a set uses speaker ``i mod n`` of the set's sorted speakers;
its id is ``<speaker>-<set>-<i as 5 digits>``, the speaker is the FSDD speaker.
Everything is a function of ``--seed``: utterance ``i`` of a set is drawn from
its own generator seeded with ``(seed, set, i)``, so the same seed gives
byte-identical flac files and text, and asking for more utterances keeps the
first ones unchanged. Outputs: ``<output_audio_dir>/<set>/<utt>.flac`` and
``<output_dir>/<set>/{wav.scp,text,utt2spk,spk2utt}`` (absolute flac paths),
both written atomically and marked ``.done`` with the options used.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

from espnet_early_exit.fileio import atomic_directory
from local.common import (
    CorpusError,
    PreparedSet,
    Utterance,
    is_done,
    new_parser,
    reused_set,
    run_cli,
    write_done_marker,
    write_kaldi_dir,
)

logger = logging.getLogger("local.fsdd_digits")

SAMPLE_RATE = 16000
DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
FILE_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z]+)_(?P<index>[0-9]+)\.wav$")
# set name -> (which takes it may use, uses the unseen speaker?)
SET_TAKES = {
    "train": (range(0, 40), False),
    "dev": (range(40, 45), False),
    "test": (range(45, 50), False),
    "test_unseen_spk": (range(0, 50), True),
}
SET_CODES = {"train": 0, "dev": 1, "test": 2, "test_unseen_spk": 3}
GAP_S = (0.05, 0.25)
EDGE_S = (0.10, 0.30)
NOISE_STD = 10 ** (-70 / 20)
GENERATOR_VERSION = 1  # bump when the audio made from a seed changes
WHERE_TO_GET = (
    "Get it with `git clone https://github.com/Jakobovski/free-spoken-digit-dataset` and pass its "
    "recordings/ folder as --fsdd_dir. Expected layout: <fsdd_dir>/<digit>_<speaker>_<index>.wav "
    "(8 kHz mono wav, digit 0-9, index 0-49)."
)


@dataclass(frozen=True)
class Recording:
    digit: int
    speaker: str
    index: int
    path: Path


def scan_recordings(fsdd_dir: Path) -> list[Recording]:
    """All FSDD recordings under ``fsdd_dir``, sorted by (speaker, digit, index)."""
    fsdd_dir = Path(fsdd_dir)
    if not fsdd_dir.is_dir():
        raise CorpusError(f"FSDD recordings not found: {fsdd_dir} does not exist. {WHERE_TO_GET}")
    recordings = []
    for path in fsdd_dir.iterdir():
        m = FILE_NAME.match(path.name)
        if m:
            recordings.append(Recording(int(m["digit"]), m["speaker"], int(m["index"]), path.resolve()))
    if not recordings:
        raise CorpusError(f"no <digit>_<speaker>_<index>.wav files in {fsdd_dir}. {WHERE_TO_GET}")
    return sorted(recordings, key=lambda r: (r.speaker, r.digit, r.index))


def set_pools(
    recordings: Sequence[Recording], set_name: str, unseen_speaker: str
) -> dict[str, list[Recording]]:
    """``{speaker: recordings usable in set_name}`` (speakers sorted)."""
    takes, unseen = SET_TAKES[set_name]
    pools: dict[str, list[Recording]] = {}
    for rec in recordings:
        if (rec.speaker == unseen_speaker) == unseen and rec.index in takes:
            pools.setdefault(rec.speaker, []).append(rec)
    return dict(sorted(pools.items()))


class AudioCache:
    """Reads FSDD recordings once, as float32 at 16 kHz."""

    def __init__(self) -> None:
        self._audio: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self._audio:
            try:
                audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            except Exception as e:
                raise CorpusError(f"unreadable FSDD recording {path}: {e}") from e
            audio = audio[:, 0]
            if rate != SAMPLE_RATE:
                audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
            self._audio[path] = audio
        return self._audio[path]


def silence(rng: np.random.Generator, seconds_range: tuple[float, float]) -> np.ndarray:
    n = int(round(rng.uniform(*seconds_range) * SAMPLE_RATE))
    return (rng.standard_normal(n) * NOISE_STD).astype(np.float32)


def make_utterance(
    rng: np.random.Generator, pool: Sequence[Recording], load: AudioCache, min_digits: int, max_digits: int
) -> tuple[np.ndarray, list[int]]:
    """Concatenate ``min_digits..max_digits`` distinct recordings of ``pool`` -> (16 kHz int16 audio, digits)."""
    count = int(rng.integers(min_digits, max_digits + 1))
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    pieces = [silence(rng, EDGE_S)]
    digits = []
    for k, pick in enumerate(picks):
        if k:
            pieces.append(silence(rng, GAP_S))
        pieces.append(load(pool[int(pick)].path))
        digits.append(pool[int(pick)].digit)
    pieces.append(silence(rng, EDGE_S))
    audio = np.concatenate(pieces)
    return (np.clip(np.round(audio * 32767.0), -32768, 32767)).astype(np.int16), digits


def generate_set(
    set_name: str,
    num_utts: int,
    pools: dict[str, list[Recording]],
    seed: int,
    audio_dir: Path,
    final_audio_dir: Path,
    load: AudioCache,
    min_digits: int,
    max_digits: int,
) -> list[Utterance]:
    """Write ``num_utts`` flac files into ``audio_dir``; utterances point into ``final_audio_dir``."""
    speakers = list(pools)
    utterances = []
    for i in tqdm(range(num_utts), desc=f"fsdd {set_name}", unit="utt", leave=False):
        speaker = speakers[i % len(speakers)]
        rng = np.random.default_rng([seed, SET_CODES[set_name], i])
        audio, digits = make_utterance(rng, pools[speaker], load, min_digits, max_digits)
        utt_id = f"{speaker}-{set_name}-{i:05d}"
        soundfile.write(str(audio_dir / f"{utt_id}.flac"), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        text = " ".join(DIGIT_WORDS[d] for d in digits)
        utterances.append(Utterance(utt_id, speaker, text, final_audio_dir / f"{utt_id}.flac"))
    return utterances


def prepare_fsdd_digits(
    fsdd_dir: Path,
    output_dir: Path,
    output_audio_dir: Path,
    num_utts: dict[str, int] | None = None,
    seed: int = 0,
    unseen_speaker: str = "yweweler",
    min_digits: int = 3,
    max_digits: int = 7,
    force: bool = False,
) -> dict[str, PreparedSet]:
    """Generate the sets in ``num_utts`` (default: 2000 train, 200 each for the others).

    Returns ``{set name: PreparedSet}``; complete sets made with the same options are kept.
    """
    num_utts = num_utts or {"train": 2000, "dev": 200, "test": 200, "test_unseen_spk": 200}
    unknown = [s for s in num_utts if s not in SET_TAKES]
    if unknown:
        raise CorpusError(f"unknown FSDD set(s) {unknown}; known: {', '.join(SET_TAKES)}")
    if not 1 <= min_digits <= max_digits:
        raise CorpusError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    recordings = scan_recordings(fsdd_dir)
    speakers = sorted({r.speaker for r in recordings})
    if unseen_speaker not in speakers:
        raise CorpusError(f"--unseen_speaker {unseen_speaker!r} is not in {fsdd_dir} (speakers: {speakers})")
    if len(speakers) < 2:
        raise CorpusError(f"{fsdd_dir} holds one speaker only; need training speakers besides the unseen one")
    output_dir, output_audio_dir = Path(output_dir), Path(output_audio_dir).resolve()
    load = AudioCache()
    results: dict[str, PreparedSet] = {}
    for set_name, count in num_utts.items():
        if count <= 0:
            continue
        pools = set_pools(recordings, set_name, unseen_speaker)
        if not pools:
            raise CorpusError(f"no FSDD recordings usable for {set_name} in {fsdd_dir}")
        params = {
            "fsdd_dir": str(Path(fsdd_dir).resolve()), "num_utts": count, "seed": seed,
            "speakers": list(pools), "takes": [min(SET_TAKES[set_name][0]), max(SET_TAKES[set_name][0])],
            "digits": [min_digits, max_digits], "generator": GENERATOR_VERSION,
        }
        kaldi_dir, audio_dir = output_dir / set_name, output_audio_dir / set_name
        if is_done(audio_dir, params, force) and is_done(kaldi_dir, params, force):
            results[set_name] = reused_set(kaldi_dir)
            continue
        logger.info("generating %d %s utterances from speakers %s", count, set_name, ", ".join(pools))
        with atomic_directory(audio_dir) as tmp_audio:
            utterances = generate_set(set_name, count, pools, seed, tmp_audio, audio_dir, load, min_digits, max_digits)
            write_done_marker(tmp_audio, params, num_utts=count)
        results[set_name] = write_kaldi_dir(kaldi_dir, utterances, params)
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--fsdd_dir", type=Path, required=True,
                        help="the FSDD recordings/ folder (<digit>_<speaker>_<index>.wav)")
    parser.add_argument("--output_audio_dir", type=Path, default=Path("downloads/fsdd_digits"),
                        help="generated 16 kHz flac files go here (<dir>/<set>/<utt>.flac)")
    parser.add_argument("--num_train", type=int, default=2000, help="utterances in train")
    parser.add_argument("--num_dev", type=int, default=200, help="utterances in dev")
    parser.add_argument("--num_test", type=int, default=200, help="utterances in test")
    parser.add_argument("--num_test_unseen", type=int, default=200,
                        help="utterances in test_unseen_spk")
    parser.add_argument("--seed", type=int, default=0, help="everything generated is a function of it")
    parser.add_argument("--unseen_speaker", default="yweweler",
                        help="speaker kept out of train/dev/test, used only for test_unseen_spk")
    parser.add_argument("--min_digits", type=int, default=3, help="fewest recordings per utterance")
    parser.add_argument("--max_digits", type=int, default=7, help="most recordings per utterance")
    return parser


def run(args: argparse.Namespace) -> None:
    counts = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test,
              "test_unseen_spk": args.num_test_unseen}
    prepare_fsdd_digits(args.fsdd_dir, args.output_dir, args.output_audio_dir, counts, args.seed,
                        args.unseen_speaker, args.min_digits, args.max_digits, args.force)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
