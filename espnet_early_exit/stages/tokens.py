"""Stage 5 (sentencepiece model and token list) and the text shapes of stage 10."""

from __future__ import annotations

import logging
from pathlib import Path

from espnet_early_exit.fileio import atomic_directory
from espnet_early_exit.stages.markers import write_done_marker

logger = logging.getLogger(__name__)


def bpe_token_list(text: Path, out_dir: Path, nbpe: int, bpemode: str, char_cover: float,
                   input_sentence_size: int, nlsyms: str, blank: str, oov: str, sos_eos: str) -> None:
    """Train ``bpe.model`` on the transcripts of ``text`` (a Kaldi text) and write ``tokens.txt``:
    ``<blank>``, ``<unk>``, the pieces without sentencepiece's own ``<unk> <s> </s>``, ``<sos/eos>``
    (ESPnet's asr.sh stage 5)."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    info = {"text": str(Path(text).resolve()), "nbpe": nbpe, "bpemode": bpemode, "char_cover": char_cover,
            "nlsyms": nlsyms}
    with atomic_directory(out_dir) as tmp:
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
        write_done_marker(tmp, info)
    logger.info("wrote %s (%d tokens)", out_dir / "tokens.txt", len(tokens))


def text_shape(in_file: Path, out_file: Path, token_list: Path) -> None:
    """ESPnet's ``text_shape.<token_type>``: each shape line gets ``,<vocabulary size>`` appended."""
    n = len(Path(token_list).read_text(encoding="utf-8").splitlines())
    lines = Path(in_file).read_text(encoding="utf-8").splitlines()
    Path(out_file).write_text("".join(f"{line},{n}\n" for line in lines if line.strip()), encoding="utf-8")
