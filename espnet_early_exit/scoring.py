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

Reporting: :func:`collect_results` scans an experiment dir, :func:`make_results`
writes RESULTS.md, ``wer_vs_exit.png`` and ``wer_vs_compute.png``, and
:func:`select_threshold` picks a policy threshold under a compute budget.

This module imports neither torch nor espnet at import time.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

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


# --------------------------------------------------------------------------------------
# small file helpers
# --------------------------------------------------------------------------------------
def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same dir and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_savefig(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_kaldi_text(path: PathLike) -> Dict[str, str]:
    """Read ``<uttid> <text>`` lines (text may be empty) into an ordered dict.

    Raises ValueError on a duplicated utterance id.
    """
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            uttid = parts[0]
            if uttid in out:
                raise ValueError(f"{path}:{lineno}: duplicated utterance id {uttid!r}")
            out[uttid] = parts[1] if len(parts) > 1 else ""
    return out


def read_utt2spk(path: PathLike) -> Dict[str, str]:
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
    return out


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
    c = s = d = i = 0
    for op, _, _ in align(ref_tokens, hyp_tokens):
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
# scoring entry points
# --------------------------------------------------------------------------------------
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
    if unit not in UNIT_METRIC:
        raise ValueError(f"unit must be one of {sorted(UNIT_METRIC)}, not {unit!r}")
    if tool not in ("auto", "sclite", "python"):
        raise ValueError(f"tool must be auto, sclite or python, not {tool!r}")
    metric = UNIT_METRIC[unit]
    ref_text, hyp_text, out_dir = Path(ref_text), Path(hyp_text), Path(out_dir)

    refs = read_kaldi_text(ref_text)
    hyps = read_kaldi_text(hyp_text)
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

    spk_map: Dict[str, str] = {}
    if utt2spk == "auto":
        cand = ref_text.parent / "utt2spk"
        if cand.is_file():
            spk_map = read_utt2spk(cand)
    elif utt2spk is not None:
        spk_map = read_utt2spk(utt2spk)

    syms = load_nlsyms(nlsyms)
    clean = _make_cleaner(cleaner)

    utts: List[Tuple[str, List[str], List[str]]] = []
    ref_lines, hyp_lines = [], []
    for utt, rtext in refs.items():
        if clean is not None:
            rtext = clean(rtext)  # like asr.sh: the cleaner is applied to the reference only
        rt = tokenize(rtext, unit, syms, remove_nonlexical)
        ht = tokenize(hyps.get(utt, ""), unit, syms, remove_nonlexical)
        spk = spk_map.get(utt) or utt.split("-", 1)[0]
        trn_id = f"{spk}-{utt}"
        utts.append((trn_id, rt, ht))
        ref_lines.append(f"{' '.join(rt)}\t({trn_id})\n")
        hyp_lines.append(f"{' '.join(ht)}\t({trn_id})\n")
    n_ref = sum(len(rt) for _, rt, _ in utts)
    if not utts or n_ref == 0:
        raise ValueError(f"reference {ref_text} has no {unit} tokens to score")

    if tool == "python":
        argv = None
    else:
        argv = find_sclite()
        if argv is None and tool == "sclite":
            raise RuntimeError("tool='sclite' but sclite was not found (see find_sclite())")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").unlink(missing_ok=True)  # no stale result next to new trn files
    atomic_write_text(out_dir / "ref.trn", "".join(ref_lines))
    atomic_write_text(out_dir / "hyp.trn", "".join(hyp_lines))

    if argv is not None:
        report = _run_sclite(argv, out_dir, case_sensitive)
        counts = parse_sclite_summary(report)
        if counts["n_ref"] != n_ref or counts["n_utt"] != len(utts):
            raise RuntimeError(
                f"sclite counted {counts['n_utt']} utts/{counts['n_ref']} tokens, "
                f"expected {len(utts)}/{n_ref} (see {out_dir / 'result.txt'})"
            )
        used = "sclite"
    else:
        counts = {"n_utt": len(utts), "n_ref": n_ref, "corr": 0, "sub": 0, "del": 0, "ins": 0,
                  "err": 0, "sent_err": 0}
        dump = []
        for trn_id, rt, ht in utts:
            if case_sensitive:
                rk, hk = rt, ht
            else:
                rk = [t.translate(_ASCII_LOWER) for t in rt]
                hk = [t.translate(_ASCII_LOWER) for t in ht]
            ops = align(rk, hk)
            c = sum(1 for o in ops if o[0] == "C")
            s = sum(1 for o in ops if o[0] == "S")
            d = sum(1 for o in ops if o[0] == "D")
            i = sum(1 for o in ops if o[0] == "I")
            counts["corr"] += c
            counts["sub"] += s
            counts["del"] += d
            counts["ins"] += i
            counts["sent_err"] += int(s + d + i > 0)
            dump += [f"id: ({trn_id})", f"Scores: (#C #S #D #I) {c} {s} {d} {i}"]
            dump += _format_alignment(rt, ht, ops) + [""]
        counts["err"] = counts["sub"] + counts["del"] + counts["ins"]
        lines = [
            "espnet_early_exit python scorer: sclite-compatible alignment "
            f"(sub {COST_SUB}, ins {COST_INS}, del {COST_DEL}; "
            + ("case-sensitive" if case_sensitive else "ASCII case-insensitive") + ")",
            f"unit: {unit}   reference: ref.trn   hypothesis: hyp.trn",
            "",
        ]
        lines += _summary_table("SYSTEM SUMMARY (percentages, then counts)", counts)
        lines += ["", "DUMP OF SYSTEM ALIGNMENT STRUCTURE", ""] + dump
        report = "\n".join(lines) + "\n"
        used = "python"

    atomic_write_text(out_dir / "result.txt", report)
    result = {
        metric: round(_pct(counts["err"], counts["n_ref"]), 6),
        "n_ref": counts["n_ref"],
        "corr": counts["corr"],
        "sub": counts["sub"],
        "del": counts["del"],
        "ins": counts["ins"],
        "err": counts["err"],
        "n_utt": counts["n_utt"],
        "sent_err": counts["sent_err"],
        "n_missing_hyp": len(missing),
        "unit": unit,
        "tool": used,
    }
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2) + "\n")
    logger.info(
        "%s %.2f%% (%s: N=%d C=%d S=%d D=%d I=%d) -> %s",
        metric.upper(), result[metric], used, result["n_ref"], result["corr"], result["sub"],
        result["del"], result["ins"], out_dir,
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


# --------------------------------------------------------------------------------------
# collecting results of an experiment dir
# --------------------------------------------------------------------------------------
_EXIT_DIR_RE = re.compile(r"^exit(\d+)$")
_POLICY_DIR_RE = re.compile(r"^(?P<policy>.+)_th(?P<thr>[-+0-9.eE]+)$")


@dataclass
class ScoredDir:
    """One scored output dir ``decode_*/<test_set>/<name>/``."""

    decode: str
    test_set: str
    name: str
    path: Path
    exit: Optional[int] = None  # fixed exit k (exit<k>/)
    policy: Optional[str] = None  # dynamic policy name
    threshold: Optional[float] = None
    threshold_str: Optional[str] = None
    wer: Optional[dict] = None  # score_wer/result.json
    cer: Optional[dict] = None  # score_cer/result.json
    avg_exit: Optional[float] = None
    avg_share: Optional[float] = None
    rtf: Optional[float] = None
    n_exit_utts: int = 0

    @property
    def is_fixed(self) -> bool:
        return self.exit is not None


def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_exit_costs(exp_dir: PathLike) -> Dict[int, dict]:
    """``{exit_k: {"exit","params","gflops","share"}}`` from ``exit_costs.json`` ({} if absent)."""
    data = _read_json(Path(exp_dir) / "exit_costs.json")
    if not data:
        return {}
    return {int(e["exit"]): e for e in data.get("exits", [])}


def read_exit_file(path: PathLike) -> Dict[str, int]:
    """``<uttid> <exit_layer>`` lines -> dict."""
    out: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                v = float(parts[1])
                out[parts[0]] = int(v) if v.is_integer() else v
    return out


def collect_results(exp_dir: PathLike) -> List[ScoredDir]:
    """Every scored dir under ``exp_dir/decode_*/<test_set>/``, sorted.

    ``exit<k>`` dirs are fixed exits; ``<policy>_th<threshold>`` dirs are policies at a
    threshold; any other scored dir (e.g. ``oracle``) is a policy without threshold.
    For policies, the ``exit`` file gives the average exit and (through
    ``exit_costs.json``) the average compute share, an unweighted mean over
    utterances; ``timing.json`` (``{"rtf": float}``) gives the RTF.
    """
    exp_dir = Path(exp_dir)
    costs = load_exit_costs(exp_dir)
    found: List[ScoredDir] = []
    for dec in sorted(p for p in exp_dir.glob("decode_*") if p.is_dir()):
        for ts in sorted(p for p in dec.iterdir() if p.is_dir()):
            for d in sorted(p for p in ts.iterdir() if p.is_dir()):
                wer = _read_json(d / "score_wer" / "result.json")
                cer = _read_json(d / "score_cer" / "result.json")
                if wer is None and cer is None:
                    continue
                sd = ScoredDir(dec.name, ts.name, d.name, d, wer=wer, cer=cer)
                m = _EXIT_DIR_RE.match(d.name)
                if m:
                    sd.exit = int(m.group(1))
                else:
                    m = _POLICY_DIR_RE.match(d.name)
                    thr = None
                    if m:
                        try:
                            thr = float(m.group("thr"))
                        except ValueError:
                            thr = None
                    if thr is not None:
                        sd.policy, sd.threshold, sd.threshold_str = m.group("policy"), thr, m.group("thr")
                    else:
                        sd.policy = d.name
                    if (d / "exit").is_file():
                        exits = read_exit_file(d / "exit")
                        sd.n_exit_utts = len(exits)
                        if exits:
                            sd.avg_exit = sum(exits.values()) / len(exits)
                            shares = [costs[e]["share"] for e in exits.values() if e in costs]
                            if costs and len(shares) == len(exits):
                                sd.avg_share = sum(shares) / len(shares)
                            elif costs:
                                unknown = sorted({e for e in exits.values() if e not in costs})
                                logger.warning("%s/exit: exits %s not in exit_costs.json", d, unknown)
                timing = _read_json(d / "timing.json")
                if timing and timing.get("rtf") is not None:
                    sd.rtf = float(timing["rtf"])
                if sd.is_fixed and sd.exit in costs:
                    sd.avg_exit = float(sd.exit)
                    sd.avg_share = float(costs[sd.exit]["share"])
                found.append(sd)
    found.sort(key=lambda s: (s.decode, s.test_set, not s.is_fixed, s.exit or 0, s.policy or "",
                              s.threshold if s.threshold is not None else math.inf))
    return found


def select_threshold(
    exp_dir: PathLike,
    test_set: str,
    policy: str,
    max_share: float,
    decode: Optional[str] = None,
) -> Optional[Tuple[float, float, float]]:
    """Threshold of ``policy`` with the lowest WER on ``test_set`` (a dev set) among those
    whose average compute share is <= ``max_share``.

    Returns ``(threshold, wer, share)`` or None when no threshold meets the budget.
    Ties in WER go to the smaller share.  ``decode`` names the ``decode_*`` dir; it is
    required only when several hold ``test_set``.
    """
    rows = [
        r for r in collect_results(exp_dir)
        if r.test_set == test_set and r.policy == policy and r.threshold is not None
        and (decode is None or r.decode == decode)
    ]
    decodes = sorted({r.decode for r in rows})
    if len(decodes) > 1:
        raise ValueError(f"{test_set}/{policy} is in several decode dirs {decodes}; pass decode=")
    ok = [
        r for r in rows
        if r.wer is not None and r.avg_share is not None and r.avg_share <= max_share + 1e-12
    ]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r.wer["wer"], r.avg_share, r.threshold))
    return best.threshold, float(best.wer["wer"]), float(best.avg_share)


