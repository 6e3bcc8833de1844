"""espnet_early_exit.stages.format_audio (stage 3): segment cutting, rate/corrupt-file errors, skips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile

from _corpus_trees import leftovers, tone, tree_digest, write_audio

from espnet_early_exit.bin import stage
from espnet_early_exit.stages.format_audio import AudioFormatError, format_data_dir


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_dir(d: Path, **files: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (d / name.replace("wav_scp", "wav.scp")).write_text("".join(f"{x}\n" for x in content))
    return d


@pytest.fixture
def talk(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 3 s NIST sphere 'talk' with a known signal."""
    audio = tone(3.0, seed=3)
    return write_audio(tmp_path / "corpus" / "talk1.sph", audio, fmt="NIST"), audio


@pytest.fixture
def segments_dir(tmp_path: Path, talk) -> Path:
    path, _ = talk
    return write_dir(
        tmp_path / "data" / "dev",
        wav_scp=[f"talk1 {path}"],
        segments=["talk1-0000050-0000125 talk1 0.50 1.25", "talk1-0000200-0000290 talk1 2.00 2.90"],
        text=["talk1-0000050-0000125 hello there", "talk1-0000200-0000290 general kenobi"],
        utt2spk=["talk1-0000050-0000125 talk1", "talk1-0000200-0000290 talk1"],
        spk2utt=["talk1 talk1-0000050-0000125 talk1-0000200-0000290"],
        stm=[";; stm header"],
    )


def test_segments_are_cut_exactly(segments_dir: Path, tmp_path: Path, talk) -> None:
    _, source = talk
    out = tmp_path / "dump" / "raw" / "dev"
    counts = format_data_dir(segments_dir, out)
    assert counts == {"written": 2}
    assert lines(out / "utt2num_samples") == ["talk1-0000050-0000125 12000", "talk1-0000200-0000290 14400"]
    assert lines(out / "wav.scp") == [
        f"talk1-0000050-0000125 {out.resolve()}/data/talk1-0000050-0000125.flac",
        f"talk1-0000200-0000290 {out.resolve()}/data/talk1-0000200-0000290.flac",
    ]
    audio, rate = soundfile.read(str(out / "data" / "talk1-0000050-0000125.flac"), dtype="int16")
    assert rate == 16000 and np.array_equal(audio, source[8000:20000])
    info = soundfile.info(str(out / "data" / "talk1-0000200-0000290.flac"))
    assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_16", 14400)
    assert lines(out / "text") == lines(segments_dir / "text")
    assert lines(out / "utt2spk") == lines(segments_dir / "utt2spk")
    assert lines(out / "spk2utt") == lines(segments_dir / "spk2utt")
    assert lines(out / "feats_type") == ["raw"]
    assert lines(out / "stm") == [";; stm header"]  # scoring files copied as they are
    assert not (out / "segments").exists()


def test_whole_files_wav_and_parallel(tmp_path: Path) -> None:
    paths = [write_audio(tmp_path / "c" / f"u{i}.wav", tone(0.1 * (i + 1), seed=i), fmt="WAV") for i in range(4)]
    d = write_dir(
        tmp_path / "data" / "x",
        wav_scp=[f"s-u{i} {p}" for i, p in enumerate(paths)],
        text=[f"s-u{i} WORD" for i in range(4)],
        utt2spk=[f"s-u{i} s" for i in range(4)],
        spk2utt=["s s-u0 s-u1 s-u2 s-u3"],
    )
    format_data_dir(d, tmp_path / "one", nj=1)
    format_data_dir(d, tmp_path / "two", nj=2)
    assert lines(tmp_path / "one" / "utt2num_samples") == [f"s-u{i} {1600 * (i + 1)}" for i in range(4)]
    one, two = tree_digest(tmp_path / "one" / "data"), tree_digest(tmp_path / "two" / "data")
    assert one == two
    format_data_dir(d, tmp_path / "w", audio_format="wav")
    assert soundfile.info(str(tmp_path / "w" / "data" / "s-u0.wav")).format == "WAV"


def test_wrong_rate_is_an_error_naming_file_unless_resample(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "c" / "eight.wav", tone(0.5, sr=8000), sr=8000, fmt="WAV")
    d = write_dir(tmp_path / "data" / "x", wav_scp=[f"s-a {path}"], text=["s-a WORD"],
                  utt2spk=["s-a s"], spk2utt=["s s-a"])
    with pytest.raises(AudioFormatError) as e:
        format_data_dir(d, tmp_path / "out")
    assert str(path) in str(e.value) and "8000" in str(e.value) and "--resample" in str(e.value)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    format_data_dir(d, tmp_path / "out", resample=True)
    assert lines(tmp_path / "out" / "utt2num_samples") == ["s-a 8000"]
    assert soundfile.info(str(tmp_path / "out" / "data" / "s-a.flac")).samplerate == 16000


