"""WER/CER scoring (sclite or an in-Python fallback), RESULTS.md and plots.

Scoring follows the scoring stage of ESPnet's ``egs2/TEMPLATE/asr1/asr.sh``:

* Kaldi ``text`` files (``<uttid> <words>``) become sclite ``trn`` files
  (``<tokens>\\t(<spk>-<uttid>)``, one line per reference utterance, in reference order).
  Word level (WER): whitespace-separated words.  Character level (CER): every
  character is a token and a word boundary is the token ``<space>``.
  The speaker comes from ``utt2spk`` (next to the reference ``text`` unless given),
  as asr.sh does; without it the part of the utterance id before its first ``-``.
* sclite is run as ``sclite -r ref.trn trn -h hyp.trn trn -i rm -o all stdout``
  (with ``LC_ALL=C``) and its output is kept as ``result.txt``.
* Without sclite, a Python aligner gives the same counts: it is a weighted
  Levenshtein alignment with sclite's default costs (correct 0, substitution 4,
  insertion 3, deletion 3) and sclite's tie-breaking (from the end: diagonal,
  then insertion, then deletion), comparing tokens case-insensitively for ASCII
  letters only (sclite's default without ``-s``/``-e``).
  WER = (S + D + I) / N_ref * 100, counts summed over utterances.

Text normalisation (all optional; the defaults change nothing, like asr.sh with
``cleaner=none`` and ``nlsyms_txt=none``):

* ``cleaner``: ``"none"`` or an ESPnet ``TextCleaner`` name (e.g. ``tacotron``,
  ``whisper_en``); applied to the reference only, as asr.sh does.
* ``nlsyms``: tokens (or a file with one per line, ESPnet's ``nlsyms_txt``) removed
  from reference and hypothesis words before scoring.
* ``remove_nonlexical``: also remove every word written wholly in braces, brackets
  or angle brackets, e.g. ``{NOISE}``, ``[laughter]``, ``<unk>``.

Removal is done on words before characters are split, so a removed symbol never
leaves a doubled ``<space>`` (ESPnet's char tokenizer merges those too).

Known differences from sclite that the fallback does not imitate: sclite reads
``{ a / b }`` as alternatives and strips braces of ``{WORD}``, and a trn line
beginning with ``;;`` is a comment to it.  Use ``remove_nonlexical`` (or clean the
text) when such tokens occur.

Output of :func:`score_text` in its ``out_dir``: ``ref.trn``, ``hyp.trn``,
``result.txt`` and ``result.json`` (written last; see docs/DESIGN.md).
:func:`score_utterances` scores transcripts held in memory the same way (the Python
back-end, same counts), for the WER that other parts of the project compute (the trade-off
CLI, the oracle policy); :func:`score_decode_dir` scores a decode dir at word and char level.

Reading the scores of an experiment (RESULTS.md, plots) is :mod:`espnet_early_exit.results`;
choosing a threshold under a compute budget is :mod:`espnet_early_exit.selection`.

This module imports neither torch nor espnet at import time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from espnet_early_exit.fileio import atomic_write_text, read_table

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
#: transcripts in memory: ``{uttid: text}`` or a sequence of texts (paired by position)
Texts = Union[Mapping[str, str], Sequence[str]]
#: ``(utterance id, reference tokens, hypothesis tokens)`` per utterance
TokenPairs = List[Tuple[str, List[str], List[str]]]

SPACE_SYMBOL = "<space>"
UNIT_METRIC = {"word": "wer", "char": "cer"}
METRIC_DIR = {"wer": "score_wer", "cer": "score_cer"}

# sclite's default alignment costs.
COST_SUB = 4
COST_INS = 3
COST_DEL = 3

_NONLEXICAL_RE = re.compile(r"^(\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>)$")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Where Debian/Ubuntu's sctk package and Kaldi/ESPnet tool installs put sclite.
_SCLITE_CANDIDATES = (
    "/usr/lib/sctk/bin/sclite",
    "/usr/local/lib/sctk/bin/sclite",
    "/usr/lib/x86_64-linux-gnu/sctk/bin/sclite",
    "/usr/lib/aarch64-linux-gnu/sctk/bin/sclite",
    "/opt/sctk/bin/sclite",
)


def load_nlsyms(nlsyms: Union[None, PathLike, Iterable[str]]) -> frozenset:
    """``None``/``"none"`` -> empty; a path -> one symbol per line; else an iterable."""
    if nlsyms is None:
        return frozenset()
    if isinstance(nlsyms, (str, os.PathLike)):
        if str(nlsyms) in ("", "none"):
            return frozenset()
        with open(nlsyms, encoding="utf-8") as f:
            return frozenset(s for s in (line.strip() for line in f) if s)
    return frozenset(nlsyms)


# --------------------------------------------------------------------------------------
# tokenisation
# --------------------------------------------------------------------------------------
def tokenize(
    text: str,
    unit: str,
    nlsyms: frozenset = frozenset(),
    remove_nonlexical: bool = False,
) -> List[str]:
    """Split one transcript into scoring tokens (``unit`` = ``word`` or ``char``)."""
    words = text.split()
    if nlsyms or remove_nonlexical:
        words = [
            w
            for w in words
            if w not in nlsyms and not (remove_nonlexical and _NONLEXICAL_RE.match(w))
        ]
    if unit == "word":
        return words
    if unit == "char":
        return [SPACE_SYMBOL if c == " " else c for c in " ".join(words)]
    raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")


def _make_cleaner(cleaner: Optional[str]):
    if cleaner is None or cleaner == "none":
        return None
    from espnet2.text.cleaner import TextCleaner  # lazy: pulls in optional packages

    return TextCleaner(cleaner)


# --------------------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------------------
def _cost_matrix_py(r: Sequence, h: Sequence) -> List[List[int]]:
    n, m = len(r), len(h)
    prev = [COST_INS * j for j in range(m + 1)]
    rows = [prev]
    for i in range(1, n + 1):
        ri = r[i - 1]
        cur = [COST_DEL * i] + [0] * m
        for j in range(1, m + 1):
            d = prev[j - 1] + (0 if ri == h[j - 1] else COST_SUB)
            u = prev[j] + COST_DEL
            left = cur[j - 1] + COST_INS
            cur[j] = d if d <= u and d <= left else (u if u <= left else left)
        rows.append(cur)
        prev = cur
    return rows


def _cost_matrix_np(r_ids: Sequence[int], h_ids: Sequence[int]):
    """Same matrix as :func:`_cost_matrix_py`, one vectorised row at a time.

    Within a row, D[i][j] = min_k<=j (E[k] + INS*(j-k)) with E the best of the
    diagonal and vertical moves, i.e. INS*j + cumulative-min(E - INS*k).
    """
    import numpy as np

    n, m = len(r_ids), len(h_ids)
    h = np.asarray(h_ids, dtype=np.int64)
    ramp = COST_INS * np.arange(m + 1, dtype=np.int64)
    D = np.empty((n + 1, m + 1), dtype=np.int64)
    D[0] = ramp
    for i in range(1, n + 1):
        prev = D[i - 1]
        e = prev + COST_DEL
        sub = np.where(h == r_ids[i - 1], 0, COST_SUB)
        np.minimum(e[1:], prev[:-1] + sub, out=e[1:])
        D[i] = ramp + np.minimum.accumulate(e - ramp)
    return D


def align(ref: Sequence[str], hyp: Sequence[str]) -> List[Tuple[str, Optional[int], Optional[int]]]:
    """Align token sequences the way sclite does (exact token comparison).

    Returns a list of ``(op, ref_index, hyp_index)`` in order, ``op`` one of
    ``C`` (correct), ``S``, ``D`` (ref token missing), ``I`` (extra hyp token).
    """
    n, m = len(ref), len(hyp)
    if list(ref) == list(hyp):
        return [("C", k, k) for k in range(n)]
    if n == 0 or m == 0:
        return [("D", k, None) for k in range(n)] + [("I", None, k) for k in range(m)]
    ids: Dict[str, int] = {}
    r = [ids.setdefault(t, len(ids)) for t in ref]
    h = [ids.setdefault(t, len(ids)) for t in hyp]
    if n * m > 2500:
        D = _cost_matrix_np(r, h).tolist()
    else:
        D = _cost_matrix_py(r, h)
    ops = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = r[i - 1] == h[j - 1]
            if D[i][j] == D[i - 1][j - 1] + (0 if same else COST_SUB):
                ops.append(("C" if same else "S", i - 1, j - 1))
                i -= 1
                j -= 1
                continue
        if j > 0 and D[i][j] == D[i][j - 1] + COST_INS:
            ops.append(("I", None, j - 1))
            j -= 1
        else:
            ops.append(("D", i - 1, None))
            i -= 1
    ops.reverse()
    return ops


def error_counts(ref_tokens: Sequence[str], hyp_tokens: Sequence[str]) -> Tuple[int, int, int, int]:
    """``(corr, sub, dele, ins)`` of sclite's alignment of two token sequences.

    Tokens are compared exactly; :func:`score_text` folds ASCII case first (as
    sclite does by default).
    """
    return _op_counts(align(ref_tokens, hyp_tokens))


def _op_counts(ops) -> Tuple[int, int, int, int]:
    c = s = d = i = 0
    for op, _, _ in ops:
        if op == "C":
            c += 1
        elif op == "S":
            s += 1
        elif op == "D":
            d += 1
        else:
            i += 1
    return c, s, d, i


# --------------------------------------------------------------------------------------
# sclite
# --------------------------------------------------------------------------------------
def find_sclite() -> Optional[List[str]]:
    """argv prefix that runs sclite, or None.

    Looks at ``$SCLITE`` (a path), ``sclite`` on PATH, ``$KALDI_ROOT/tools/sctk/bin``,
    the sctk package's lib dirs, then the Debian ``sctk`` wrapper (``sctk sclite``).
    """
    def ok(p: Optional[str]) -> bool:
        return bool(p) and os.path.isfile(p) and os.access(p, os.X_OK)

    env = os.environ.get("SCLITE")
    if ok(env):
        return [env]
    on_path = shutil.which("sclite")
    if on_path:
        return [on_path]
    cands = []
    if os.environ.get("KALDI_ROOT"):
        cands.append(os.path.join(os.environ["KALDI_ROOT"], "tools", "sctk", "bin", "sclite"))
    cands.extend(_SCLITE_CANDIDATES)
    for c in cands:
        if ok(c):
            return [c]
    wrapper = shutil.which("sctk")
    if wrapper:
        return [wrapper, "sclite"]
    return None


_SUM_COUNTS_RE = re.compile(
    r"^\s*\|\s*Sum\s*\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\|"
)


def parse_sclite_summary(text: str) -> Dict[str, int]:
    """Counts from the ``| Sum |`` line of sclite's raw-count summary (``-o all``/rsum).

    Returns ``{"n_utt","n_ref","corr","sub","del","ins","err","sent_err"}``.
    """
    for line in text.splitlines():
        m = _SUM_COUNTS_RE.match(line)
        if m:
            keys = ("n_utt", "n_ref", "corr", "sub", "del", "ins", "err", "sent_err")
            return dict(zip(keys, map(int, m.groups())))
    raise ValueError("no '| Sum |' count line found in sclite output")


def _run_sclite(argv: List[str], score_dir: Path, case_sensitive: bool) -> str:
    cmd = list(argv) + ["-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm"]
    if case_sensitive:
        cmd.append("-s")
    cmd += ["-o", "all", "stdout"]
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(cmd, cwd=score_dir, capture_output=True, env=env)
    out = proc.stdout.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace")
        raise RuntimeError(f"sclite failed (rc={proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return out


# --------------------------------------------------------------------------------------
# python back-end report
# --------------------------------------------------------------------------------------
def _pct(x: int, n: int) -> float:
    return 100.0 * x / n if n else 0.0


def _summary_table(title: str, c: Dict[str, int]) -> List[str]:
    """sclite-like summary lines (same column layout as sclite's ``Sum/Avg`` line)."""
    n, u = c["n_ref"], c["n_utt"]
    head = "| SPKR   | # Snt # Wrd | Corr    Sub    Del    Ins    Err  S.Err |"
    pct = "| Sum/Avg|{:5d}{:7d} |{:5.1f}{:7.1f}{:7.1f}{:7.1f}{:7.1f}{:7.1f} |".format(
        u, n, _pct(c["corr"], n), _pct(c["sub"], n), _pct(c["del"], n),
        _pct(c["ins"], n), _pct(c["err"], n), _pct(c["sent_err"], u),
    )
    cnt = "| Sum    |{:5d}{:7d} |{:5d}{:7d}{:7d}{:7d}{:7d}{:7d} |".format(
        u, n, c["corr"], c["sub"], c["del"], c["ins"], c["err"], c["sent_err"]
    )
    rule = "|" + "-" * (max(len(head), len(pct), len(cnt)) - 2) + "|"
    return [title, "", rule, head, rule, pct, cnt, rule]


def _format_alignment(ref: List[str], hyp: List[str], ops) -> List[str]:
    rl, hl, el = [], [], []
    for op, i, j in ops:
        rt = ref[i] if i is not None else ""
        ht = hyp[j] if j is not None else ""
        if op != "C":  # sclite shows errors in upper case (ASCII letters)
            rt, ht = rt.translate(_ASCII_UPPER), ht.translate(_ASCII_UPPER)
        w = max(len(rt), len(ht), 1)
        rl.append(rt.ljust(w, "*") if rt else "*" * w)
        hl.append(ht.ljust(w, "*") if ht else "*" * w)
        el.append((" " if op == "C" else op).ljust(w))
    return ["REF:  " + " ".join(rl), "HYP:  " + " ".join(hl), "Eval: " + " ".join(el)]


# --------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------
def _check_unit(unit: str) -> str:
    if unit not in UNIT_METRIC:
        raise ValueError(f"unit must be one of {sorted(UNIT_METRIC)}, not {unit!r}")
    return UNIT_METRIC[unit]


def _token_pairs(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    unit: str,
    cleaner: Optional[str],
    nlsyms: Union[None, PathLike, Iterable[str]],
    remove_nonlexical: bool,
) -> TokenPairs:
    """``(utt, ref tokens, hyp tokens)`` in reference order; a missing hypothesis is empty."""
    syms = load_nlsyms(nlsyms)
    clean = _make_cleaner(cleaner)
    pairs = []
    for utt, rtext in refs.items():
        if clean is not None:
            rtext = clean(rtext)  # like asr.sh: the cleaner is applied to the reference only
        rt = tokenize(rtext, unit, syms, remove_nonlexical)
        ht = tokenize(hyps.get(utt, ""), unit, syms, remove_nonlexical)
        pairs.append((utt, rt, ht))
    return pairs


def _count(pairs: TokenPairs, case_sensitive: bool, dump: Optional[List[str]] = None) -> Dict[str, int]:
    """sclite's counts over utterances; with ``dump``, the alignments are appended to it."""
    counts = {"n_utt": len(pairs), "n_ref": sum(len(rt) for _, rt, _ in pairs), "corr": 0,
              "sub": 0, "del": 0, "ins": 0, "err": 0, "sent_err": 0}
    for utt, rt, ht in pairs:
        if case_sensitive:
            rk, hk = rt, ht
        else:
            rk = [t.translate(_ASCII_LOWER) for t in rt]
            hk = [t.translate(_ASCII_LOWER) for t in ht]
        ops = align(rk, hk)
        c, s, d, i = _op_counts(ops)
        counts["corr"] += c
        counts["sub"] += s
        counts["del"] += d
        counts["ins"] += i
        counts["sent_err"] += int(s + d + i > 0)
        if dump is not None:
            dump += [f"id: ({utt})", f"Scores: (#C #S #D #I) {c} {s} {d} {i}"]
            dump += _format_alignment(rt, ht, ops) + [""]
    counts["err"] = counts["sub"] + counts["del"] + counts["ins"]
    return counts


def _result(counts: Dict[str, int], unit: str, n_missing: int, tool: str) -> dict:
    """The ``result.json`` dict; the rate is None when the reference has no token."""
    metric = UNIT_METRIC[unit]
    rate = round(_pct(counts["err"], counts["n_ref"]), 6) if counts["n_ref"] else None
    keys = ("n_ref", "corr", "sub", "del", "ins", "err", "n_utt", "sent_err")
    return {metric: rate, **{k: counts[k] for k in keys}, "n_missing_hyp": n_missing,
            "unit": unit, "tool": tool}


def _as_table(texts: Texts, what: str) -> Dict[str, str]:
    if isinstance(texts, Mapping):
        return dict(texts)
    if isinstance(texts, str):
        raise TypeError(f"{what}: a mapping or a sequence of transcripts, not one string")
    return {str(i): t for i, t in enumerate(texts)}


def score_utterances(
    refs: Texts,
    hyps: Texts,
    unit: str = "word",
    *,
    cleaner: Optional[str] = "none",
    nlsyms: Union[None, PathLike, Iterable[str]] = None,
    remove_nonlexical: bool = False,
    case_sensitive: bool = False,
) -> dict:
    """Score transcripts held in memory exactly as :func:`score_text` scores files.

    ``refs`` and ``hyps``: ``{uttid: transcript}`` mappings, or two sequences of transcripts
    paired by position. Same tokenisation, text normalisation (``cleaner`` on the reference
    only, ``nlsyms``, ``remove_nonlexical``) and sclite-compatible alignment as stage 13 (the
    Python back-end: the counts sclite gives). A reference without hypothesis is scored as an
    empty one; a hypothesis without reference raises ValueError. Returns the dict
    :func:`score_text` writes to ``result.json`` (``tool`` is ``"python"``), whose ``wer`` or
    ``cer`` (in %) is None when the references hold no token; ``err / n_ref`` is the rate.
    """
    _check_unit(unit)
    sequences = not isinstance(refs, Mapping) and not isinstance(hyps, Mapping)
    refs, hyps = _as_table(refs, "refs"), _as_table(hyps, "hyps")
    if sequences and len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    extra = [u for u in hyps if u not in refs]
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise ValueError(f"{len(extra)} hypothesis utterance(s) have no reference: {shown}")
    pairs = _token_pairs(refs, hyps, unit, cleaner, nlsyms, remove_nonlexical)
    counts = _count(pairs, case_sensitive)
    return _result(counts, unit, sum(1 for u in refs if u not in hyps), "python")


# --------------------------------------------------------------------------------------
# scoring files (stage 13)
# --------------------------------------------------------------------------------------
def _read_speakers(ref_text: Path, utt2spk: Union[None, str, PathLike]) -> Dict[str, str]:
    if utt2spk == "auto":
        utt2spk = ref_text.parent / "utt2spk"
        if not utt2spk.is_file():
            return {}
    elif utt2spk is None:
        return {}
    table = read_table(utt2spk, duplicates="last")
    return {utt: value.split()[0] for utt, value in table.items() if value}


def _sclite_counts(argv: List[str], out_dir: Path, case_sensitive: bool, n_utt: int,
                   n_ref: int) -> Tuple[Dict[str, int], str]:
    report = _run_sclite(argv, out_dir, case_sensitive)
    counts = parse_sclite_summary(report)
    if counts["n_ref"] != n_ref or counts["n_utt"] != n_utt:
        raise RuntimeError(
            f"sclite counted {counts['n_utt']} utts/{counts['n_ref']} tokens, "
            f"expected {n_utt}/{n_ref} (see {out_dir / 'result.txt'})"
        )
    return counts, report


def _python_counts(pairs: TokenPairs, unit: str, case_sensitive: bool) -> Tuple[Dict[str, int], str]:
    dump: List[str] = []
    counts = _count(pairs, case_sensitive, dump)
    lines = [
        "espnet_early_exit python scorer: sclite-compatible alignment "
        f"(sub {COST_SUB}, ins {COST_INS}, del {COST_DEL}; "
        + ("case-sensitive" if case_sensitive else "ASCII case-insensitive") + ")",
        f"unit: {unit}   reference: ref.trn   hypothesis: hyp.trn",
        "",
    ]
    lines += _summary_table("SYSTEM SUMMARY (percentages, then counts)", counts)
    lines += ["", "DUMP OF SYSTEM ALIGNMENT STRUCTURE", ""] + dump
    return counts, "\n".join(lines) + "\n"


def score_text(
    ref_text: PathLike,
    hyp_text: PathLike,
    out_dir: PathLike,
    unit: str = "word",
    tool: str = "auto",
    *,
    cleaner: Optional[str] = "none",
    nlsyms: Union[None, PathLike, Iterable[str]] = None,
    remove_nonlexical: bool = False,
    case_sensitive: bool = False,
    utt2spk: Union[None, str, PathLike] = "auto",
) -> dict:
    """Score a hypothesis ``text`` against a reference ``text``.

    ``out_dir`` is the score dir itself (e.g. ``<decode_dir>/score_wer``); it gets
    ``ref.trn``, ``hyp.trn``, ``result.txt`` and ``result.json``.  ``unit`` is
    ``word`` (WER) or ``char`` (CER); ``tool`` is ``auto`` (sclite if found, else
    python), ``sclite`` (error if not found) or ``python``.  ``utt2spk``: ``"auto"``
    uses ``utt2spk`` next to ``ref_text`` if present, ``None`` none, else a path.

    A reference utterance without hypothesis is scored as an empty hypothesis (all
    deletions, with a warning); a hypothesis utterance missing from the reference
    raises ValueError.  Returns the dict written to ``result.json``.
    """
    metric = _check_unit(unit)
    if tool not in ("auto", "sclite", "python"):
        raise ValueError(f"tool must be auto, sclite or python, not {tool!r}")
    ref_text, hyp_text, out_dir = Path(ref_text), Path(hyp_text), Path(out_dir)

    refs = read_table(ref_text)
    hyps = read_table(hyp_text)
    extra = [u for u in hyps if u not in refs]
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise ValueError(
            f"{len(extra)} utterance(s) in {hyp_text} are not in the reference {ref_text}: {shown}"
        )
    missing = [u for u in refs if u not in hyps]
    if missing:
        logger.warning(
            "%d of %d reference utterances have no hypothesis in %s (scored as empty): %s",
            len(missing), len(refs), hyp_text, ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),
        )
    spk_map = _read_speakers(ref_text, utt2spk)
    pairs = [
        (f"{spk_map.get(utt) or utt.split('-', 1)[0]}-{utt}", rt, ht)  # sclite's trn id
        for utt, rt, ht in _token_pairs(refs, hyps, unit, cleaner, nlsyms, remove_nonlexical)
    ]
    n_ref = sum(len(rt) for _, rt, _ in pairs)
    if not pairs or n_ref == 0:
        raise ValueError(f"reference {ref_text} has no {unit} tokens to score")

    if tool == "python":
        argv = None
    else:
        argv = find_sclite()
        if argv is None and tool == "sclite":
            raise RuntimeError("tool='sclite' but sclite was not found (see find_sclite())")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").unlink(missing_ok=True)  # no stale result next to new trn files
    atomic_write_text(out_dir / "ref.trn", "".join(f"{' '.join(rt)}\t({i})\n" for i, rt, _ in pairs))
    atomic_write_text(out_dir / "hyp.trn", "".join(f"{' '.join(ht)}\t({i})\n" for i, _, ht in pairs))
    if argv is not None:
        counts, report = _sclite_counts(argv, out_dir, case_sensitive, len(pairs), n_ref)
    else:
        counts, report = _python_counts(pairs, unit, case_sensitive)
    atomic_write_text(out_dir / "result.txt", report)
    result = _result(counts, unit, len(missing), "python" if argv is None else "sclite")
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2) + "\n")
    logger.info(
        "%s %.2f%% (%s: N=%d C=%d S=%d D=%d I=%d) -> %s",
        metric.upper(), result[metric], result["tool"], result["n_ref"], result["corr"],
        result["sub"], result["del"], result["ins"], out_dir,
    )
    return result


def score_decode_dir(
    ref_text: PathLike,
    decode_dir: PathLike,
    units: Sequence[str] = ("word", "char"),
    tool: str = "auto",
    hyp_text: Optional[PathLike] = None,
    **kwargs,
) -> Dict[str, dict]:
    """Score ``<decode_dir>/text`` (or ``hyp_text``) into ``<decode_dir>/score_{wer,cer}``.

    Returns ``{"wer": result, "cer": result}`` for the units asked for.
    """
    decode_dir = Path(decode_dir)
    hyp = Path(hyp_text) if hyp_text is not None else decode_dir / "text"
    out = {}
    for unit in units:
        metric = UNIT_METRIC[unit]
        out[metric] = score_text(ref_text, hyp, decode_dir / METRIC_DIR[metric], unit, tool, **kwargs)
    return out
