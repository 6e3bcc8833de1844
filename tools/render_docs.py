#!/usr/bin/env python3
"""The numbers of README.md and docs/*.md, rendered from docs/results/ (and only from there).

    python tools/render_docs.py            # rewrite every generated block in place
    python tools/render_docs.py --check    # exit 1 and list the blocks that differ

A page keeps its hand-written prose; every measured number sits in a generated block:

    <!-- generated: <block> [arg ...] -->
    ... (rendered; never edit by hand) ...
    <!-- end generated -->

or inline, within a sentence: ``<!-- generated: <block> -->1.5x<!-- end generated -->``. Each
block name is one function of BLOCKS below, which renders it from named results files under
docs/results/ (JSON written by the benchmarks and the FSDD study, each with the command that
made it, the git commit, the machine and the date; see espnet_early_exit/provenance.py).
tests/test_docs.py runs ``--check`` and also rejects measured-looking numbers typed in prose.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
TRAINING = "bench/training.json"
INFERENCE = "bench/inference.json"
ONNX = "bench/onnx.json"
FSDD = "fsdd/study.json"
BLOCK = re.compile(r"<!-- generated: (?P<id>[^>]+?) -->(?P<body>.*?)<!-- end generated -->",
                   re.DOTALL)


class ResultsError(Exception):
    """A block's results file is missing or lacks what the block needs."""


class Results:
    """The JSON files under one results folder, read once each."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: Dict[str, dict] = {}

    def __call__(self, name: str) -> dict:
        if name not in self._cache:
            path = self.root / name
            if not path.is_file():
                raise ResultsError(f"no results file {path}")
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if (data.get("options") or {}).get("quick"):
                raise ResultsError(f"{path} comes from a --quick run: not numbers for the docs")
            self._cache[name] = data
        return self._cache[name]


# ------------------------------------------------------------------------------ formatting
def fmt_range(values: Iterable[float], spec: str, suffix: str = "") -> str:
    """``a`` or ``a to b`` (lowest to highest, as formatted) over several runs."""
    vals = sorted(values)
    if not vals:
        return "-"
    lo, hi = format(vals[0], spec), format(vals[-1], spec)
    return f"{lo}{suffix}" if lo == hi else f"{lo} to {hi}{suffix}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def provenance_line(data: dict) -> str:
    """Where the numbers above came from (the results file's own record)."""
    m, git = data["machine"], data.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" + local changes" if git.get("dirty") else "")
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    return (f"<sub>Measured {data['date'][:10]} on {m['device_name']}{threads} "
            f"({m['cpu_count']} CPUs), torch {m.get('torch', '?')}, commit {commit}.</sub>")


def command_block(data: dict) -> str:
    return "```bash\n" + data["command"] + "\n```"


# ------------------------------------------------------------------------------ training
def _training_table(res: Results, vocab: str) -> dict:
    data = res(TRAINING)
    for t in data["tables"]:
        if str(t["vocab"]) == vocab:
            return t
    raise ResultsError(f"{TRAINING}: no table for vocab {vocab}")


def _training_label(row: dict) -> str:
    heads = f"`exit_head_rank: {row['exit_head_rank']}`" if row.get("exit_head_rank") else "full"
    mem = row.get("exit_head_memory", "keep")
    return f"{heads}, `exit_head_memory: {mem}`"


def _training_ratios(row: dict, single: dict) -> Dict[str, float]:
    return {"flops": row["flops"] / single["flops"], "wall": row["wall_s"] / single["wall_s"],
            "cpu": row["cpu_s"] / single["cpu_s"],
            "memory": row["memory_mb"] / single["memory_mb"]}


def training_command(res: Results) -> str:
    return command_block(res(TRAINING))


def training_overhead(res: Results, vocab: str = "5000") -> str:
    """One row per EE variant: its FLOPs, step time and memory over the single-exit model's."""
    t = _training_table(res, vocab)
    single = t["rows"][0]
    rows = []
    for r in t["rows"][1:]:
        q = _training_ratios(r, single)
        rows.append([_training_label(r), f"{q['flops']:.3f}", f"{q['wall']:.3f}",
                     f"{q['cpu']:.3f}", f"{q['memory']:.3f}"])
    return "\n".join(table(["earlier-exit heads (vocabulary " + vocab + ")", "FLOPs",
                            "step time (wall)", "step time (CPU)", "training memory"], rows)
                     + ["", provenance_line(res(TRAINING))])