@pytest.fixture
def with_corrupt(tmp_path: Path) -> tuple[Path, Path]:
    good = write_audio(tmp_path / "c" / "good.flac", tone(0.2))
    bad = tmp_path / "c" / "bad.flac"
    bad.write_bytes(b"fLaC\x00\x00 this is not audio")
    d = write_dir(
        tmp_path / "data" / "x",
        wav_scp=[f"s-bad {bad}", f"s-good {good}"],
        text=["s-bad WORD", "s-good WORD"],
        utt2spk=["s-bad s", "s-good s"],
        spk2utt=["s s-bad s-good"],
    )
    return d, bad


def test_corrupt_file_error_names_file(with_corrupt, tmp_path: Path) -> None:
    d, bad = with_corrupt
    with pytest.raises(AudioFormatError, match="bad.flac") as e:
        format_data_dir(d, tmp_path / "out")
    assert str(bad) in str(e.value)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_skip_bad_counts_and_filters(with_corrupt, tmp_path: Path, caplog) -> None:
    d, bad = with_corrupt
    caplog.set_level(logging.WARNING)
    counts = format_data_dir(d, tmp_path / "out", skip_bad=True)
    assert counts == {"bad_audio": 1, "written": 1}
    assert str(bad) in caplog.text
    for name in ("wav.scp", "text", "utt2spk", "utt2num_samples"):
        assert [x.split()[0] for x in lines(tmp_path / "out" / name)] == ["s-good"]
    assert lines(tmp_path / "out" / "spk2utt") == ["s s-good"]


def test_multichannel_empty_and_overlong_segments(tmp_path: Path, caplog) -> None:
    stereo = np.stack([tone(1.0, seed=1), tone(1.0, seed=2)], axis=1)
    path = write_audio(tmp_path / "c" / "rec.wav", stereo, fmt="WAV")
    d = write_dir(
        tmp_path / "data" / "x",
        wav_scp=[f"rec {path}"],
        segments=["rec-a rec 0.00 0.50", "rec-b rec 1.20 1.50", "rec-c rec 0.90 1.30"],
        text=["rec-a A", "rec-b B", "rec-c C"],
        utt2spk=["rec-a rec", "rec-b rec", "rec-c rec"],
        spk2utt=["rec rec-a rec-b rec-c"],
    )
    caplog.set_level(logging.WARNING)
    counts = format_data_dir(d, tmp_path / "out")
    assert counts["empty_segment"] == 1 and counts["written"] == 2 and counts["multi_channel"] == 2
    assert "rec-b" in caplog.text and "channel 0" in caplog.text
    # rec-c ends 0.3 s after the recording: cut at its end
    assert lines(tmp_path / "out" / "utt2num_samples") == ["rec-a 8000", "rec-c 1600"]
    audio, _ = soundfile.read(str(tmp_path / "out" / "data" / "rec-a.flac"), dtype="int16")
    assert np.array_equal(audio, stereo[:8000, 0])


def test_idempotent_atomic_and_changed_input(segments_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump" / "dev"
    format_data_dir(segments_dir, out)
    written = tree_digest(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert format_data_dir(segments_dir, out) == {"written": 2}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    format_data_dir(segments_dir, out, force=True)
    assert tree_digest(out) == written
    assert leftovers(tmp_path) == []
    (segments_dir / "text").write_text("talk1-0000050-0000125 changed\ntalk1-0000200-0000290 too\n")
    with pytest.raises(AudioFormatError, match="--force"):
        format_data_dir(segments_dir, out)


def test_pipes_refused(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "d", wav_scp=["s-a sox x.wav -t wav - |"], text=["s-a W"], utt2spk=["s-a s"],
                  spk2utt=["s s-a"])
    with pytest.raises(AudioFormatError, match="plain file path"):
        format_data_dir(d, tmp_path / "out")


def test_repeated_id_names_file_and_line(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "d", wav_scp=["s-a /x/a.flac", "s-a /x/b.flac"], text=["s-a W"], utt2spk=["s-a s"],
                  spk2utt=["s s-a"])
    with pytest.raises(AudioFormatError, match=r"wav\.scp:2: .*'s-a'"):
        format_data_dir(d, tmp_path / "out")


def test_cli(segments_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump" / "raw" / "dev"
    assert stage.main(["format_audio", "--data_dir", str(segments_dir), "--out_dir", str(out), "--fs", "16000",
                       "--audio_format", "flac", "--nj", "1"]) == 0
    assert (out / ".done").is_file()
    assert stage.main(["format_audio", "--data_dir", str(tmp_path / "nothing"), "--out_dir", str(tmp_path / "o")]) == 1
