"""local/an4.py and egs2/an4/asr1/run.sh stage 1: ESPnet's AN4 ids, splits and transcripts.

A tiny AN4 tree in CMU's layout (NIST sphere written by soundfile, or flac as in the shared copy)
pins the ids (``an251-fash-b`` -> ``fash-an251-b``), the C-locale order, the train_dev /
train_nodev split and the transcripts; the complete shared copy (when present) gives ESPnet's
848 / 100 / 130 utterances; a missing corpus or file is one error naming the path; ``--download``
is tested with a local tarball (file:// URL).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from _corpus_trees import leftovers, tone, tree_digest, write_audio
from conftest import recipe_env

from local import an4
from local.common import CorpusError, validate_kaldi_dir

REPO = Path(__file__).resolve().parent.parent
SHARED = next((p for p in (Path("/work/shared/data/an4"), REPO.parent / "shared" / "data" / "an4")
               if (p / "an4" / "etc").is_dir()), None)

# CMU file id -> words, per part; the transcription files hold them in this (unsorted) order
TRAIN = {
    "cen2-fash-b": "<s> A B C </s>",
    "an251-fash-b": "<s> YES </s>",
    "cen10-fash-b": "<s> ENTER FOUR FIVE </s>",
    "an253-fash-b": "<s> GO </s>",
    "an98-Mxyz-b": "<s> R U B O U T </s>",  # upper case sorts first in C locale
    "cen1-mwhw-b": "<s> ELEVEN o'clock </s>",  # words kept as written
}
TEST = {
    "cen8-fcaw-b": "ELEVEN TWENTY SEVEN",  # test lines have no <s> </s> in CMU's files
    "an406-fcaw-b": "RUBOUT G M E F THREE NINE",
}
# ESPnet's ids in C-locale order
TRAIN_IDS = ["Mxyz-an98-b", "fash-an251-b", "fash-an253-b", "fash-cen10-b", "fash-cen2-b", "mwhw-cen1-b"]
TEST_IDS = ["fcaw-an406-b", "fcaw-cen8-b"]


def make_an4(root: Path, suffix: str = ".sph", parts=(("train", TRAIN), ("test", TEST))) -> Path:
    """A tiny AN4 in CMU's layout under ``root/an4``; returns ``root`` (the $AN4 folder)."""
    corpus = root / "an4"
    fmt = "NIST" if suffix == ".sph" else "FLAC"
    for part, utts in parts:
        folder = an4.WAV_FOLDERS[part]
        (corpus / "etc").mkdir(parents=True, exist_ok=True)
        lines, fileids = [], []
        for i, (fileid, words) in enumerate(utts.items()):
            speaker = fileid.split("-")[1]
            write_audio(corpus / "wav" / folder / speaker / f"{fileid}{suffix}", tone(0.3, seed=i), fmt=fmt)
            lines.append(f"{words} ({fileid})\n")
            fileids.append(f"{folder}/{speaker}/{fileid}\n")
        (corpus / "etc" / f"an4_{part}.transcription").write_text("".join(lines))
        (corpus / "etc" / f"an4_{part}.fileids").write_text("".join(fileids))
    (corpus / "README").write_text("tiny AN4 for tests\n")
    return root


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def first_field(path: Path) -> list[str]:
    return [line.split(" ", 1)[0] for line in lines(path)]