def training_max_ratio(res: Results, vocab: str, variant: str = "ee") -> str:
    """The largest of one variant's ratios (FLOPs, wall and CPU time, memory)."""
    t = _training_table(res, vocab)
    row = next((r for r in t["rows"] if r["variant"] == variant), None)
    if row is None:
        raise ResultsError(f"{TRAINING}: no variant {variant} at vocab {vocab}")
    return f"{max(_training_ratios(row, t['rows'][0]).values()):.3f}"


def training_head_share(res: Results, vocab: str = "5000") -> str:
    """Each full earlier-exit head's share of a training step, and all of them together."""
    t = _training_table(res, vocab)
    single = t["rows"][0]
    row = next(r for r in t["rows"] if r["variant"] == "ee")
    extra = row["flops"] / single["flops"] - 1
    n = len(range(2, 12, 2))  # the LibriSpeech-100 exits before the last
    return (f"each full head is {extra / n * 100:.1f}% of a training step's FLOPs, so the {n} "
            f"extra heads add {extra * 100:.1f}%")


def ls100_params(res: Results) -> str:
    t = _training_table(res, "5000")
    single = t["rows"][0]
    ee = next(r for r in t["rows"] if r["variant"] == "ee")
    return (f"{single['params'] / 1e6:.1f} M parameters + {(ee['params'] - single['params']) / 1e6:.1f}"
            " M for the five extra CTC heads")


# ------------------------------------------------------------------------------ inference
def _variant_label(v: dict) -> str:
    heads = f"`exit_head_rank: {v['exit_head_rank']}`" if v["exit_head_rank"] else "full heads"
    parts = [heads, f"`{v['front']}` front", f"vocabulary {v['vocab']}"]
    return ", ".join(parts)


def inference_command(res: Results) -> str:
    return command_block(res(INFERENCE))


def inference_method(res: Results) -> str:
    o = res(INFERENCE)["options"]
    return (f"median of {o['overhead_rounds']} pairs per run, {o['runs']} run"
            f"{'s' if o['runs'] > 1 else ''} per model; a range is lowest to highest run")


def policy_overhead(res: Results) -> str:
    """Per model variant: each policy's overhead over the fixed exit (range over the runs), with
    the frame-stride and torch-ops versions as rows of their own, next to the FLOPs floor.
    ``agreement`` and ``learned`` get a column where the results file has them."""
    data = res(INFERENCE)
    policies = ["entropy", "max_posterior", "nbest_posterior"] + [
        p for p in ("agreement", "learned")
        if any(t["policy"] == p for v in data["variants"] for t in v["thresholds"].values())]
    kinds = [("", 1, "default"), (", `--exit_policy_frame_stride {s}` (approximate)", None,
                                  "default"), (", frame statistics by torch ops (no C kernel)", 1,
                                               "torch")]
    rows = []
    for v in data["variants"]:
        for suffix, stride, stats in kinds:
            cells, stride_seen = [], 1
            for p in policies:
                label = next((lab for lab, t in v["thresholds"].items() if t["policy"] == p
                              and t["frame_stats"] == stats
                              and (t["stride"] == stride if stride else t["stride"] > 1)), None)
                if label is not None:
                    stride_seen = v["thresholds"][label]["stride"]
                got = [r["overhead"][label]["median"] * 100 for r in v["runs"]
                       if label in r["overhead"]]
                cells.append(fmt_range(got, "+.1f", "%"))
            if all(c == "-" for c in cells):
                continue
            floor = f"{v['flops_floor'] * 100:.1f}%" if not suffix else ""
            rows.append([_variant_label(v) + suffix.format(s=stride_seen), *cells, floor])
    return "\n".join(table(["exit heads", *(f"`{p}`" for p in policies),
                            "FLOPs floor (heads of the exits passed)"], rows)
                     + ["", provenance_line(data)])


