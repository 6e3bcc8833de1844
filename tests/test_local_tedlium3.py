"""local/tedlium3.py on a tiny tree in the real TED-LIUM 3 legacy layout (NIST sphere + STM)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import soundfile

from _corpus_trees import leftovers, make_tedlium3, tree_digest

from local import tedlium3
from local.common import CorpusError, validate_kaldi_dir


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_tedlium3(tmp_path / "corpus")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def sph(corpus: Path, set_name: str, talk: str) -> str:
    return str((corpus / "TEDLIUM_release-3" / "legacy" / set_name / "sph" / f"{talk}.sph").resolve())


HEADER = [
    ";;",
    ';; LABEL "o" "Overall" "Overall results"',
    ';; LABEL "f0" "f0" "Wideband channel"',
    ';; LABEL "f2" "f2" "Telephone channel"',
    ';; LABEL "male" "Male" "Male Talkers"',
    ';; LABEL "female" "Female" "Female Talkers"',
    ";;",
]


def test_sphere_fixture_is_real_nist(corpus: Path) -> None:
    info = soundfile.info(sph(corpus, "train", "TalkA_2010"))
    assert (info.format, info.subtype, info.samplerate) == ("NIST", "PCM_16", 16000)


def test_train_line_by_line(corpus: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    out = tmp_path / "data"
    result = tedlium3.prepare_tedlium3(corpus, out, sets=["train"])
    d = out / "train"
    assert lines(d / "text") == [
        "TalkA_2010-0000000-0000150 hello world",
        "TalkA_2010-0000200-0000325 that's [NOISE] what i <unk> said",
        "TalkA_2010-0000410-0000582 we're done [BREATH]",   # 5.82*100 rounded, not truncated to 581
        "TalkB_2011-0000020-0000090 first line",
        "TalkB_2011-0000100-0000200 second line",
    ]
    # train segments padded by 0.15 s / 0.10 s, at most half the gap to the neighbour, inside the audio
    assert lines(d / "segments") == [
        "TalkA_2010-0000000-0000150 TalkA_2010 0.00 1.60",
        "TalkA_2010-0000200-0000325 TalkA_2010 1.85 3.35",
        "TalkA_2010-0000410-0000582 TalkA_2010 3.95 5.92",
        "TalkB_2011-0000020-0000090 TalkB_2011 0.05 0.95",
        "TalkB_2011-0000100-0000200 TalkB_2011 0.95 2.10",
    ]
    assert lines(d / "wav.scp") == [
        f"TalkA_2010 {sph(corpus, 'train', 'TalkA_2010')}",
        f"TalkB_2011 {sph(corpus, 'train', 'TalkB_2011')}",
    ]
    assert lines(d / "utt2spk") == [
        "TalkA_2010-0000000-0000150 TalkA_2010",
        "TalkA_2010-0000200-0000325 TalkA_2010",
        "TalkA_2010-0000410-0000582 TalkA_2010",
        "TalkB_2011-0000020-0000090 TalkB_2011",
        "TalkB_2011-0000100-0000200 TalkB_2011",
    ]
    assert lines(d / "spk2utt") == [
        "TalkA_2010 TalkA_2010-0000000-0000150 TalkA_2010-0000200-0000325 TalkA_2010-0000410-0000582",
        "TalkB_2011 TalkB_2011-0000020-0000090 TalkB_2011-0000100-0000200",
    ]
    assert lines(d / "stm") == HEADER + [
        "TalkA_2010 A TalkA_2010 0.00 1.50 <o,f0,male> hello world",
        "TalkA_2010 A inter_segment_gap 1.50 2.00 <o,,unknown> ignore_time_segment_in_scoring",
        "TalkA_2010 A TalkA_2010 2.00 3.25 <o,f0,male> that's [NOISE] what i <unk> said",
        "TalkA_2010 A TalkA_2010 4.10 5.82 <o,f0,male> we're done [BREATH]",
        "TalkB_2011 A TalkB_2011 0.20 0.90 <o,f0,female> first line",   # sorted by start time
        "TalkB_2011 A TalkB_2011 1.00 2.00 <o,f0,female> second line",
    ]
    assert lines(d / "glm") == [";; empty.glm", "  [FAKE]     =>  %HESITATION     / [ ] __ [ ] ;; hesitation token"]
    assert lines(d / "reco2file_and_channel") == ["TalkA_2010 TalkA_2010 A", "TalkB_2011 TalkB_2011 A"]
    validate_kaldi_dir(d)
    # three malformed STM lines: non-numeric end, end <= start, fewer than 6 fields
    assert result["train"].skipped == {"bad_line": 3}
    assert "non-numeric times" in caplog.text and "bad times" in caplog.text and "fewer than 6" in caplog.text


def test_dev_and_test_line_by_line(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    tedlium3.prepare_tedlium3(corpus, out, sets=["dev", "test"])
    assert lines(out / "dev" / "text") == [
        "TalkC_2012-0000050-0000175 it's [SMACK] fine",
        "TalkC_2012-0000250-0000390 [COUGH] um okay",
    ]
    assert lines(out / "dev" / "segments") == [  # no padding outside train
        "TalkC_2012-0000050-0000175 TalkC_2012 0.50 1.75",
        "TalkC_2012-0000250-0000390 TalkC_2012 2.50 3.90",
    ]
    assert lines(out / "dev" / "wav.scp") == [f"TalkC_2012 {sph(corpus, 'dev', 'TalkC_2012')}"]
    assert lines(out / "dev" / "stm")[len(HEADER):] == [  # dev labels <F0_M> made like train/test
        "TalkC_2012 A TalkC_2012 0.50 1.75 <o,f0,male> it's [SMACK] fine",
        "TalkC_2012 A inter_segment_gap 1.75 2.50 <o,,unknown> ignore_time_segment_in_scoring",
        "TalkC_2012 A TalkC_2012 2.50 3.90 <o,f0,male> [COUGH] um okay",
    ]
    assert lines(out / "test" / "text") == ["TalkD_2013-0000010-0000190 the end"]
    assert lines(out / "test" / "segments") == ["TalkD_2013-0000010-0000190 TalkD_2013 0.10 1.90"]
    assert lines(out / "test" / "spk2utt") == ["TalkD_2013 TalkD_2013-0000010-0000190"]


def test_options_unk_symbol_and_no_padding(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    tedlium3.prepare_tedlium3(corpus, out, sets=["train"], unk_symbol="[unk]", train_padding=(0.0, 0.0))
    assert "TalkA_2010-0000200-0000325 that's [NOISE] what i [unk] said" in lines(out / "train" / "text")
    assert lines(out / "train" / "segments")[:2] == [
        "TalkA_2010-0000000-0000150 TalkA_2010 0.00 1.50",
        "TalkA_2010-0000200-0000325 TalkA_2010 2.00 3.25",
    ]


def test_normalise_words() -> None:
    norm = tedlium3.normalise_words
    assert norm("that 's it".split()) == ["that's", "it"]
    assert norm("'cause we 're here".split()) == ["'cause", "we're", "here"]  # nothing to join onto
    assert norm("hello(2) <sil> world (Talk-001)".split()) == ["hello", "world"]
    assert norm("{NOISE} {UH} {UM} <unk>".split()) == ["[NOISE]", "[UH]", "[UM]", "<unk>"]


def test_corpus_untouched_rerun_idempotent(corpus: Path, tmp_path: Path) -> None:
    before = tree_digest(corpus)
    out = tmp_path / "data"
    first = tedlium3.prepare_tedlium3(corpus, out)
    assert sorted(first) == ["dev", "test", "train"]
    written = tree_digest(out)
    second = tedlium3.prepare_tedlium3(corpus, out)
    assert all(s.reused for s in second.values())
    assert second["train"].skipped == {"bad_line": 3}
    assert tree_digest(out) == written
    tedlium3.prepare_tedlium3(corpus, out, force=True)
    assert tree_digest(out) == written
    assert tree_digest(corpus) == before
    assert leftovers(tmp_path) == []
    with pytest.raises(CorpusError, match="--force"):
        tedlium3.prepare_tedlium3(corpus, out, sets=["train"], unk_symbol="[unk]")


def test_missing_root_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        tedlium3.prepare_tedlium3(tmp_path / "nowhere", tmp_path / "data")
    message = str(e.value)
    assert str(tmp_path / "nowhere" / "TEDLIUM_release-3" / "legacy") in message
    assert "TEDLIUM_release-3/legacy/{train,dev,test}/sph/<talk>.sph" in message
    assert "stm/<talk>.stm" in message


def test_missing_sphere_names_file(corpus: Path, tmp_path: Path) -> None:
    missing = corpus / "TEDLIUM_release-3" / "legacy" / "train" / "sph" / "TalkB_2011.sph"
    missing.unlink()
    with pytest.raises(CorpusError) as e:
        tedlium3.prepare_tedlium3(corpus, tmp_path / "data", sets=["train"])
    assert str(missing) in str(e.value)
    assert not (tmp_path / "data" / "train").exists()
    assert leftovers(tmp_path) == []


def test_missing_set_folder(corpus: Path, tmp_path: Path) -> None:
    shutil.rmtree(corpus / "TEDLIUM_release-3" / "legacy" / "test")
    with pytest.raises(CorpusError, match="legacy/test"):
        tedlium3.prepare_tedlium3(corpus, tmp_path / "data")


def test_cli(corpus: Path, tmp_path: Path) -> None:
    assert tedlium3.main(["--corpus_dir", str(corpus), "--output_dir", str(tmp_path / "data"),
                          "--sets", "test"]) == 0
    assert lines(tmp_path / "data" / "test" / "text") == ["TalkD_2013-0000010-0000190 the end"]
    assert tedlium3.main(["--corpus_dir", str(tmp_path / "none"), "--output_dir", str(tmp_path / "d")]) == 1