@pytest.mark.parametrize("suffix", [".sph", ".flac"])
def test_ids_splits_and_transcripts(tmp_path: Path, suffix: str) -> None:
    root = make_an4(tmp_path / "corpora", suffix)
    before = tree_digest(root)
    result = an4.prepare_an4(root, tmp_path / "data", ndev_utt=2)
    out = tmp_path / "data"
    counts = {k: v.num_utts for k, v in result.items()}
    assert counts == {"test": 2, "train": 6, "train_dev": 2, "train_nodev": 4}
    assert first_field(out / "train" / "text") == TRAIN_IDS
    assert first_field(out / "train_dev" / "text") == TRAIN_IDS[:2]
    assert first_field(out / "train_nodev" / "text") == TRAIN_IDS[2:]
    assert first_field(out / "test" / "text") == TEST_IDS
    assert lines(out / "train" / "text") == [
        "Mxyz-an98-b R U B O U T", "fash-an251-b YES", "fash-an253-b GO",
        "fash-cen10-b ENTER FOUR FIVE", "fash-cen2-b A B C", "mwhw-cen1-b ELEVEN o'clock",
    ]
    assert lines(out / "test" / "text") == [
        "fcaw-an406-b RUBOUT G M E F THREE NINE", "fcaw-cen8-b ELEVEN TWENTY SEVEN"]
    assert lines(out / "train_nodev" / "spk2utt") == [
        "fash fash-an253-b fash-cen10-b fash-cen2-b", "mwhw mwhw-cen1-b"]
    assert lines(out / "train_dev" / "utt2spk") == ["Mxyz-an98-b Mxyz", "fash-an251-b fash"]
    wav = (root / "an4" / "wav").resolve()
    assert lines(out / "test" / "wav.scp") == [
        f"fcaw-an406-b {wav}/an4test_clstk/fcaw/an406-fcaw-b{suffix}",
        f"fcaw-cen8-b {wav}/an4test_clstk/fcaw/cen8-fcaw-b{suffix}",
    ]
    for name in result:
        validate_kaldi_dir(out / name)
    assert tree_digest(root) == before  # the corpus is only read
    assert leftovers(tmp_path) == []

    # idempotent: a rerun keeps the sets; other options need --force
    again = an4.prepare_an4(root / "an4", out, ndev_utt=2)  # the an4/ folder itself is accepted too
    assert all(s.reused for s in again.values())
    with pytest.raises(CorpusError, match="--force"):
        an4.prepare_an4(root, out, ndev_utt=3)
    redone = an4.prepare_an4(root, out, ndev_utt=3, force=True)
    assert redone["train_dev"].num_utts == 3 and redone["train_nodev"].num_utts == 3


def test_sph_wins_over_flac_and_cli(tmp_path: Path) -> None:
    root = make_an4(tmp_path / "corpora", ".sph")
    make_an4(tmp_path / "corpora", ".flac")
    assert an4.main(["--an4_root", str(root), "--output_dir", str(tmp_path / "data"), "--ndev_utt", "1"]) == 0
    assert all(line.endswith(".sph") for line in lines(tmp_path / "data" / "train" / "wav.scp"))
    assert len(lines(tmp_path / "data" / "train_dev" / "text")) == 1


@pytest.mark.parametrize("remove, named", [
    ("an4", "an4"),
    ("an4/etc/an4_test.transcription", "an4/etc/an4_test.transcription"),
    ("an4/wav/an4_clstk", "an4/wav/an4_clstk"),
    ("an4/wav/an4_clstk/fash/cen10-fash-b.sph", "an4/wav/an4_clstk/fash/cen10-fash-b.sph"),
])
def test_missing_corpus_or_file_is_named(tmp_path: Path, remove: str, named: str) -> None:
    root = make_an4(tmp_path / "corpora")
    target = root / remove
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(CorpusError) as e:
        an4.prepare_an4(root, tmp_path / "data", ndev_utt=2)
    message = str(e.value)
    assert str(root / named) in message and "an4_sphere.tar.gz" in message
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_bad_inputs(tmp_path: Path) -> None:
    root = make_an4(tmp_path / "corpora")
    with pytest.raises(CorpusError, match="ndev_utt"):
        an4.prepare_an4(root, tmp_path / "data", ndev_utt=6)
    transcription = root / "an4" / "etc" / "an4_train.transcription"
    transcription.write_text(transcription.read_text() + "<s> NO ID </s>\n")
    with pytest.raises(CorpusError, match=r"an4_train\.transcription:7: malformed"):
        an4.prepare_an4(root, tmp_path / "data", ndev_utt=2)
    assert an4.main(["--an4_root", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "data")]) == 1


