"""Stage 1 of the LibriSpeech-100 and TED-LIUM 3 recipes on tiny trees in the real layouts.

Runs ``egs2/<corpus>/asr1/run.sh --stage 1 --stop_stage 1`` with ``$LIBRISPEECH`` /
``$TEDLIUM3`` pointing at a tree made by ``tests/_corpus_trees.py`` and ``--workdir`` in
tmp_path, and checks the Kaldi dirs; a missing corpus root must stop the recipe with a message
naming the variable, the path and the expected layout.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import recipe_env
from _corpus_trees import LIBRI_GOOD, TED_STM, make_librispeech, make_tedlium3

REPO = Path(__file__).resolve().parent.parent
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


def corpus_env(**extra: str) -> dict[str, str]:
    """recipe_env without the corpus variables of this machine, plus `extra`."""
    return recipe_env(drop=("LIBRISPEECH", "TEDLIUM3"), **extra)


def run_stage1(corpus: str, workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "egs2" / corpus / "asr1" / "run.sh"), "--workdir", str(workdir),
         "--stage", "1", "--stop_stage", "1", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def libri_counts() -> dict[str, int]:
    """Utterances per set of the tree: LIBRI_GOOD plus the one good utterance of the defect chapter."""
    counts = {split.replace("-", "_"): sum(len(u) for u in chapters.values())
              for split, chapters in LIBRI_GOOD.items()}
    counts["train_clean_100"] += 1  # 19-198-0000
    counts["dev"] = counts["dev_clean"] + counts["dev_other"]
    return counts


def test_librispeech_stage1(tmp_path: Path) -> None:
    corpus = make_librispeech(tmp_path / "corpora")
    workdir = tmp_path / "work"
    proc = run_stage1("librispeech_100", workdir, corpus_env(LIBRISPEECH=str(corpus)))
    assert proc.returncode == 0, proc.stdout
    assert "Stage 1: data preparation" in proc.stdout
    expected = libri_counts()
    assert set(expected) == {"train_clean_100", "dev", "dev_clean", "dev_other", "test_clean", "test_other"}
    for dset, n in expected.items():
        d = workdir / "data" / dset
        assert (d / ".done").is_file(), dset
        for name in ("wav.scp", "text", "utt2spk"):
            assert count_lines(d / name) == n, f"{dset}/{name}"
        assert not (d / "segments").exists()
    # only stage 1 ran
    assert not (workdir / "dump").exists() and not (workdir / "exp").exists()

    # a second run skips it, and no longer needs the corpus
    proc = run_stage1("librispeech_100", workdir, corpus_env())
    assert proc.returncode == 0, proc.stdout
    assert "Stage 1: done already, skipping" in proc.stdout


def test_tedlium3_stage1(tmp_path: Path) -> None:
    corpus = make_tedlium3(tmp_path / "corpora")
    workdir = tmp_path / "work"
    proc = run_stage1("tedlium3", workdir, corpus_env(TEDLIUM3=str(corpus)))
    assert proc.returncode == 0, proc.stdout
    # utterances of the tree: STM lines that are well-formed and not ignore_time_segment_in_scoring
    expected = {"train": 5, "dev": 2, "test": 1}
    assert set(expected) == set(TED_STM)
    for dset, n in expected.items():
        d = workdir / "data" / dset
        assert (d / ".done").is_file(), dset
        for name in ("text", "utt2spk", "segments"):
            assert count_lines(d / name) == n, f"{dset}/{name}"
        assert count_lines(d / "wav.scp") == len(TED_STM[dset])  # one line per talk
        assert (d / "stm").is_file() and (d / "glm").is_file()
    # ESPnet's recipe writes <unk> as [unk] (a sentencepiece user-defined symbol, --bpe_nlsyms)
    train_text = (workdir / "data" / "train" / "text").read_text()
    assert "[unk]" in train_text and "<unk>" not in train_text


@pytest.mark.parametrize("corpus, variable, subdir", [
    ("librispeech_100", "LIBRISPEECH", "LibriSpeech"),
    ("tedlium3", "TEDLIUM3", "TEDLIUM_release-3"),
])
def test_missing_corpus_root_names_variable_path_and_layout(tmp_path: Path, corpus: str, variable: str,
                                                            subdir: str) -> None:
    missing = tmp_path / "no_such_corpus"
    proc = run_stage1(corpus, tmp_path / "work", corpus_env(**{variable: str(missing)}))
    assert proc.returncode != 0
    assert f"${variable}" in proc.stdout
    assert str(missing / subdir) in proc.stdout
    assert "Expected layout" in proc.stdout
    assert not (tmp_path / "work" / "data").exists()

    proc = run_stage1(corpus, tmp_path / "work", corpus_env())  # variable not set at all
    assert proc.returncode != 0
    assert f"${variable} is not set" in proc.stdout and "Expected layout" in proc.stdout


def test_fsdd_recipe_passes_its_options_to_the_data_prep(tmp_path: Path) -> None:
    """The FSDD recipe's own options reach local/fsdd_digits.py (a missing --fsdd_dir is named)."""
    missing = tmp_path / "no_recordings"
    proc = subprocess.run(
        [str(REPO / "egs2" / "fsdd_digits" / "asr1" / "run.sh"), "--workdir", str(tmp_path / "work"),
         "--stage", "1", "--stop_stage", "1", "--fsdd_dir", str(missing), "--num_train", "3"],
        env=corpus_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert f"FSDD recordings not found: {missing} does not exist" in proc.stdout
    assert "--num_train 3" in proc.stdout
