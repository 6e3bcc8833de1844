"""Small steps of the stage driver (egs2/TEMPLATE/asr1/asr.sh) that are easier in Python than in shell.

    python driver_utils.py speed_perturb --data_dir data/train --out_dir data/train_sp \
        --audio_dir dump/speed_perturb/train --factors 0.9 1.0 1.1 [--nj 4]
    python driver_utils.py filter_dir --in_dir dump/raw/org/train --out_dir dump/raw/train \
        --fs 16000 --min_wav_duration 0.1 --max_wav_duration 20
    python driver_utils.py bpe_token_list --text data/train/text --out_dir data/token_list/bpe_unigram30 \
        --nbpe 30 [--bpemode unigram] [--nlsyms "[unk]"]
    python driver_utils.py split_keys --key_file dump/raw/test/wav.scp --nj 4 --out_template DIR/keys.JOB.scp
    python driver_utils.py merge_decode --out_dir DIR/exit4 PART_DIR [PART_DIR ...]
    python driver_utils.py text_shape --in_file text_shape --out_file text_shape.bpe --token_list tokens.txt
    python driver_utils.py config_get --config exp/asr_x/config.yaml KEY.SUBKEY [--default X]

Every step that writes a directory writes ``<dir>.tmp`` first, renames it into place and leaves a
``.done`` marker in it, so an interrupted step leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

logger = logging.getLogger("driver_utils")

DONE = ".done"


# --------------------------------------------------------------------------------------
# Kaldi tables and atomic directories


def read_table(path: Path) -> dict[str, str]:
    """``<id> <value>`` lines -> dict in file order (the value may be empty or hold spaces)."""
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition(" ")
            if key:
                table[key] = value
    return table


def write_table(path: Path, pairs: dict[str, str] | Sequence[tuple[str, str]]) -> None:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    with open(path, "w", encoding="utf-8") as f:
        for key, value in sorted(items):
            f.write(f"{key} {value}\n")


def spk2utt_of(utt2spk: dict[str, str]) -> dict[str, str]:
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utt.items()}


class AtomicDir:
    """``with AtomicDir(final) as tmp:`` fill ``tmp`` (``<final>.tmp``); it replaces ``final`` on success."""

    def __init__(self, final: Path, info: dict | None = None) -> None:
        self.final = Path(final)
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self.info = info or {}

    def __enter__(self) -> Path:
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        (self.tmp / DONE).write_text(json.dumps(self.info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return False


def progress(items, total: int, desc: str) -> Iterator:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is an espnet dependency
        return iter(items)
    return iter(tqdm(items, total=total, desc=desc, unit="utt", mininterval=2.0))


# --------------------------------------------------------------------------------------
# stage 2: speed perturbation


def perturb_one(task: tuple[str, str, float | None, float | None, float, str]) -> tuple[str, int]:
    """Read one utterance (a segment or the whole file), change its speed, write it as flac.

    Speed factor f (sox ``speed f``): the samples are taken as if recorded at ``rate * f`` and
    resampled to ``rate``, so the audio lasts ``1/f`` as long and its pitch moves by ``f``.
    """
    import numpy as np
    import soundfile
    import soxr

    utt_id, path, start, end, factor, out_path = task
    with soundfile.SoundFile(path) as f:
        rate = f.samplerate
        first = 0 if start is None else int(round(start * rate))
        last = f.frames if end is None or end < 0 else min(f.frames, int(round(end * rate)))
        if last <= first:
            return utt_id, 0
        f.seek(first)
        audio = f.read(last - first, dtype="float32", always_2d=True)[:, 0]
    perturbed = soxr.resample(audio, rate * factor, rate, quality="HQ")
    pcm = np.clip(np.round(perturbed * 32768.0), -32768, 32767).astype(np.int16)
    soundfile.write(out_path, pcm, rate, format="FLAC", subtype="PCM_16")
    return utt_id, int(pcm.size)


def factor_name(factor: str) -> str:
    """ESPnet's prefix: ``0.9`` -> ``sp0.9``."""
    return f"sp{factor}"