def inference_speedup(res: Results) -> str:
    """Greedy decoding at exit 6 against the stock encoder + the same greedy decode."""
    data = res(INFERENCE)
    rows = []
    for v in data["variants"]:
        runs = v["runs"]
        rows.append([_variant_label(v), fmt_range([r["fixed_ms"] for r in runs], ".0f"),
                     fmt_range([r["stock_enc_argmax_ms"] for r in runs], ".0f"),
                     fmt_range([r["speedup_vs_stock_encoder"] for r in runs], ".2f", "x"),
                     fmt_range([r["speedup_vs_stock_search"] for r in runs], ".2f", "x"),
                     f"{v['flops_bound']:.2f}x"])
    return "\n".join(table(["model", "exit 6 ms", "full encoder + greedy ms",
                            "speed-up", "vs stock `Speech2Text` beam 1", "FLOPs bound"], rows)
                     + ["", provenance_line(data)])


# ------------------------------------------------------------------------------ ONNX
# docs/results/bench/onnx.json: benchmarks/bench_onnx.py (speed per exit of the LS-100 config,
# and with --fsdd_exp/--fsdd_test the FSDD test set decoded at every exit by each backend)
def onnx_command(res: Results) -> str:
    """The command, its results path relative to the repository (as the other commands)."""
    data = res(ONNX)
    return command_block(dict(data, command=re.sub(r"(--results )\S*?(docs/results/)", r"\1\2",
                                                   data["command"])))


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def onnx_speed(res: Results) -> str:
    """Per exit: torch, onnxruntime float32 and int8 times, and the issue's two targets."""
    data = res(ONNX)
    rows = [[r["exit"], f"{r['flops_share']:.3f}", f"{r['torch_s'] * 1e3:.0f}",
             f"{r['float32_s'] * 1e3:.0f}", f"{r['int8_s'] * 1e3:.0f}",
             f"{r['onnx_vs_torch']:.2f}x", _yes(r["ok_speed"]), f"{r['time_share']:.3f}",
             _yes(r["ok_share"])] for r in data["speed"]]
    return "\n".join(table(["exit", "FLOPs share", "torch ms", "float32 ms", "int8 ms",
                            "float32 / torch", "<= 0.6 x torch", "time share (float32)",
                            "<= 1.1 x FLOPs share + 0.05"], rows)
                     + ["", provenance_line(data)])


def onnx_fsdd(res: Results) -> str:
    """Per exit of the FSDD model: WER and test-set decoding seconds of each backend."""
    data = res(ONNX)
    if not data.get("fsdd"):
        raise Pending("_Not measured yet: `benchmarks/bench_onnx.py --fsdd_exp ... --fsdd_test "
                      "...` adds this table._")
    rows = [[r["exit"], f"{r['torch_wer']:.2f}", f"{r['float32_wer']:.2f}",
             f"{r['int8_wer']:.2f}", _yes(r["same_hyps_float32"]), f"{r['torch_s']:.1f}",
             f"{r['float32_s']:.1f}", f"{r['int8_s']:.1f}"] for r in data["fsdd"]]
    return "\n".join(table(["exit", "WER torch", "WER float32", "WER int8",
                            "float32 hypotheses = torch's", "torch s", "float32 s", "int8 s"],
                           rows) + ["", provenance_line(data)])


def onnx_ratio(res: Results, part: str, num: str, den: str) -> str:
    """``a to b x``: the range over the exits of one time over another (``part``: speed|fsdd)."""
    return fmt_range([r[f"{num}_s"] / r[f"{den}_s"] for r in res(ONNX)[part]], ".2f", "x")


# ------------------------------------------------------------------------------ FSDD study
# docs/results/fsdd/study.json: egs2/fsdd_digits/asr1/study_tables.py --results (study.sh's
# tables part): collect_study's numbers plus the study's facts; its tables render with the
# study's own functions, so the page and <workdir>/study_results.md cannot disagree.
STUDY_TABLES = REPO / "egs2" / "fsdd_digits" / "asr1" / "study_tables.py"


