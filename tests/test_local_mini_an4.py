"""local/mini_an4.py on the real archive shipped in the espnet wheel; safe extraction."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import soundfile

from _corpus_trees import leftovers, tree_digest

from local import mini_an4
from local.common import CorpusError, safe_extract, validate_kaldi_dir


@pytest.fixture(scope="module")
def archive() -> Path:
    try:
        return mini_an4.find_archive()
    except CorpusError as e:
        pytest.skip(f"espnet wheel without mini_an4: {e}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_prepare_from_wheel_archive(archive: Path, tmp_path: Path) -> None:
    corpus = mini_an4.download_mini_an4(tmp_path / "downloads")
    assert corpus == tmp_path / "downloads" / "an4"
    assert (tmp_path / "downloads" / ".mini_an4.completed").is_file()
    result = mini_an4.prepare_mini_an4(corpus, tmp_path / "data")
    out = tmp_path / "data"
    # the archive holds 6 train sphere files but only 5 transcriptions (cen7-fash-b has none), 2 test
    assert {k: v.num_utts for k, v in result.items()} == {"train": 5, "test": 2, "dev": 2}
    assert result["train"].skipped == {"missing_transcript": 1}
    assert len(list((corpus / "wav" / "an4_clstk").glob("*/*.sph"))) == 6
    assert lines(out / "train" / "text") == [
        "fash-an251-b YES",
        "fash-an253-b GO",
        "fbbh-cen8-b MARCH THIRD NINETEEN TWENTY EIGHT",
        "mwhw-an152-b START",
        "mwhw-cen8-b ELEVEN SEVENTEEN FIFTY ONE",
    ]
    assert lines(out / "train" / "spk2utt") == [
        "fash fash-an251-b fash-an253-b",
        "fbbh fbbh-cen8-b",
        "mwhw mwhw-an152-b mwhw-cen8-b",
    ]
    assert lines(out / "test" / "text") == [
        "fcaw-cen8-b ELEVEN TWENTY SEVEN FIFTY SEVEN",
        "mmxg-cen8-b OCTOBER TWENTY FOUR NINETEEN SEVENTY",
    ]
    wav = corpus.resolve() / "wav"
    assert lines(out / "test" / "wav.scp") == [
        f"fcaw-cen8-b {wav}/an4test_clstk/fcaw/cen8-fcaw-b.sph",
        f"mmxg-cen8-b {wav}/an4test_clstk/mmxg/cen8-mmxg-b.sph",
    ]
    for name in ("text", "wav.scp", "utt2spk", "spk2utt"):  # dev is the test set (smoke-test corpus)
        assert (out / "dev" / name).read_text() == (out / "test" / name).read_text()
    for name in ("train", "test", "dev"):
        validate_kaldi_dir(out / name)
        for line in lines(out / name / "wav.scp"):
            info = soundfile.info(line.split(" ", 1)[1])
            assert info.samplerate == 16000 and info.frames > 0


def test_rerun_is_idempotent_and_corpus_untouched(archive: Path, tmp_path: Path) -> None:
    corpus = mini_an4.download_mini_an4(tmp_path / "downloads")
    before = tree_digest(tmp_path / "downloads")
    mini_an4.prepare_mini_an4(corpus, tmp_path / "data")
    written = tree_digest(tmp_path / "data")
    assert mini_an4.download_mini_an4(tmp_path / "downloads") == corpus  # marker: no re-extraction
    again = mini_an4.prepare_mini_an4(corpus, tmp_path / "data")
    assert all(s.reused for s in again.values())
    assert tree_digest(tmp_path / "data") == written
    assert tree_digest(tmp_path / "downloads") == before
    assert leftovers(tmp_path) == []


def test_cli(archive: Path, tmp_path: Path) -> None:
    rc = mini_an4.main(["--download_dir", str(tmp_path / "dl"), "--output_dir", str(tmp_path / "data")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dev", "test", "train"]
    assert mini_an4.main(["--corpus_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "d")]) == 1


def test_parse_transcription_line() -> None:
    assert mini_an4.parse_transcription_line("<s> YES </s> (an251-fash-b)") == ("an251-fash-b", "YES")
    assert mini_an4.parse_transcription_line("eleven twenty (cen8-fcaw-b)") == ("cen8-fcaw-b", "ELEVEN TWENTY")
    assert mini_an4.utterance_id("an251-fash-b") == ("fash-an251-b", "fash")
    with pytest.raises(CorpusError):
        mini_an4.parse_transcription_line("<s> NO FILE ID </s>")


def test_missing_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="etc/ and wav/") as e:
        mini_an4.prepare_mini_an4(tmp_path / "an4", tmp_path / "data")
    assert str(tmp_path / "an4") in str(e.value)


def _tar_with(tmp_path: Path, name: str, linkname: str | None = None) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        if linkname is not None:
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return path


@pytest.mark.parametrize(
    "name, linkname",
    [("../outside.txt", None), ("/abs/outside.txt", None), ("downloads/../../x", None),
     ("downloads/link", "../../etc/passwd"), ("downloads/link", "/etc/passwd")],
)
def test_safe_extract_refuses_escaping_members(tmp_path: Path, name: str, linkname: str | None) -> None:
    archive = _tar_with(tmp_path, name, linkname)
    target = tmp_path / "target"
    with pytest.raises(CorpusError, match="refusing"):
        safe_extract(archive, target)
    assert not (tmp_path / "outside.txt").exists()
    assert list(target.rglob("*")) == []


def test_safe_extract_strips_prefix(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path, "downloads/an4/etc/file.txt")
    safe_extract(archive, tmp_path / "t", strip_prefix="downloads")
    assert (tmp_path / "t" / "an4" / "etc" / "file.txt").read_bytes() == b"abc"