def speed_perturb(data_dir: Path, out_dir: Path, audio_dir: Path, factors: Sequence[str], nj: int) -> None:
    """Write ``out_dir``: the utterances of ``data_dir`` once per factor.

    Factor 1.0 keeps the original utterances (same ids, same audio); any other factor f adds
    ``sp<f>-<utt>`` (speaker ``sp<f>-<spk>``) whose audio is written to ``audio_dir/sp<f>/``.
    When ``data_dir`` has ``segments``, the perturbed utterances are whole files and get the
    segment ``<utt> <utt> 0.00 -1`` (the whole recording).
    """
    data_dir, out_dir, audio_dir = Path(data_dir), Path(out_dir), Path(audio_dir).resolve()
    wav = read_table(data_dir / "wav.scp")
    text = read_table(data_dir / "text")
    utt2spk = read_table(data_dir / "utt2spk")
    segments = read_table(data_dir / "segments") if (data_dir / "segments").is_file() else None
    sources: dict[str, tuple[str, float | None, float | None]] = {}
    if segments is not None:
        for utt, value in segments.items():
            rec, start, end = value.split()
            sources[utt] = (wav[rec], float(start), float(end))
    else:
        sources = {utt: (path, None, None) for utt, path in wav.items()}
    utts = sorted(u for u in sources if u in text and u in utt2spk)

    out_wav: dict[str, str] = {}
    out_text: dict[str, str] = {}
    out_utt2spk: dict[str, str] = {}
    out_segments: dict[str, str] = {}
    counts: dict[str, int] = {}
    for factor in factors:
        value = float(factor)
        if value <= 0:
            raise ValueError(f"speed factor must be > 0, got {factor}")
        if value == 1.0:
            for utt in utts:
                out_text[utt], out_utt2spk[utt] = text[utt], utt2spk[utt]
            if segments is not None:
                out_segments.update({u: segments[u] for u in utts})
                out_wav.update({rec: wav[rec] for rec in {segments[u].split()[0] for u in utts}})
            else:
                out_wav.update({u: wav[u] for u in utts})
            counts[factor] = len(utts)
            continue
        prefix = factor_name(factor)
        folder = audio_dir / prefix
        tmp_folder = folder.with_name(folder.name + ".tmp")
        if (folder / DONE).is_file() and json.loads((folder / DONE).read_text()).get("utts") == len(utts):
            logger.info("%s is complete; reusing it", folder)
        else:
            if tmp_folder.exists():
                shutil.rmtree(tmp_folder)
            tmp_folder.mkdir(parents=True)
            tasks = [(u, *sources[u], value, str(tmp_folder / f"{prefix}-{u}.flac")) for u in utts]
            empty = []
            pool = multiprocessing.Pool(nj) if nj > 1 and len(tasks) > 1 else None
            try:
                results = pool.imap(perturb_one, tasks, chunksize=8) if pool else map(perturb_one, tasks)
                for utt, n in progress(results, len(tasks), f"speed {factor}"):
                    if n == 0:
                        empty.append(utt)
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
            if empty:
                raise ValueError(f"empty audio for {len(empty)} utterances, e.g. {empty[0]}")
            (tmp_folder / DONE).write_text(json.dumps({"utts": len(utts), "factor": factor}) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp_folder, folder)
        for utt in utts:
            new = f"{prefix}-{utt}"
            out_text[new] = text[utt]
            out_utt2spk[new] = f"{prefix}-{utt2spk[utt]}"
            out_wav[new] = str(folder / f"{new}.flac")
            if segments is not None:
                out_segments[new] = f"{new} 0.00 -1"
        counts[factor] = len(utts)

    info = {"data_dir": str(data_dir.resolve()), "factors": list(factors), "counts": counts}
    with AtomicDir(out_dir, info) as tmp:
        write_table(tmp / "wav.scp", out_wav)
        write_table(tmp / "text", out_text)
        write_table(tmp / "utt2spk", out_utt2spk)
        write_table(tmp / "spk2utt", spk2utt_of(out_utt2spk))
        if segments is not None:
            write_table(tmp / "segments", out_segments)
    logger.info("wrote %s: %d utterances (%s)", out_dir, len(out_text),
                ", ".join(f"x{f}: {n}" for f, n in counts.items()))


# --------------------------------------------------------------------------------------
# stage 4: duration filter