def _study_tables(path: Path = STUDY_TABLES):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{path.parts[-3]}_study_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(lines: List[str]) -> str:
    return "\n".join(lines).strip("\n")


class Pending(ResultsError):
    """The results file has no numbers for this block yet: that part of the study has not run."""


# the study.sh part that makes each experiment dir (for the "not run yet" note)
FSDD_PARTS = {"asr_ee6": "ee decode", "asr_interctc6_as_ee": "interctc decode",
              "asr_ee6_ft": "ft", "asr_ee6_conv1d4": "conv1d4"}


def _fsdd_pending(exp: str) -> Pending:
    part = FSDD_PARTS.get(exp, "single" if exp.startswith("asr_single") else "?")
    return Pending(f"_Not measured yet: this part of the study has not run "
                   f"(`study.sh --parts \"{part} tables\"` adds it)._")


def _fsdd_model(res: Results, exp: str) -> dict:
    """A model of the study by the name of its (first) experiment dir, e.g. asr_ee6."""
    for m in res(FSDD)["models"]:
        if m["exps"] and m["exps"][0] == exp:
            return m
    raise _fsdd_pending(exp)


def _labels(res: Results, exps: Sequence[str]) -> List[str]:
    return [_fsdd_model(res, e)["model"] for e in exps]


def fsdd_wer(res: Results, test_set: str, *exps: str) -> str:
    """Greedy CTC WER % per exit on one set, one row per model (all when none is named)."""
    t = next((t for t in res(FSDD)["per_exit"] if t["test_set"] == test_set), None)
    if t is None:
        raise ResultsError(f"{FSDD}: no per-exit WER on {test_set}")
    by_label = {r["model"]: r for r in t["rows"]}
    rows = [by_label[lab] for lab in _labels(res, exps)] if exps else t["rows"]
    return _lines(_study_tables().render_per_exit(dict(t, rows=rows)))


def fsdd_costs(res: Results, *exps: str) -> str:
    """GFLOPs (share of the model's own full encoder) per exit, one row per model."""
    t = res(FSDD)["costs"]
    by_label = {r["model"]: r for r in t["rows"]}
    rows = [by_label[lab] for lab in _labels(res, exps)] if exps else t["rows"]
    return _lines(_study_tables().render_costs(dict(t, rows=rows)))


def _policy_exp(res: Results, exp: str) -> dict:
    for p in res(FSDD)["policy_exps"]:
        if p["name"] == exp:
            return p
    raise _fsdd_pending(exp)


def fsdd_policies(res: Results, exp: str, test_set: str) -> str:
    """Fixed exits and every policy threshold of one experiment on one set."""
    p = next((p for p in _policy_exp(res, exp)["policies"] if p["test_set"] == test_set), None)
    if p is None:
        raise ResultsError(f"{FSDD}: no policy results of {exp} on {test_set}")
    return _lines(_study_tables().render_policies(p["rows"]))


def fsdd_budget(res: Results, exp: str) -> str:
    """The study's selection: threshold chosen on dev within a budget, reported on test."""
    data = res(FSDD)
    return _lines(_study_tables().render_budgets(_policy_exp(res, exp)["budgets"], data["dev"],
                                                 data["test"]))


def fsdd_times(res: Results) -> str:
    data = res(FSDD)
    return "\n".join(table(["part (`study.sh`)", "seconds", "minutes"],
                           [[t["part"], str(t["seconds"]), f"{t['seconds'] / 60:.1f}"]
                            for t in data["times"] or []]) + ["", provenance_line(data)])


def fsdd_command(res: Results) -> str:
    """Every study.sh invocation that made the numbers (from its workdir), in order."""
    data = res(FSDD)
    cmds = [c["command"] for c in data.get("commands") or []] or [data["command"]]
    return "```bash\n" + "\n".join(cmds) + "\n```"


def fsdd_machine(res: Results) -> str:
    return provenance_line(res(FSDD))


def fsdd_params(res: Results, exp: str) -> str:
    """The encoder's parameters (exit_costs.json), e.g. ``2.6 M``."""
    return f"{_fsdd_model(res, exp)['encoder_params'] / 1e6:.1f} M"