# --------------------------------------------------------------------------------------
# RESULTS.md and plots
# --------------------------------------------------------------------------------------
def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _git_hash(where: Path) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _sdi(res: Optional[dict]) -> str:
    if not res or not res.get("n_ref"):
        return "-"
    n = res["n_ref"]
    return f"{_pct(res['sub'], n):.2f}/{_pct(res['del'], n):.2f}/{_pct(res['ins'], n):.2f}"


def _metric(res: Optional[dict], key: str) -> Optional[float]:
    return None if not res or res.get(key) is None else float(res[key])


def render_results_md(exp_dir: PathLike, rows: List[ScoredDir], plots: Sequence[str] = ()) -> str:
    """RESULTS.md text for :func:`collect_results` rows."""
    exp_dir = Path(exp_dir)
    costs = load_exit_costs(exp_dir)
    config = exp_dir / "config.yaml"
    env = [
        f"- date: `{datetime.datetime.now().astimezone().strftime('%a %b %d %H:%M:%S %Z %Y')}`",
        f"- python version: `{platform.python_version()}`",
        f"- espnet version: `espnet {_version('espnet') or 'not installed'}`",
        f"- pytorch version: `torch {_version('torch') or 'not installed'}`",
        f"- espnet_early_exit version: `{_version('espnet-early-exit') or 'not installed'}`",
    ]
    gh = _git_hash(Path.cwd())
    if gh:
        env.append(f"- Git hash: `{gh}`")
    env.append(f"- model config: `{config if config.is_file() else '-'}`")
    env.append(
        f"- exit costs: `{exp_dir / 'exit_costs.json'}`" if costs
        else "- exit costs: `-` (exit_costs.json missing: cost columns show -)"
    )

    out = [
        "<!-- Generated by espnet_early_exit.bin.make_results -->",
        f"# RESULTS: {exp_dir.name}",
        "## Environments",
        *env,
        "",
        "## Decode dirs",
    ]
    groups: Dict[Tuple[str, str], List[ScoredDir]] = {}
    for r in rows:
        groups.setdefault((r.decode, r.test_set), []).append(r)
    decodes = sorted({r.decode for r in rows})
    for dec in decodes:
        sets = sorted({ts for (d, ts) in groups if d == dec})
        desc = ", ".join(
            f"{ts} ({sum(r.is_fixed for r in groups[(dec, ts)])} exits, "
            f"{sum(not r.is_fixed for r in groups[(dec, ts)])} policy points)"
            for ts in sets
        )
        out.append(f"- `{exp_dir / dec}`: {desc}")
    if not rows:
        out.append("- none found (no decode_*/<test_set>/*/score_wer/result.json)")
    out.append("")

    for dec in decodes:
        out.append(f"## {dec}")
        for (d, ts), rs in sorted(groups.items()):
            if d != dec:
                continue
            first = next((r.wer for r in rs if r.wer), None)
            size = f" ({first['n_utt']} utts, {first['n_ref']} words)" if first else ""
            out += ["", f"### {ts}{size}", ""]
            fixed = [r for r in rs if r.is_fixed]
            if fixed:
                out += [
                    "|exit|WER|CER|Sub/Del/Ins (WER)|encoder params (M)|compute (GFLOPs)|share of full encoder|",
                    "|---|---|---|---|---|---|---|",
                ]
                for r in sorted(fixed, key=lambda r: r.exit):
                    c = costs.get(r.exit)
                    out.append("|{}|{}|{}|{}|{}|{}|{}|".format(
                        r.exit, _fmt(_metric(r.wer, "wer")), _fmt(_metric(r.cer, "cer")), _sdi(r.wer),
                        _fmt(c["params"] / 1e6) if c and c.get("params") is not None else "-",
                        _fmt(c.get("gflops")) if c else "-",
                        _fmt(c.get("share"), ".3f") if c else "-",
                    ))
            pol = [r for r in rs if not r.is_fixed]
            if pol:
                out += [
                    "",
                    "|policy|threshold|WER|CER|avg exit|avg compute share|RTF|",
                    "|---|---|---|---|---|---|---|",
                ]
                for r in pol:
                    out.append("|{}|{}|{}|{}|{}|{}|{}|".format(
                        r.policy, r.threshold_str if r.threshold_str is not None else "-",
                        _fmt(_metric(r.wer, "wer")), _fmt(_metric(r.cer, "cer")),
                        _fmt(r.avg_exit), _fmt(r.avg_share, ".3f"), _fmt(r.rtf, ".4f"),
                    ))
        out.append("")

    out += [
        "WER/CER in %; Sub/Del/Ins as % of reference words. Compute share: encoder compute of an",
        "exit relative to the full encoder (exit_costs.json); for policies the unweighted mean over",
        "utterances of the share of the exit each one took. RTF from timing.json.",
        "",
    ]
    for p in plots:
        out.append(f"![{Path(p).stem}]({Path(p).name})")
    return "\n".join(out).rstrip() + "\n"