def filter_dir(in_dir: Path, out_dir: Path, fs: int, min_s: float, max_s: float) -> None:
    """Copy the dump dir ``in_dir`` to ``out_dir`` keeping utterances with
    ``min_s * fs < samples < max_s * fs`` and a non-empty transcript (as ESPnet's stage 4)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    num_samples = read_table(in_dir / "utt2num_samples")
    text = read_table(in_dir / "text")
    wav = read_table(in_dir / "wav.scp")
    utt2spk = read_table(in_dir / "utt2spk")
    lo, hi = int(min_s * fs), int(max_s * fs)
    short = {u for u, n in num_samples.items() if int(n) <= lo}
    long_ = {u for u, n in num_samples.items() if int(n) >= hi}
    empty = {u for u in wav if not text.get(u, "").strip()}
    keep = sorted(u for u in wav if u in num_samples and u not in short | long_ | empty and u in utt2spk)
    if not keep:
        raise ValueError(f"{in_dir}: no utterance left after the duration filter "
                         f"({min_s} s < duration < {max_s} s)")
    counts = {"input": len(wav), "kept": len(keep), "too_short": len(short), "too_long": len(long_),
              "empty_text": len(empty)}
    info = {"in_dir": str(in_dir.resolve()), "fs": fs, "min_wav_duration": min_s,
            "max_wav_duration": max_s, "counts": counts}
    with AtomicDir(out_dir, info) as tmp:
        for name, table in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk),
                            ("utt2num_samples", num_samples)):
            write_table(tmp / name, {u: table[u] for u in keep})
        write_table(tmp / "spk2utt", spk2utt_of({u: utt2spk[u] for u in keep}))
        for name in ("feats_type", "audio_format", "stm", "glm", "reco2file_and_channel"):
            if (in_dir / name).is_file():
                shutil.copyfile(in_dir / name, tmp / name)
    logger.info("%s -> %s: kept %d of %d utterances (%d <= %.2f s, %d >= %.2f s, %d with empty text)",
                in_dir, out_dir, len(keep), len(wav), len(short), min_s, len(long_), max_s, len(empty))


# --------------------------------------------------------------------------------------
# stage 5: sentencepiece model and token list


def bpe_token_list(text: Path, out_dir: Path, nbpe: int, bpemode: str, char_cover: float,
                   input_sentence_size: int, nlsyms: str, blank: str, oov: str, sos_eos: str) -> None:
    """Train ``bpe.model`` on the transcripts of ``text`` (a Kaldi text) and write ``tokens.txt``:
    ``<blank>``, ``<unk>``, the pieces without sentencepiece's own ``<unk> <s> </s>``, ``<sos/eos>``
    (ESPnet's asr.sh stage 5)."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    info = {"text": str(Path(text).resolve()), "nbpe": nbpe, "bpemode": bpemode, "char_cover": char_cover,
            "nlsyms": nlsyms}
    with AtomicDir(out_dir, info) as tmp:
        train_txt = tmp / "train.txt"
        with open(text, encoding="utf-8") as fin, open(train_txt, "w", encoding="utf-8") as fout:
            for line in fin:
                fout.write(line.rstrip("\n").partition(" ")[2] + "\n")
        options = dict(input=str(train_txt), vocab_size=nbpe, model_type=bpemode,
                       model_prefix=str(tmp / "bpe"), character_coverage=char_cover,
                       input_sentence_size=input_sentence_size, minloglevel=1)
        if nlsyms:
            options["user_defined_symbols"] = nlsyms
        spm.SentencePieceTrainer.train(**options)
        pieces = [line.split("\t")[0] for line in (tmp / "bpe.vocab").read_text(encoding="utf-8").splitlines()]
        tokens = [blank, oov, *pieces[3:], sos_eos]
        (tmp / "tokens.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    logger.info("wrote %s (%d tokens)", out_dir / "tokens.txt", len(tokens))


# --------------------------------------------------------------------------------------
# stages 10 and 12: splitting key files, merging decoding outputs


def split_keys(key_file: Path, nj: int, out_template: str) -> None:
    """Split the lines of ``key_file`` into ``nj`` contiguous parts ``out_template`` (JOB -> 1..nj);
    part sizes differ by at most one line (as Kaldi's split_scp.pl)."""
    lines = Path(key_file).read_text(encoding="utf-8").splitlines(keepends=True)
    nj = max(1, min(nj, len(lines)))
    base, extra = divmod(len(lines), nj)
    start = 0
    for j in range(1, nj + 1):
        size = base + (1 if j <= extra else 0)
        out = Path(out_template.replace("JOB", str(j)))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(lines[start:start + size]), encoding="utf-8")
        start += size


TABLE_FILES = ("text", "token", "token_int", "score", "exit", "confidence")


def merge_timing(parts: Sequence[dict]) -> dict:
    """Sum the per-job timings: numbers are added (wall and audio seconds, counts), and the real
    time factor is recomputed as wall / audio."""
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    wall = next((merged[k] for k in ("wall_seconds", "wall", "wall_s", "wall_time") if k in merged), None)
    audio = next((merged[k] for k in ("audio_seconds", "audio", "audio_s", "audio_duration") if k in merged), None)
    if wall is not None and audio:
        merged["rtf"] = wall / audio
    else:
        merged.pop("rtf", None)  # a sum of ratios means nothing
    merged["num_jobs"] = len(parts)
    return merged