def fsdd_words(res: Results, test_set: str) -> str:
    return f"{res(FSDD)['words'][test_set]:,}"


def fsdd_front_share(res: Results, exp: str) -> str:
    m = _fsdd_model(res, exp)
    return f"{m['front_share']:.3f} ({m['front_gflops']:.2f} GFLOPs)"


def fsdd_exits_at_or_below(res: Results, test_set: str, exp: str, other: str) -> str:
    """At how many exits ``exp``'s WER is at or below ``other``'s at the same exit."""
    t = next(t for t in res(FSDD)["per_exit"] if t["test_set"] == test_set)
    by_label = {r["model"]: r["wer"] for r in t["rows"]}
    a, b = (by_label[lab] for lab in _labels(res, [exp, other]))
    both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return f"{sum(x <= y for x, y in both)} of {len(both)}"


def fsdd_equivalence(res: Results) -> str:
    eq = res(FSDD).get("equivalence") or {}
    if "identical" not in eq:
        raise ResultsError(f"{FSDD}: no equivalence check")
    same = "identical" if eq["identical"] else "NOT identical"
    return (f"{same} greedy hypotheses at all {len(eq['stock_greedy'])} layers on `{eq['utt']}`, "
            f"maximum absolute difference of the last-layer encoder output "
            f"{eq['last_layer_max_abs_diff']:g}")


