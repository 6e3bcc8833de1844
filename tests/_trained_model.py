"""A real, tiny early-exit model trained on mini_an4, laid out like a recipe's working dir.

``train_tiny_mini_an4(root)`` prepares mini_an4 (from the espnet wheel, local/mini_an4.py),
trains a small sentencepiece model (so the packed model must carry a bpe.model that its
config refers to), trains ``conf/tuning/train_ee_conformer_tiny.yaml`` for a few epochs with
``python -m espnet_early_exit.bin.asr_train`` (cwd = ``root``, relative paths, as a recipe
runs it) and returns a :class:`TrainedModel`::

    root/data/{train,dev,test}/             Kaldi dirs
    root/data/token_list/bpe_unigram30/     bpe.model, tokens.txt
    root/exp/asr_stats/                     collect_stats output
    root/exp/asr_tiny/                      config.yaml, <n>epoch.pth, valid.loss.ave.pth ...

``decode_and_score(model)`` then decodes the test set at every exit (greedy CTC, in this
process), scores it, writes exit_costs.json and RESULTS.md (+ plots) with
``espnet_early_exit.results.make_results``: the experiment dir a recipe has after stage 13.

Used by module-scoped fixtures (tests/test_zoo.py, test_zoo_learned.py, test_onnx.py, test_onnx_recipe.py); takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "conf" / "tuning" / "train_ee_conformer_tiny.yaml"
BPE_DIR = Path("data") / "token_list" / "bpe_unigram30"
EXP = Path("exp") / "asr_tiny"
DECODE = "decode_asr_greedy"


@dataclass
class TrainedModel:
    root: Path  # the recipe working dir (cwd of every command)
    exp_dir: Path  # root / exp/asr_tiny
    config: Path  # exp_dir / config.yaml
    model_file: Path  # exp_dir / valid.loss.ave.pth (or the last epoch)
    bpemodel: Path
    token_list: Path
    test_dir: Path  # root / data/test
    # filled by decode_and_score: {exit: {utt: (text, token_int, score)}}
    hyps: Dict[int, Dict[str, Tuple[str, List[int], float]]] = field(default_factory=dict)


def _env() -> dict:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        OMP_NUM_THREADS="2",
    )


def _run(cmd: List[str], cwd: Path, timeout: int = 900) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )


def _train_bpe(root: Path) -> Tuple[Path, Path]:
    import sentencepiece as spm

    bpe_dir = root / BPE_DIR
    bpe_dir.mkdir(parents=True, exist_ok=True)
    texts = []
    for line in (root / "data" / "train" / "text").read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            texts.append(parts[1])
    (bpe_dir / "train.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(bpe_dir / "train.txt"),
        model_prefix=str(bpe_dir / "bpe"),
        vocab_size=30,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(bpe_dir / "bpe.model"))
    # ESPnet's token list: <blank>, <unk>, the pieces, <sos/eos> last
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    pieces = [p for p in pieces if p not in ("<unk>", "<s>", "</s>")]
    tokens = ["<blank>", "<unk>", *pieces, "<sos/eos>"]
    (bpe_dir / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return bpe_dir / "bpe.model", bpe_dir / "tokens.txt"


def train_tiny_mini_an4(root: Path, epochs: int = 3) -> TrainedModel:
    """Prepare mini_an4 under ``root`` and train the tiny early-exit model there."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    from local import mini_an4

    corpus = mini_an4.download_mini_an4(root / "downloads")
    mini_an4.prepare_mini_an4(corpus, root / "data")
    bpemodel, token_list = _train_bpe(root)

    train = [sys.executable, "-m", "espnet_early_exit.bin.asr_train"]
    common = [
        "--use_preprocessor", "true", "--token_type", "bpe",
        "--bpemodel", str(bpemodel.relative_to(root)),
        "--token_list", str(token_list.relative_to(root)),
        "--non_linguistic_symbols", "none", "--cleaner", "none", "--g2p", "none",
        "--config", str(TINY_CONFIG), "--ngpu", "0", "--num_workers", "0",
        "--train_data_path_and_name_and_type", "data/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", "data/train/text,text,text",
        "--valid_data_path_and_name_and_type", "data/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", "data/dev/text,text,text",
    ]
    _run(train + common + [
        "--collect_stats", "true",
        "--train_shape_file", "data/train/wav.scp", "--valid_shape_file", "data/dev/wav.scp",
        "--output_dir", "exp/asr_stats",
    ], cwd=root)
    _run(train + common + [
        "--max_epoch", str(epochs), "--fold_length", "80000", "--fold_length", "150",
        "--train_shape_file", "exp/asr_stats/train/speech_shape",
        "--train_shape_file", "exp/asr_stats/train/text_shape",
        "--valid_shape_file", "exp/asr_stats/valid/speech_shape",
        "--valid_shape_file", "exp/asr_stats/valid/text_shape",
        "--output_dir", str(EXP),
    ], cwd=root)

    exp_dir = root / EXP
    model_file = exp_dir / "valid.loss.ave.pth"
    if not model_file.exists():
        model_file = exp_dir / f"{epochs}epoch.pth"
    return TrainedModel(
        root=root, exp_dir=exp_dir, config=exp_dir / "config.yaml", model_file=model_file,
        bpemodel=bpemodel, token_list=token_list, test_dir=root / "data" / "test",
    )