def _series_label(r: ScoredDir, many_decodes: bool) -> str:
    return f"{r.decode}/{r.test_set}" if many_decodes else r.test_set


def plot_wer_vs_exit(rows: List[ScoredDir], path: PathLike) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    path = Path(path)
    many = len({r.decode for r in rows}) > 1
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    series: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.is_fixed and r.wer is not None:
            series.setdefault(_series_label(r, many), []).append((r.exit, float(r.wer["wer"])))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("exit (encoder layer)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER at each exit")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
        ks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ks)
    else:
        ax.text(0.5, 0.5, "no fixed-exit results", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    return path


def plot_wer_vs_compute(rows: List[ScoredDir], path: PathLike) -> Path:
    """One panel per (decode dir, test set): fixed exits as one line, each policy as
    another line over its thresholds.  Without exit_costs.json the fixed exits use
    exit/max_exit as share and policies are left out."""
    from matplotlib.figure import Figure

    path = Path(path)
    many = len({r.decode for r in rows}) > 1
    groups: Dict[Tuple[str, str], List[ScoredDir]] = {}
    for r in rows:
        if r.wer is not None:
            groups.setdefault((r.decode, r.test_set), []).append(r)
    n = max(len(groups), 1)
    fig = Figure(figsize=(6, 4 * n))
    for idx, ((dec, ts), rs) in enumerate(sorted(groups.items())):
        ax = fig.add_subplot(n, 1, idx + 1)
        fixed = sorted((r for r in rs if r.is_fixed), key=lambda r: r.exit)
        have_costs = any(r.avg_share is not None for r in fixed)
        if have_costs:
            pts = [(r.avg_share, float(r.wer["wer"]), r.exit) for r in fixed if r.avg_share is not None]
            xlabel = "compute share of the full encoder"
        else:
            kmax = max((r.exit for r in fixed), default=1) or 1
            pts = [(r.exit / kmax, float(r.wer["wer"]), r.exit) for r in fixed]
            xlabel = "exit / last exit (exit_costs.json missing)"
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="black", label="fixed exits")
            for x, y, k in pts:
                ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        pols: Dict[str, List[Tuple[float, float]]] = {}
        for r in rs:
            if not r.is_fixed and r.avg_share is not None:
                pols.setdefault(r.policy, []).append((r.avg_share, float(r.wer["wer"])))
        for name, ppts in sorted(pols.items()):
            ppts.sort()
            ax.plot([p[0] for p in ppts], [p[1] for p in ppts], marker="x", linestyle="--", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("WER (%)")
        ax.set_title(f"{dec}/{ts}" if many else ts)
        ax.grid(True, alpha=0.3)
        if pts or pols:
            ax.legend(fontsize=8)
    if not groups:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    return path


def make_results(exp_dir: PathLike, out_md: Optional[PathLike] = None) -> List[Path]:
    """Write RESULTS.md (default ``exp_dir/RESULTS.md``) and, next to it,
    ``wer_vs_exit.png`` and ``wer_vs_compute.png``.  Returns the written paths."""
    exp_dir = Path(exp_dir)
    out_md = Path(out_md) if out_md is not None else exp_dir / "RESULTS.md"
    rows = collect_results(exp_dir)
    if not rows:
        logger.warning("no scored decode dirs under %s", exp_dir)
    p1 = plot_wer_vs_exit(rows, out_md.parent / "wer_vs_exit.png")
    p2 = plot_wer_vs_compute(rows, out_md.parent / "wer_vs_compute.png")
    atomic_write_text(out_md, render_results_md(exp_dir, rows, plots=(p1, p2)))
    return [out_md, p1, p2]