# ------------------------------------------------------------------------------ issue 14
# docs/results/policies/fsdd_<model>.json: egs2/fsdd_digits/asr1/policy_study.py (every policy
# derived from the all-exits passes; thresholds chosen on dev, reported on test)
def _pct(x: Optional[float], spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def fsdd_policy_study(res: Results, model: str, part: str) -> str:
    """One table of the policy study of ``model`` (e.g. conv2d): target, gap or ltt."""
    name = f"policies/fsdd_{model}.json"
    if not (res.root / name).is_file():
        raise Pending(f"_Not measured yet: `python egs2/fsdd_digits/asr1/policy_study.py "
                      f"--out docs/results/{name} ...` writes it._")
    data = res(name)
    if part == "target":
        t = data["target_wer"]
        rows = [[f"`{r['policy']}`", _pct(r["threshold"], ".4g"), _pct(r.get("dev_wer")),
                 _pct(r.get("dev_share"), ".3f"), _pct(r.get("test_wer")),
                 _pct(None if r.get("test_rel") is None else 100 * r["test_rel"], "+.1f"),
                 _pct(r.get("test_share"), ".3f"), "yes" if r["met"] else "no"] for r in t["rows"]]
        head = ["policy", "threshold (dev)", "dev WER %", "dev share", "test WER %",
                "test vs last exit %", "test share",
                f"<= +{100 * t['max_rel']:g} % at <= {t['max_share']:g}"]
        note = (f"Last exit: dev {t['last_dev_wer']:.2f} %, test {t['last_test_wer']:.2f} %; "
                f"threshold: the cheapest on dev within {t['wer_factor']:g} x the last exit's "
                f"dev WER. Target met: {'yes' if t['met'] else 'no'}.")
        lines = table(head, rows) + ["", note]
    elif part == "gap":
        g = data["gap"]
        rows = [[f"`{lab}`", f"{a['dev']:.3f}", f"{a['test']:.3f}"]
                for lab, a in g["areas"].items()]
        closed = _pct(g["fraction_closed"], ".2f")
        note = (f"On test over shares {g['range'][0]:.3f} to {g['range'][1]:.3f} (all three "
                f"cover): `{g['best']}` {g['area_best']:.3f}, `{g['baseline']}` "
                f"{g['area_baseline']:.3f}: fraction of the gap closed {closed} (target "
                f">= {g['target']:g}: {'met' if g['met'] else 'not met'}).")
        lines = table(["policy", "area to the oracle, dev", "area to the oracle, test"], rows) \
            + ["", note]
    elif part == "ltt":
        rows = [[f"`{r['policy']}`", f"{r['eps']:g}", _pct(r["dev_threshold"], ".4g"),
                 f"{r['test_disagree']:.3f}", f"{r['test_share']:.3f}",
                 f"{r['violation_rate']:.3f}", f"{r['mean_share']:.3f}",
                 "yes" if r["met"] else "no"] for r in data["ltt"]["rows"]]
        first = data["ltt"]["rows"][0]
        head = ["policy", "EPS", "threshold (dev)", "test disagreement", "test share",
                f"violation rate ({first['splits']} re-splits)", "mean share",
                f"<= {first['delta']:g} + binomial noise"]
        lines = table(head, rows)
    else:
        raise ResultsError(f"fsdd-policy-study: no part {part!r} (target, gap, ltt)")
    return "\n".join(lines + ["", provenance_line(data)])


# ------------------------------------------------------------------------------ AN4 study
# docs/results/an4/<table>.json: egs2/an4/asr1/study_tables.py collect (study.sh's tables part),
# one file per table; each renders with the study's own function (its BLOCKS), and as "pending"
# while its file is absent (the study has not run yet), never with a number of its own.
AN4_TABLES = REPO / "egs2" / "an4" / "asr1" / "study_tables.py"


def an4_table(res: Results, table: str) -> str:
    """One table of the AN4 study: per_exit, bootstrap, policies, targets, beam or times."""
    module = _study_tables(AN4_TABLES)
    name = f"an4/{table}.json"
    data = res(name) if (res.root / name).is_file() else None
    lines = module.BLOCKS[table](None if data is None else data[table])
    return _lines(lines + ([] if data is None else ["", provenance_line(data)]))


# ------------------------------------------------------------------------------ reliability
# docs/results/reliability/matrix.json: tools/reliability_matrix.py (a pytest run of the tests
# that pin each bad input and fault); "not run yet" while the file is absent
RELIABILITY = "reliability/matrix.json"


def reliability_matrix(res: Results) -> str:
    """The bad-input and fault matrix: expected behaviour, the tests, the result of their run."""
    if not (res.root / RELIABILITY).is_file():
        raise Pending("_Not run yet: `python tools/reliability_matrix.py` runs the tests and "
                      "writes the table._")
    data = res(RELIABILITY)
    rows = [[r["fault"], r["expected"],
             "<br>".join(f"`{t['id'].replace('tests/', '', 1)}`" for t in r["tests"]),
             r["result"]] for r in data["rows"]]
    return "\n".join(table(["input or fault", "expected behaviour", "pinned by", "result"], rows)
                     + ["", provenance_line(data)])


# ------------------------------------------------------------------------------ the pages
BLOCKS: Dict[str, Tuple[Callable[..., str], str]] = {
    "training-command": (training_command, TRAINING),
    "training-overhead": (training_overhead, TRAINING),
    "training-max-ratio": (training_max_ratio, TRAINING),
    "training-head-share": (training_head_share, TRAINING),
    "ls100-params": (ls100_params, TRAINING),
    "inference-command": (inference_command, INFERENCE),
    "inference-method": (inference_method, INFERENCE),
    "inference-speedup": (inference_speedup, INFERENCE),
    "policy-overhead": (policy_overhead, INFERENCE),
    "onnx-command": (onnx_command, ONNX),
    "onnx-speed": (onnx_speed, ONNX),
    "onnx-fsdd": (onnx_fsdd, ONNX),
    "onnx-ratio": (onnx_ratio, ONNX),
    "fsdd-command": (fsdd_command, FSDD),
    "fsdd-machine": (fsdd_machine, FSDD),
    "fsdd-params": (fsdd_params, FSDD),
    "fsdd-words": (fsdd_words, FSDD),
    "fsdd-front-share": (fsdd_front_share, FSDD),
    "fsdd-exits-at-or-below": (fsdd_exits_at_or_below, FSDD),
    "fsdd-equivalence": (fsdd_equivalence, FSDD),
    "fsdd-wer": (fsdd_wer, FSDD),
    "fsdd-costs": (fsdd_costs, FSDD),
    "fsdd-policies": (fsdd_policies, FSDD),
    "fsdd-budget": (fsdd_budget, FSDD),
    "fsdd-times": (fsdd_times, FSDD),
    "fsdd-policy-study": (fsdd_policy_study, "policies/fsdd_<model>.json"),
    "an4": (an4_table, "an4/<table>.json"),
    "reliability-matrix": (reliability_matrix, RELIABILITY),
}


def render_block(block_id: str, res: Results) -> str:
    name, *args = block_id.split()
    if name not in BLOCKS:
        raise ResultsError(f"unknown block {name!r} (known: {', '.join(sorted(BLOCKS))})")
    try:
        return BLOCKS[name][0](res, *args)
    except Pending as e:
        return str(e)
    except (KeyError, IndexError, TypeError, StopIteration) as e:
        raise ResultsError(f"{BLOCKS[name][1]} lacks what block {block_id!r} needs: "
                           f"{type(e).__name__} {e}") from e


def render_page(text: str, results: Results) -> Tuple[str, List[str], List[str]]:
    """The page with every block rendered; the ids of the blocks that changed, and errors."""
    changed: List[str] = []
    errors: List[str] = []

    def one(m: "re.Match[str]") -> str:
        block_id, body = m.group("id").strip(), m.group("body")
        try:
            new = render_block(block_id, results)
        except ResultsError as e:
            errors.append(f"{block_id}: {e}")
            return m.group(0)
        new = f"\n{new}\n" if body.startswith("\n") else new
        if new != body:
            changed.append(block_id)
        return f"<!-- generated: {block_id} -->{new}<!-- end generated -->"

    return BLOCK.sub(one, text), changed, errors


# what a measured number looks like in prose: a percentage, a speed-up, a time in ms or minutes,
# FLOPs or a model size, an approximation, or a decimal with two or more places (versions, code,
# comments and generated blocks are not prose)
TYPED_NUMBER = re.compile(
    r"~ ?\d|\b\d+\.\d+x\b|\b\d+(?:[.,]\d+)?\s?(?:%|ms\b|min(?:utes?)?\b|GFLOPs?\b|"
    r"[MG]B\b|M param|M\b)|\b\d+\.\d{2,}\b")
NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|<!--.*?-->|arXiv \S+|"
                       r"(?:Python|espnet|torch)\s*[<>=]*\s*\d+(?:\.\d+)+(?: or \d+(?:\.\d+)+)?|[<>]=?\s*\d+(?:\.\d+)+",
                       re.DOTALL)