def read_test_set(test_dir: Path):
    """[(utt, waveform float32, fs, reference)] of a Kaldi dir (wav.scp with plain paths)."""
    import soundfile

    refs = {}
    for line in (test_dir / "text").read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        refs[parts[0]] = parts[1] if len(parts) > 1 else ""
    out = []
    for line in (test_dir / "wav.scp").read_text(encoding="utf-8").splitlines():
        utt, path = line.split(maxsplit=1)
        wav, fs = soundfile.read(path, dtype="float32")
        out.append((utt, wav, fs, refs.get(utt, "")))
    return out


def decode_every_exit(speech2text, test_dir: Path):
    """{exit: {utt: (text, token_int, score)}} of the best hypothesis at every exit."""
    hyps: Dict[int, Dict[str, Tuple[str, List[int], float]]] = {}
    for utt, wav, fs, _ in read_test_set(test_dir):
        for k, results in speech2text.decode_all_exits(wav, fs=fs).items():
            best = results[0]
            hyps.setdefault(k, {})[utt] = (
                best.text or "", [int(t) for t in best.token_int], float(best.score)
            )
    return hyps


def decode_and_score(model: TrainedModel) -> TrainedModel:
    """Decode the test set at every exit (greedy CTC), score, exit costs, RESULTS.md."""
    from espnet_early_exit.costs import exit_costs_from_files, write_exit_costs
    from espnet_early_exit.inference import EarlyExitSpeech2Text
    from espnet_early_exit.results import make_results
    from espnet_early_exit.scoring import score_decode_dir

    cwd = os.getcwd()
    os.chdir(model.root)  # the config's bpemodel path is relative to the recipe dir
    try:
        s2t = EarlyExitSpeech2Text(
            str(model.config), str(model.model_file), beam_size=1, ctc_weight=1.0, nbest=1
        )
        model.hyps = decode_every_exit(s2t, model.test_dir)
    finally:
        os.chdir(cwd)
    for k, by_utt in model.hyps.items():
        out = model.exp_dir / DECODE / "test" / f"exit{k}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "text").write_text(
            "".join(f"{u} {by_utt[u][0]}".rstrip() + "\n" for u in sorted(by_utt)),
            encoding="utf-8",
        )
        score_decode_dir(model.test_dir / "text", out, units=("word", "char"), tool="python")
    write_exit_costs(
        exit_costs_from_files(model.config, model.model_file, seconds=2.0),
        model.exp_dir / "exit_costs.json",
    )
    make_results(model.exp_dir)
    return model
