"""local/librispeech.py on a tiny tree in the real LibriSpeech layout."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import sys
from pathlib import Path

import pytest

from _corpus_trees import LOCAL, leftovers, make_librispeech, tree_digest
from conftest import recipe_env

from local import librispeech
from local.common import CorpusError, validate_kaldi_dir


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_librispeech(tmp_path / "corpus")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_train_clean_100_line_by_line(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    librispeech.prepare_librispeech(corpus, out, splits=["train-clean-100"])
    d = out / "train_clean_100"
    split = (corpus / "LibriSpeech" / "train-clean-100").resolve()
    assert lines(d / "wav.scp") == [
        f"103-1240-0000 {split}/103/1240/103-1240-0000.flac",
        f"103-1240-0001 {split}/103/1240/103-1240-0001.flac",
        f"103-1241-0002 {split}/103/1241/103-1241-0002.flac",
        f"1034-121119-0000 {split}/1034/121119/1034-121119-0000.flac",
        f"19-198-0000 {split}/19/198/19-198-0000.flac",
    ]
    assert lines(d / "text") == [
        "103-1240-0000 CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED",
        "103-1240-0001 THAT HAD ITS SOURCE AWAY BACK",
        "103-1241-0002 ANOTHER CHAPTER",
        "1034-121119-0000 THE BOY HAD NEVER SEEN",
        "19-198-0000 NORTHANGER ABBEY",
    ]
    assert lines(d / "utt2spk") == [
        "103-1240-0000 103-1240",
        "103-1240-0001 103-1240",
        "103-1241-0002 103-1241",
        "1034-121119-0000 1034-121119",
        "19-198-0000 19-198",
    ]
    assert lines(d / "spk2utt") == [
        "103-1240 103-1240-0000 103-1240-0001",
        "103-1241 103-1241-0002",
        "1034-121119 1034-121119-0000",
        "19-198 19-198-0000",
    ]
    assert not (d / "segments").exists()
    validate_kaldi_dir(d)


def test_defects_are_counted_warned_and_skipped(corpus: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    result = librispeech.prepare_librispeech(corpus, tmp_path / "data", splits=["train-clean-100"])
    assert result["train_clean_100"].num_utts == 5
    assert result["train_clean_100"].skipped == {
        "empty_transcript": 1,     # 19-198-0003 has an id but no words
        "malformed_line": 1,       # 19-199-0004 in chapter 19/198's transcript
        "missing_audio": 1,        # 19-198-0001 has a line but no flac
        "missing_transcript": 1,   # 19-198-0002.flac has no line
    }
    for name in ("19-198-0001", "19-198-0002", "19-198-0003", "19-199-0004"):
        assert name in caplog.text
    assert "skipped in total" in caplog.text


def test_all_splits_and_combined_dev(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = librispeech.prepare_librispeech(corpus, out)
    assert sorted(result) == ["dev", "dev_clean", "dev_other", "test_clean", "test_other", "train_clean_100"]
    assert sorted(p.name for p in out.iterdir()) == sorted(result)
    root = (corpus / "LibriSpeech").resolve()
    assert lines(out / "dev" / "text") == [
        "116-288045-0000 AS I APPROACHED THE CITY",
        "2277-149896-0000 HE WAS IN A FEVERED STATE OF MIND",
        "2277-149896-0001 OWING TO THE BLIGHT",
    ]
    assert lines(out / "dev" / "wav.scp") == [
        f"116-288045-0000 {root}/dev-other/116/288045/116-288045-0000.flac",
        f"2277-149896-0000 {root}/dev-clean/2277/149896/2277-149896-0000.flac",
        f"2277-149896-0001 {root}/dev-clean/2277/149896/2277-149896-0001.flac",
    ]
    assert lines(out / "dev" / "spk2utt") == [
        "116-288045 116-288045-0000",
        "2277-149896 2277-149896-0000 2277-149896-0001",
    ]
    assert lines(out / "test_other" / "text") == ["1688-142285-0000 THERE'S IRON THEY SAY IN ALL OUR BLOOD"]
    for name in result:
        validate_kaldi_dir(out / name)
    # only one dev split asked for: no combined dev
    only = librispeech.prepare_librispeech(corpus, tmp_path / "data2", splits=["dev-clean"])
    assert sorted(only) == ["dev_clean"]


def test_corpus_untouched_rerun_idempotent_no_temp_files(corpus: Path, tmp_path: Path) -> None:
    before = tree_digest(corpus)
    out = tmp_path / "data"
    first = librispeech.prepare_librispeech(corpus, out)
    assert tree_digest(corpus) == before
    written = tree_digest(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    second = librispeech.prepare_librispeech(corpus, out)
    assert all(s.reused for s in second.values())
    assert {k: v.num_utts for k, v in second.items()} == {k: v.num_utts for k, v in first.items()}
    assert second["train_clean_100"].skipped == first["train_clean_100"].skipped
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    third = librispeech.prepare_librispeech(corpus, out, force=True)
    assert not any(s.reused for s in third.values())
    assert tree_digest(out) == written
    assert leftovers(tmp_path) == []
    assert tree_digest(corpus) == before
    # the same output dir asked for from another corpus copy: refuse rather than keep it silently
    other = tmp_path / "other_copy"
    shutil.copytree(corpus, other)
    with pytest.raises(CorpusError, match="--force"):
        librispeech.prepare_librispeech(other, out)


def test_missing_root_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        librispeech.prepare_librispeech(tmp_path / "nowhere", tmp_path / "data")
    message = str(e.value)
    assert str(tmp_path / "nowhere" / "LibriSpeech") in message
    assert "LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac" in message
    assert "trans.txt" in message
    assert isinstance(e.value, ValueError)
    assert not (tmp_path / "data").exists()


def test_missing_split_names_path(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="train-clean-360") as e:
        librispeech.prepare_librispeech(corpus, tmp_path / "data", splits=["dev-clean", "train-clean-360"])
    assert str(corpus / "LibriSpeech" / "train-clean-360") in str(e.value)
    assert not (tmp_path / "data").exists()  # checked before anything is written


def test_check_audio_names_corrupt_file(corpus: Path, tmp_path: Path) -> None:
    bad = corpus / "LibriSpeech" / "test-clean" / "1089" / "134686" / "1089-134686-0000.flac"
    bad.write_bytes(b"fLaC but not really a flac file")
    # without --check_audio only existence is checked
    librispeech.prepare_librispeech(corpus, tmp_path / "a", splits=["test-clean"])
    with pytest.raises(CorpusError, match="1089-134686-0000.flac"):
        librispeech.prepare_librispeech(corpus, tmp_path / "b", splits=["test-clean"], check_audio=True)
    assert not (tmp_path / "b" / "test_clean").exists()
    assert leftovers(tmp_path) == []


def test_accepts_the_librispeech_folder_itself(corpus: Path, tmp_path: Path) -> None:
    result = librispeech.prepare_librispeech(corpus / "LibriSpeech", tmp_path / "data", splits=["test-clean"])
    assert result["test_clean"].num_utts == 1


@pytest.mark.parametrize("how", ["path", "module"])
def test_cli(corpus: Path, tmp_path: Path, how: str) -> None:
    """As stage 1 runs it (``python local/librispeech.py``, the checkout on PYTHONPATH) and as a module."""
    command = [sys.executable, str(LOCAL / "librispeech.py")] if how == "path" else \
        [sys.executable, "-m", "local.librispeech"]
    ok = subprocess.run(
        [*command, "--corpus_dir", str(corpus), "--output_dir", str(tmp_path / "data"),
         "--splits", "dev-clean", "dev-other"],
        capture_output=True, text=True, check=False, env=recipe_env(), cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dev", "dev_clean", "dev_other"]
    bad = subprocess.run(
        [*command, "--corpus_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "x")],
        capture_output=True, text=True, check=False, env=recipe_env(), cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert "LibriSpeech not found" in bad.stderr and str(tmp_path / "missing") in bad.stderr


def test_download_extracts_and_marks_completed(tmp_path: Path) -> None:
    """download_librispeech against a file:// "mirror" holding a tiny dev-clean.tar.gz."""
    made = make_librispeech(tmp_path / "made", defects=False)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(made / "LibriSpeech" / "dev-clean", arcname="LibriSpeech/dev-clean")
    target = tmp_path / "corpus"
    target.mkdir()
    (target / "dev-clean.tar.gz.part").write_bytes(b"stale partial download")
    librispeech.download_librispeech(target, ["dev-clean"], base_url=mirror.as_uri())
    assert (target / "LibriSpeech" / "dev-clean" / ".completed").is_file()
    assert (target / "dev-clean.tar.gz").read_bytes() == (mirror / "dev-clean.tar.gz").read_bytes()
    assert leftovers(target) == []
    (mirror / "dev-clean.tar.gz").unlink()  # second call: nothing fetched or extracted again
    librispeech.download_librispeech(target, ["dev-clean"], base_url=mirror.as_uri())
    result = librispeech.prepare_librispeech(target, tmp_path / "data", splits=["dev-clean"])
    assert result["dev_clean"].num_utts == 2