WHOLE_PAGE_GENERATED = "<!-- generated by "  # a page another study's renderer writes whole


def typed_numbers(text: str) -> List[str]:
    """Measured-looking numbers outside generated blocks, code and comments: ``line: match``."""
    text = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = NOT_PROSE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        out += [f"line {n}: {m.group(0).strip()!r} in {line.strip()[:70]!r}"
                for m in TYPED_NUMBER.finditer(line)]
    return out


def pages(root: Path) -> List[Path]:
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def run(root: Path, results_dir: Path, check: bool) -> int:
    results = Results(results_dir)
    status = 0
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        new, changed, errors = render_page(text, results)
        rel = page.relative_to(root)
        for e in errors:
            print(f"{rel}: {e}", file=sys.stderr)
            status = 1
        for t in typed_numbers(text) if check and WHOLE_PAGE_GENERATED not in text else ():
            print(f"{rel}: typed number in prose (generate it or point at a table): {t}",
                  file=sys.stderr)
            status = 1
        if changed and check:
            print(f"{rel}: differs from {results_dir}: " + ", ".join(changed), file=sys.stderr)
            status = 1
        elif changed:
            page.write_text(new, encoding="utf-8")
            print(f"{rel}: rendered " + ", ".join(changed))
    return status


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 listing the blocks that differ from the results")
    p.add_argument("--root", type=Path, default=REPO, help="where README.md and docs/ are")
    p.add_argument("--results", type=Path, default=None,
                   help="the results folder (default: <root>/docs/results)")
    a = p.parse_args(argv)
    return run(a.root, a.results or a.root / "docs" / "results", a.check)


if __name__ == "__main__":
    sys.exit(main())
