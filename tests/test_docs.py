"""The numbers in README.md and docs/*.md come from docs/results/ through tools/render_docs.py.

- the committed pages are what the committed results render to (``render_docs.py --check``),
  and no measured-looking number is typed in their prose;
- the generator, from fixture results: every block renders, a changed results file or a
  hand-edited number is caught, a --quick results file is refused;
- the benchmarks write results files the generator reads (slow: runs them with --quick).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import render_docs  # noqa: E402

RECORD = {"command": "python benchmarks/x.py --results docs/results/bench/x.json",
          "git": {"commit": "0123456789abcdef", "dirty": False},
          "machine": {"cpu_model": "Test CPU", "cpu_count": 2, "threads": 2, "torch": "2.14.1",
                      "device": "cpu", "device_name": "CPU (Test CPU)"},
          "date": "2026-12-03T12:00:00+00:00"}


def training_fixture() -> dict:
    def row(variant, rank, memory, params, flops, wall, mem):
        return {"variant": variant, "exit_head_rank": rank, "exit_head_memory": memory,
                "params": params, "flops": flops, "wall_s": wall, "cpu_s": wall * 1.9,
                "memory_mb": mem, "saved_mb": mem / 2, "rss_mb": 2 * mem, "memory_what": "x"}

    def rows(vocab_scale):
        return [row("single", None, "keep", 34.0e6, 1e12, 2.0, 1000.0),
                row("ee", None, "keep", 40.5e6, 1e12 * (1 + 0.142 * vocab_scale), 2.36, 1142.0),
                row("ee_eager", None, "eager", 40.5e6, 1.142e12, 2.28, 1088.0),
                row("ee_rank64", 64, "keep", 35.0e6, 1.037e12, 2.146, 1080.0),
                row("ee_rank64_eager", 64, "eager", 35.0e6, 1.037e12, 2.14, 1025.0)]

    return dict(RECORD, kind="bench_training", options={"repeats": 7, "quick": False},
                tables=[{"vocab": 5000, "rows": rows(1)}, {"vocab": 256, "rows": rows(0.05)}])


def inference_fixture() -> dict:
    def threshold(policy, stride=1, stats="default"):
        return {"policy": policy, "stride": stride, "frame_stats": stats, "threshold": 0.5,
                "confidences": {"2": 0.9, "4": 0.8, "6": 0.1}}

    labels = {"entropy": threshold("entropy"), "entropy, torch ops":
              threshold("entropy", stats="torch"), "entropy stride 4": threshold("entropy", 4),
              "max_posterior": threshold("max_posterior"),
              "max_posterior stride 4": threshold("max_posterior", 4),
              "nbest_posterior": dict(threshold("nbest_posterior"), threshold=None),
              "agreement": threshold("agreement"), "learned": threshold("learned")}

    def run(scale):
        return {"fixed_ms": 92 * scale, "stock_enc_argmax_ms": 138 * scale,
                "speedup_vs_stock_encoder": 1.5 * scale, "speedup_vs_stock_search": 3.1,
                "overhead": {lab: {"median": 0.035 * scale, "q1": 0.02, "q3": 0.05,
                                   "time_ms": 95.0} for lab, t in labels.items()
                             if t["threshold"] is not None}}

    variant = {"name": "conv2d_rank64", "front": "conv2d", "exit_head_rank": 64, "vocab": 5000,
               "flops_floor": 0.028, "flops_bound": 1.47, "thresholds": labels,
               "runs": [run(1.0), run(1.3)]}
    full = dict(copy.deepcopy(variant), name="conv2d", exit_head_rank=None, flops_floor=0.101,
                runs=[run(2.5)])
    return dict(RECORD, kind="bench_inference", variants=[variant, full],
                options={"runs": 2, "overhead_rounds": 40, "quick": False})


def fsdd_fixture() -> dict:
    labels = {"asr_ee6": "EE from scratch", "asr_interctc6_as_ee": "ESPnet interCTC",
              "asr_single1": "single-exit baselines", "asr_ee6_ft": "EE fine-tuned",
              "asr_ee6_conv1d4": "EE conv1d4"}
    sets = ["test", "test_unseen_spk", "dev"]
    per_exit = [{"test_set": ts, "exits": [1, 2, 3, 4, 5, 6], "rows": [
        {"model": lab, "wer": [None if (ts == "dev" and "single" in exp) else 8.14 - i - j
                               for j in range(6)]}
        for i, (exp, lab) in enumerate(labels.items())]} for ts in sets]
    costs = {"exits": [1, 2, 3, 4, 5, 6], "rows": [
        {"model": lab, "gflops": [2.38 + 0.33 * j for j in range(6)],
         "share": [0.591 + 0.08 * j for j in range(6)]} for lab in labels.values()]}
    pol_rows = [{"decoding": "exit 1", "threshold": None, "wer": 7.4, "avg_exit": 1.0,
                 "avg_share": 0.591, "rtf": 0.0076},
                {"decoding": "entropy", "threshold": "0.05", "wer": 4.64, "avg_exit": 1.34,
                 "avg_share": 0.618, "rtf": 0.0107}]
    budgets = [{"budget": 0.5, "kind": "policy", "policy": "entropy", "threshold": None,
                "dev_wer": None, "dev_share": None, "test_wer": None, "test_share": None},
               {"budget": 0.75, "kind": "policy", "policy": "entropy", "threshold": 0.05,
                "dev_wer": 4.64, "dev_share": 0.618, "test_wer": 6.18, "test_share": 0.609},
               {"budget": 0.75, "kind": "fixed", "exit": 2, "threshold": None, "dev_wer": 2.67,
                "dev_share": 0.672, "test_wer": 2.35, "test_share": 0.672}]
    return dict(
        RECORD, kind="fsdd_study", per_exit=per_exit, costs=costs, dev="dev", test="test",
        commands=[{"date": "2026-12-03T16:20:00", "command": "./study.sh --workdir W"}],
        policy_exps=[{"name": exp, "policies": [{"test_set": ts, "rows": pol_rows}
                                                for ts in ("dev", "test")], "budgets": budgets}
                     for exp in ("asr_ee6", "asr_ee6_conv1d4")],
        times=[{"part": "prep", "seconds": 23}, {"part": "ee_concurrent_1thread", "seconds": 1752}],
        words={"test": 1020, "test_unseen_spk": 1042, "dev": 1013},
        models=[{"model": lab, "exps": [exp], "encoder_params": 2.6e6, "front_share": 0.509,
                 "front_gflops": 2.06} for exp, lab in labels.items()],
        equivalence={"identical": True, "utt": "george-test-00000", "last_layer_max_abs_diff": 0.0,
                     "stock_greedy": {str(k): "1 2" for k in range(1, 7)}})


def onnx_fixture() -> dict:
    speed = [{"exit": k, "flops_share": k / 4, "torch_s": 0.1 * k, "float32_s": 0.11 * k,
              "int8_s": 0.2 * k, "onnx_vs_torch": 1.1, "time_share": k / 4, "ok_speed": False,
              "ok_share": True} for k in (2, 4)]
    fsdd = [{"exit": k, "same_hyps_float32": True, "torch_wer": 7.843137 / k, "torch_s": 7.4 * k,
             "float32_wer": 7.843137 / k, "float32_s": 3.0 * k, "int8_wer": 8.137255 / k,
             "int8_s": 6.7 * k} for k in (1, 2)]
    return dict(RECORD, kind="bench_onnx", options={"quick": False}, speed=speed, fsdd=fsdd,
                command="python benchmarks/bench_onnx.py --results "
                        "/abs/repo/docs/results/bench/onnx.json")


@pytest.fixture()
def site(tmp_path):
    """A copy of the pages with fixture results."""
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("results"))
    results = tmp_path / "docs" / "results"
    for name, data in ((render_docs.TRAINING, training_fixture()),
                       (render_docs.INFERENCE, inference_fixture()),
                       (render_docs.FSDD, fsdd_fixture()),
                       (render_docs.ONNX, onnx_fixture())):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(json.dumps(data), encoding="utf-8")
    return tmp_path


def test_committed_pages_match_committed_results(capsys):
    status = render_docs.main(["--check"])
    assert status == 0, ("pages and docs/results/ disagree (python tools/render_docs.py):\n"
                         + capsys.readouterr().err)


def test_no_number_typed_in_prose():
    found = {p.name: render_docs.typed_numbers(p.read_text(encoding="utf-8"))
             for p in render_docs.pages(REPO)
             if render_docs.WHOLE_PAGE_GENERATED not in p.read_text(encoding="utf-8")}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_typed_numbers_finds_measurements_not_code():
    text = ("Exit 6 is 1.5x faster, +3.5% and 92 ms; ~34 M params; WER 8.14.\n"
            "`ctc_weight: 0.3` ```\n1.142\n``` Python 3.12 or 3.13, arXiv 2309.09546\n"
            "<!-- generated: x -->1.011<!-- end generated -->\n")
    hits = " ".join(render_docs.typed_numbers(text))
    for typed in ("'1.5x'", "'3.5%'", "'92 ms'", "'~3'", "'8.14'"):
        assert typed in hits, typed
    for not_typed in ("0.3", "1.142", "3.12", "2309", "1.011"):
        assert not_typed not in hits, not_typed


def test_every_block_renders_from_fixtures_and_check_catches_changes(site, capsys):
    assert render_docs.main(["--root", str(site)]) == 0, capsys.readouterr().err
    assert render_docs.main(["--root", str(site), "--check"]) == 0, capsys.readouterr().err
    readme = (site / "README.md").read_text(encoding="utf-8")
    assert "| `exit_head_rank: 64`, `exit_head_memory: eager` | 1.037 | 1.070 |" in readme
    assert "| +3.5 to +4.6% |" in readme  # a range over the runs
    assert "| `nbest_posterior` | `agreement` | `learned` | FLOPs floor" in readme
    assert "vocabulary 5000 | +3.5 to +4.6% | +3.5 to +4.6% | - | +3.5 to +4.6% | +3.5 to" in readme
    assert "python benchmarks/x.py --results docs/results/bench/x.json" in readme
    assert "34.0 M parameters + 6.5 M" in readme
    assert "| 4 | 1.000 | 400 | 440 | 800 | 1.10x | no | 1.000 | yes |" in readme  # onnx speed
    assert "| 2 | 3.92 | 3.92 | 4.07 | yes | 14.8 | 6.0 | 13.4 |" in readme  # onnx fsdd
    assert "--results docs/results/bench/onnx.json" in readme and "/abs/repo" not in readme
    assert "-->1.10x<!--" in readme and "-->0.41x<!--" in readme  # float32 / torch
    fsdd = (site / "docs" / "fsdd_study.md").read_text(encoding="utf-8")
    assert "2.6 M" in fsdd and "1,020" in fsdd and "./study.sh --workdir W" in fsdd
    assert "| EE from scratch | 8.14 |" in fsdd and "| 0.5 | entropy | none within budget |" in fsdd
    capsys.readouterr()

    # a number edited by hand in a block
    (site / "README.md").write_text(readme.replace("| 1.037 | 1.070 |", "| 1.037 | 1.060 |"))
    assert render_docs.main(["--root", str(site), "--check"]) == 1
    assert "training-overhead 5000" in capsys.readouterr().err
    (site / "README.md").write_text(readme)
    # a results file that changed after the page was rendered
    path = site / "docs" / "results" / render_docs.FSDD
    data = json.loads(path.read_text())
    data["words"]["test"] = 1021
    path.write_text(json.dumps(data))
    assert render_docs.main(["--root", str(site), "--check"]) == 1
    assert "fsdd-words test" in capsys.readouterr().err


def test_missing_or_quick_results_fail(site, capsys):
    (site / "docs" / "results" / render_docs.FSDD).unlink()
    assert render_docs.main(["--root", str(site), "--check"]) == 1
    assert "no results file" in capsys.readouterr().err
    path = site / "docs" / "results" / render_docs.TRAINING
    path.write_text(json.dumps(dict(training_fixture(), options={"quick": True})))
    assert render_docs.main(["--root", str(site), "--check"]) == 1
    assert "--quick" in capsys.readouterr().err


def test_range_formatting():
    assert render_docs.fmt_range([0.0351, 0.0349], ".1%") == "3.5%"
    assert render_docs.fmt_range([3.5, 4.72, 4.1], "+.1f", "%") == "+3.5 to +4.7%"
    assert render_docs.fmt_range([], ".1f") == "-"


@pytest.mark.slow
@pytest.mark.parametrize("script,args,blocks", [
    ("bench_training.py", ["--variants", "single", "ee", "ee_rank16_eager"],
     ["training-overhead 64", "training-max-ratio 64 ee", "training-command"]),
    ("bench_inference.py", ["--variants", "conv2d_rank8_vocab64"],
     ["policy-overhead", "inference-speedup", "inference-command", "inference-method"]),
])
def test_benchmark_writes_results_the_generator_reads(tmp_path, script, args, blocks):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick", "--threads",
                    "1", "--results", str(out), *args], check=True, cwd=REPO, timeout=1200)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["command"].startswith(f"python benchmarks/{script} --quick")
    assert data["git"]["commit"] and data["machine"]["cpu_model"] and data["date"]
    name = render_docs.TRAINING if script == "bench_training.py" else render_docs.INFERENCE
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    data["options"]["quick"] = False  # the generator refuses --quick results for the docs
    (tmp_path / name).write_text(json.dumps(data))
    res = render_docs.Results(tmp_path)
    for block in blocks:
        assert render_docs.render_block(block, res).strip(), block
