"""local/fsdd_digits.py on the real FSDD recordings (skipped when they are not available)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile

from _corpus_trees import REPO, leftovers, tree_digest

from local import fsdd_digits
from local.common import CorpusError, validate_kaldi_dir

FSDD = Path(os.environ.get("FSDD_DIR", REPO.parent / "shared" / "data" / "fsdd" / "recordings"))
if not FSDD.is_dir():
    FSDD = Path("/work/shared/data/fsdd/recordings")
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD recordings not available at {FSDD}")

COUNTS = {"train": 6, "dev": 3, "test": 3, "test_unseen_spk": 2}
SEEN = ["george", "jackson", "lucas", "nicolas", "theo"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def fsdd_listing() -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in FSDD.iterdir()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """One generation, shared by the read-only checks below."""
    if not FSDD.is_dir():
        pytest.skip(f"FSDD recordings not available at {FSDD}")
    root = tmp_path_factory.mktemp("fsdd")
    before = fsdd_listing()
    fsdd_digits.prepare_fsdd_digits(FSDD, root / "data", root / "audio", COUNTS, seed=7)
    assert fsdd_listing() == before  # the recordings are only read
    return root


@needs_fsdd
def test_sets_ids_and_text(generated: Path) -> None:
    data = generated / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(COUNTS)
    for set_name, count in COUNTS.items():
        validate_kaldi_dir(data / set_name)
        text = lines(data / set_name / "text")
        assert len(text) == count
        for line in text:
            utt, *words = line.split()
            speaker, set_in_id, index = utt.rsplit("-", 2)
            assert set_in_id == set_name and len(index) == 5
            assert 3 <= len(words) <= 7
            assert set(words) <= set(fsdd_digits.DIGIT_WORDS)
        for line in lines(data / set_name / "utt2spk"):
            utt, spk = line.split()
            assert utt.startswith(spk + "-")
    # utterance i of a set uses speaker i mod n: the first 6 train utterances cover all 5 seen speakers
    assert sorted({line.split()[1] for line in lines(data / "train" / "utt2spk")}) == SEEN


@needs_fsdd
def test_audio_is_16k_flac_in_output_audio_dir(generated: Path) -> None:
    for set_name in COUNTS:
        for line in lines(generated / "data" / set_name / "wav.scp"):
            utt, path = line.split()
            path = Path(path)
            assert path.is_absolute() and path == generated.resolve() / "audio" / set_name / f"{utt}.flac"
            info = soundfile.info(str(path))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
            assert 0.8 < info.duration < 10.0


@needs_fsdd
def test_unseen_speaker_is_disjoint(generated: Path) -> None:
    spk = {s: {line.split()[1] for line in lines(generated / "data" / s / "utt2spk")} for s in COUNTS}
    assert spk["test_unseen_spk"] == {"yweweler"}
    for s in ("train", "dev", "test"):
        assert "yweweler" not in spk[s]


@needs_fsdd
def test_take_ranges_are_disjoint() -> None:
    recordings = fsdd_digits.scan_recordings(FSDD)
    pools = {s: fsdd_digits.set_pools(recordings, s, "yweweler") for s in fsdd_digits.SET_TAKES}
    files = {s: {r.path for rs in p.values() for r in rs} for s, p in pools.items()}
    for a in files:
        for b in files:
            if a < b:
                assert not files[a] & files[b], (a, b)
    assert {r.index for rs in pools["train"].values() for r in rs} == set(range(40))
    assert {r.index for rs in pools["dev"].values() for r in rs} == set(range(40, 45))
    assert {r.index for rs in pools["test"].values() for r in rs} == set(range(45, 50))
    assert list(pools["train"]) == SEEN and list(pools["test_unseen_spk"]) == ["yweweler"]
    assert len(files["train"]) == 5 * 10 * 40


@needs_fsdd
def test_deterministic_from_seed(generated: Path, tmp_path: Path) -> None:
    fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "data", tmp_path / "audio", COUNTS, seed=7)
    for set_name in COUNTS:
        assert (tmp_path / "data" / set_name / "text").read_bytes() == \
            (generated / "data" / set_name / "text").read_bytes()
    assert tree_digest(tmp_path / "audio") == tree_digest(generated / "audio")
    # more utterances keep the first ones; another seed changes them
    fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "more", tmp_path / "more_audio", {"dev": 5}, seed=7)
    first = set(lines(generated / "data" / "dev" / "text"))
    assert first <= set(lines(tmp_path / "more" / "dev" / "text"))
    fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "other", tmp_path / "other_audio", {"dev": 3}, seed=8)
    assert lines(tmp_path / "other" / "dev" / "text") != lines(generated / "data" / "dev" / "text")


@needs_fsdd
def test_rerun_idempotent_and_option_change_refused(tmp_path: Path) -> None:
    counts = {"dev": 2}
    fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "data", tmp_path / "audio", counts, seed=1)
    written = tree_digest(tmp_path)
    again = fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "data", tmp_path / "audio", counts, seed=1)
    assert again["dev"].reused
    assert tree_digest(tmp_path) == written
    assert leftovers(tmp_path) == []
    with pytest.raises(CorpusError, match="--force"):
        fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "data", tmp_path / "audio", counts, seed=2)
    fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "data", tmp_path / "audio", counts, seed=2, force=True)
    assert tree_digest(tmp_path) != written
    assert leftovers(tmp_path) == []


def test_missing_fsdd_dir_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        fsdd_digits.prepare_fsdd_digits(tmp_path / "nope", tmp_path / "data", tmp_path / "audio")
    message = str(e.value)
    assert str(tmp_path / "nope") in message
    assert "github.com/Jakobovski/free-spoken-digit-dataset" in message
    assert "recordings/" in message and "<digit>_<speaker>_<index>.wav" in message
    assert fsdd_digits.main(["--fsdd_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "d"),
                             "--output_audio_dir", str(tmp_path / "a")]) == 1


@needs_fsdd
def test_unknown_unseen_speaker(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="nobody"):
        fsdd_digits.prepare_fsdd_digits(FSDD, tmp_path / "d", tmp_path / "a", {"dev": 1}, unseen_speaker="nobody")