def merge_decode(part_dirs: Sequence[Path], out_dir: Path) -> None:
    """Merge the decoding outputs of the jobs (``1best_recog/*`` or files at the top, plus
    ``exit``, ``confidence``, ``timing.json``) into ``out_dir``, lines sorted by utterance id."""
    part_dirs = [Path(p) for p in part_dirs]
    info = {"parts": [str(p) for p in part_dirs]}
    with AtomicDir(out_dir, info) as tmp:
        for name in TABLE_FILES:
            lines: list[str] = []
            found = False
            for part in part_dirs:
                for candidate in (part / "1best_recog" / name, part / name):
                    if candidate.is_file():
                        lines += candidate.read_text(encoding="utf-8").splitlines(keepends=True)
                        found = True
                        break
            if found:
                lines = [line if line.endswith("\n") else line + "\n" for line in lines]
                lines.sort(key=lambda line: line.split(" ", 1)[0])
                (tmp / name).write_text("".join(lines), encoding="utf-8")
        if not (tmp / "text").is_file():
            raise FileNotFoundError(f"no text (nor 1best_recog/text) in {part_dirs[0]}")
        timings = [json.loads((p / "timing.json").read_text()) for p in part_dirs if (p / "timing.json").is_file()]
        if timings:
            (tmp / "timing.json").write_text(json.dumps(merge_timing(timings), indent=1) + "\n", encoding="utf-8")
    logger.info("merged %d job outputs into %s", len(part_dirs), out_dir)


def text_shape(in_file: Path, out_file: Path, token_list: Path) -> None:
    """ESPnet's ``text_shape.<token_type>``: each shape line gets ``,<vocabulary size>`` appended."""
    n = len(Path(token_list).read_text(encoding="utf-8").splitlines())
    lines = Path(in_file).read_text(encoding="utf-8").splitlines()
    Path(out_file).write_text("".join(f"{line},{n}\n" for line in lines if line.strip()), encoding="utf-8")


def config_get(config: Path, key: str, default: str | None) -> str:
    """A value of a YAML config, by dotted key; lists print space-separated."""
    import yaml

    with open(config, encoding="utf-8") as f:
        value = yaml.safe_load(f) or {}
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            if default is None:
                raise KeyError(f"{config}: no {key}")
            return default
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("speed_perturb", help="stage 2: speed-perturbed copy of a Kaldi data dir")
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--audio_dir", type=Path, required=True, help="perturbed flac files go here")
    p.add_argument("--factors", nargs="+", required=True)
    p.add_argument("--nj", type=int, default=1)

    p = sub.add_parser("filter_dir", help="stage 4: drop too short/long utterances and empty transcripts")
    p.add_argument("--in_dir", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--fs", type=int, required=True)
    p.add_argument("--min_wav_duration", type=float, required=True)
    p.add_argument("--max_wav_duration", type=float, required=True)

    p = sub.add_parser("bpe_token_list", help="stage 5: sentencepiece model + token list")
    p.add_argument("--text", type=Path, required=True, help="Kaldi text (<utt> <words>)")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--nbpe", type=int, required=True)
    p.add_argument("--bpemode", default="unigram", choices=("unigram", "bpe", "char", "word"))
    p.add_argument("--char_cover", type=float, default=1.0)
    p.add_argument("--input_sentence_size", type=int, default=100000000)
    p.add_argument("--nlsyms", default="", help="comma-separated user-defined symbols")
    p.add_argument("--blank", default="<blank>")
    p.add_argument("--oov", default="<unk>")
    p.add_argument("--sos_eos", default="<sos/eos>")

    p = sub.add_parser("split_keys", help="split a key file into nj parts")
    p.add_argument("--key_file", type=Path, required=True)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("--out_template", required=True, help="output path with JOB for the part number")

    p = sub.add_parser("merge_decode", help="merge the decoding outputs of parallel jobs")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("parts", type=Path, nargs="+")

    p = sub.add_parser("text_shape", help="append the vocabulary size to text shapes")
    p.add_argument("--in_file", type=Path, required=True)
    p.add_argument("--out_file", type=Path, required=True)
    p.add_argument("--token_list", type=Path, required=True)

    p = sub.add_parser("config_get", help="print a value of a YAML config")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--default", default=None)
    p.add_argument("key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    commands: dict[str, Callable[[], object]] = {
        "speed_perturb": lambda: speed_perturb(args.data_dir, args.out_dir, args.audio_dir, args.factors, args.nj),
        "filter_dir": lambda: filter_dir(args.in_dir, args.out_dir, args.fs, args.min_wav_duration,
                                         args.max_wav_duration),
        "bpe_token_list": lambda: bpe_token_list(args.text, args.out_dir, args.nbpe, args.bpemode, args.char_cover,
                                                 args.input_sentence_size, args.nlsyms, args.blank, args.oov,
                                                 args.sos_eos),
        "split_keys": lambda: split_keys(args.key_file, args.nj, args.out_template),
        "merge_decode": lambda: merge_decode(args.parts, args.out_dir),
        "text_shape": lambda: text_shape(args.in_file, args.out_file, args.token_list),
        "config_get": lambda: print(config_get(args.config, args.key, args.default)),
    }
    try:
        commands[args.command]()
    except (ValueError, KeyError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
