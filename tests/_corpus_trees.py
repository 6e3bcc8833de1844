"""Tiny corpora in the exact on-disk layouts of the real ones, for the ``local/`` tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "local"

SR = 16000


def tone(seconds: float, sr: int = SR, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A short sine plus a little noise, int16."""
    t = np.arange(int(round(seconds * sr))) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (np.clip(0.3 * np.sin(2 * np.pi * freq * t) + noise, -1, 1) * 32767).astype(np.int16)


def write_audio(path: Path, audio: np.ndarray, sr: int = SR, fmt: str = "FLAC") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, sr, format=fmt, subtype="PCM_16")
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (plus every folder, as ``dir``)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        digest[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def leftovers(root: Path) -> list[Path]:
    """Temporary files/dirs a preparation must not leave behind."""
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old", ".part"))]


# ---------------------------------------------------------------------------
# LibriSpeech: <root>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac + .trans.txt

LIBRI_GOOD = {
    # split -> {(spk, chapter): {nnnn: words}}
    "train-clean-100": {
        ("103", "1240"): {"0000": "CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED",
                          "0001": "THAT HAD ITS SOURCE AWAY BACK"},
        ("1034", "121119"): {"0000": "THE BOY HAD NEVER SEEN"},
        ("103", "1241"): {"0002": "ANOTHER CHAPTER"},
    },
    "dev-clean": {("2277", "149896"): {"0000": "HE WAS IN A FEVERED STATE OF MIND",
                                       "0001": "OWING TO THE BLIGHT"}},
    "dev-other": {("116", "288045"): {"0000": "AS I APPROACHED THE CITY"}},
    "test-clean": {("1089", "134686"): {"0000": "HE HOPED THERE WOULD BE STEW FOR DINNER"}},
    "test-other": {("1688", "142285"): {"0000": "THERE'S IRON THEY SAY IN ALL OUR BLOOD"}},
}


def make_librispeech(root: Path, defects: bool = True) -> Path:
    """Write the tree; with ``defects``, chapter 19/198 of train-clean-100 holds one of each defect:

    - 19-198-0000: fine;  19-198-0001: transcript line but no flac (missing_audio);
    - 19-198-0002.flac: no transcript line (missing_transcript);
    - 19-198-0003: empty transcript (empty_transcript);  a line "19-199-0004 WORDS" (malformed_line).
    """
    base = root / "LibriSpeech"
    seed = 0
    for split, chapters in LIBRI_GOOD.items():
        for (spk, chapter), utts in chapters.items():
            chapter_dir = base / split / spk / chapter
            for nnnn in utts:
                seed += 1
                write_audio(chapter_dir / f"{spk}-{chapter}-{nnnn}.flac", tone(0.2, seed=seed))
            (chapter_dir / f"{spk}-{chapter}.trans.txt").write_text(
                "".join(f"{spk}-{chapter}-{n} {w}\n" for n, w in utts.items())
            )
    if defects:
        chapter_dir = base / "train-clean-100" / "19" / "198"
        for nnnn in ("0000", "0002", "0003"):
            write_audio(chapter_dir / f"19-198-{nnnn}.flac", tone(0.2, seed=int(nnnn) + 50))
        (chapter_dir / "19-198.trans.txt").write_text(
            "19-198-0000 NORTHANGER ABBEY\n"
            "19-198-0001 THIS LITTLE WORK WAS FINISHED\n"
            "19-198-0003\n"
            "19-199-0004 WRONG CHAPTER\n"
        )
    # files a real distribution also has, which must be ignored
    (base / "README.TXT").write_text("LibriSpeech ASR corpus\n")
    (base / "SPEAKERS.TXT").write_text(";ID |SEX| SUBSET |MINUTES| NAME\n")
    return root


# ---------------------------------------------------------------------------
# TED-LIUM 3: <root>/TEDLIUM_release-3/legacy/{train,dev,test}/{sph,stm}/<talk>.{sph,stm}

TED_STM = {
    "train": {
        "TalkA_2010": (
            6.0,
            "TalkA_2010 1 TalkA_2010 0.00 1.50 <o,f0,male> hello world\n"
            "TalkA_2010 1 inter_segment_gap 1.50 2.00 <o,,unknown> ignore_time_segment_in_scoring\n"
            "TalkA_2010 1 TalkA_2010 2.00 3.25 <o,f0,male> that 's {NOISE} what i <unk> said\n"
            "TalkA_2010 1 TalkA_2010 3.25 abc <o,f0,male> non numeric end\n"
            "TalkA_2010 1 TalkA_2010 4.00 3.50 <o,f0,male> end before start\n"
            "TalkA_2010 1 TalkA_2010 4.00\n"
            "TalkA_2010 1 TalkA_2010 4.10 5.82 <o,f0,male> we 're done(2) {BREATH}\n",
        ),
        "TalkB_2011": (
            3.0,
            "TalkB_2011 1 TalkB_2011 1.00 2.00 <o,f0,female> second line\n"
            "TalkB_2011 1 TalkB_2011 0.20 0.90 <o,f0,female> first line\n",
        ),
    },
    "dev": {
        "TalkC_2012": (
            4.0,
            "TalkC_2012 1 TalkC_2012 0.50 1.75 <F0_M> it 's {SMACK} fine\n"
            "TalkC_2012 1 inter_segment_gap 1.75 2.50 <o,,unknown> ignore_time_segment_in_scoring\n"
            "TalkC_2012 1 TalkC_2012 2.50 3.90 <F0_M> {COUGH} um okay\n",
        ),
    },
    "test": {
        "TalkD_2013": (
            2.0,
            "TalkD_2013 1 TalkD_2013 0.10 1.90 <o,f0,female> the end\n",
        ),
    },
}


def make_tedlium3(root: Path) -> Path:
    base = root / "TEDLIUM_release-3" / "legacy"
    seed = 100
    for set_name, talks in TED_STM.items():
        for talk, (seconds, stm) in talks.items():
            seed += 1
            write_audio(base / set_name / "sph" / f"{talk}.sph", tone(seconds, seed=seed), fmt="NIST")
            stm_path = base / set_name / "stm" / f"{talk}.stm"
            stm_path.parent.mkdir(parents=True, exist_ok=True)
            stm_path.write_text(stm)
    (root / "TEDLIUM_release-3" / "readme.txt").write_text("TED-LIUM release 3\n")
    return root