def test_download_from_local_tarball(tmp_path: Path) -> None:
    source = make_an4(tmp_path / "source")
    archive = tmp_path / "an4_sphere.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "an4", arcname="an4")
    target = tmp_path / "downloads"
    argv = ["--an4_root", str(target), "--download", "--url", archive.as_uri(),
            "--output_dir", str(tmp_path / "data"), "--ndev_utt", "2"]
    assert an4.main(argv) == 0
    assert (target / an4.COMPLETED).is_file() and (target / an4.ARCHIVE_NAME).is_file()
    assert tree_digest(target / "an4") == tree_digest(source / "an4")
    assert first_field(tmp_path / "data" / "train" / "text") == TRAIN_IDS
    # an extraction cut off (no marker) is redone from the downloaded archive
    (target / an4.COMPLETED).unlink()
    cut = target / "an4" / "wav" / "an4_clstk" / "fash" / "an251-fash-b.sph"
    cut.unlink()
    archive.unlink()  # the URL is gone now: nothing is fetched again
    assert an4.download_an4(target, archive.as_uri()) == target
    assert cut.is_file() and (target / an4.COMPLETED).is_file()
    assert an4.download_an4(target, archive.as_uri()) == target
    # a failed download is one error naming the URL
    with pytest.raises(CorpusError, match="could not download AN4 from file:"):
        an4.download_an4(tmp_path / "elsewhere", archive.as_uri())
    # an AN4 already in place is not downloaded again either
    assert an4.download_an4(source, archive.as_uri()) == source
    assert not (source / an4.ARCHIVE_NAME).exists()


@pytest.mark.skipif(SHARED is None,
                    reason="the shared AN4 copy (/work/shared/data/an4 or ../shared/data/an4) is absent")
def test_shared_copy_gives_espnet_splits(tmp_path: Path) -> None:
    assert SHARED is not None
    result = an4.prepare_an4(SHARED, tmp_path / "data")
    counts = {k: v.num_utts for k, v in result.items()}
    assert counts == {"test": 130, "train": 948, "train_dev": 100, "train_nodev": 848}
    data = tmp_path / "data"
    dev, nodev, test = (first_field(data / s / "text") for s in ("train_dev", "train_nodev", "test"))
    assert (dev[0], dev[-1]) == ("fash-an251-b", "fjmd-cen8-b")
    assert (nodev[0], nodev[-1]) == ("fkai-an311-b", "mwhw-cen8-b")
    assert test[0] == "fcaw-an406-b"
    assert lines(data / "train" / "text")[:2] == ["fash-an251-b YES", "fash-an253-b GO"]
    assert len(lines(data / "train_nodev" / "spk2utt")) + len(lines(data / "train_dev" / "spk2utt")) >= 74
    assert len(lines(data / "test" / "spk2utt")) == 10


def run_recipe(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "egs2" / "an4" / "asr1" / "run.sh"), "--workdir", str(workdir), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )


def test_recipe_stage1(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    proc = run_recipe(workdir, recipe_env(drop=("AN4",)), "--stage", "1", "--stop_stage", "1")
    assert proc.returncode == 1, proc.stdout
    assert "$AN4 is not set" in proc.stdout and "an4_sphere.tar.gz" in proc.stdout
    root = make_an4(tmp_path / "corpora", ".flac", parts=(("train", {**TRAIN, **{
        f"an{300 + i}-fzzz-b": "<s> YES </s>" for i in range(100)}}), ("test", TEST)))
    proc = run_recipe(workdir, recipe_env(AN4=str(root)), "--stage", "1", "--stop_stage", "1")
    assert proc.returncode == 0, proc.stdout
    counts = {s: len(lines(workdir / "data" / s / "text")) for s in ("train_dev", "train_nodev", "test")}
    assert counts == {"train_dev": 100, "train_nodev": 6, "test": 2}
    assert not (workdir / "dump").exists()
