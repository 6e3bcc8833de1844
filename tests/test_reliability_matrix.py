"""tools/reliability_matrix.py: the fault matrix names real tests, covers the issue's list, and its
results file (docs/results/reliability/matrix.json) is what the rows list; the block renders."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import reliability_matrix as rm  # noqa: E402
import render_docs  # noqa: E402

REQUIRED = {"corpus_root_missing", "corpus_partial", "corrupt_audio", "empty_transcript",
            "bad_stm", "wrong_rate", "bad_exit_config", "exit_not_in_model", "corrupt_zip",
            "unsafe_zip", "missing_meta", "wrong_model", "truncated_pth", "killed_training",
            "killed_decoding", "disk_full", "two_trainings"}


def defined_tests(path: Path) -> set:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)}
    return names


def test_every_listed_test_exists():
    missing = []
    for test in rm.test_ids():
        path, name = test.split("::", 1)
        if not (REPO / path).is_file() or name not in defined_tests(REPO / path):
            missing.append(test)
    assert not missing, missing


def test_rows_cover_the_required_faults_once_each():
    keys = [row[0] for row in rm.ROWS]
    assert len(keys) == len(set(keys))
    assert REQUIRED <= set(keys), REQUIRED - set(keys)


def test_committed_results_are_the_listed_rows():
    if not rm.RESULTS.is_file():
        pytest.skip("no results file yet (python tools/reliability_matrix.py)")
    data = json.loads(rm.RESULTS.read_text(encoding="utf-8"))
    got = [(r["key"], r["fault"], r["expected"], tuple(t["id"] for t in r["tests"]))
           for r in data["rows"]]
    assert got == [tuple(row) for row in rm.ROWS], "rerun python tools/reliability_matrix.py"


def test_junit_outcomes_become_row_results_and_render(tmp_path):
    cases = {}
    for test in rm.test_ids():
        path, name = test.split("::", 1)
        cases[(path, name)] = [{"case": name, "outcome": "passed", "seconds": 0.1, "message": ""}]
    first = rm.ROWS[0][3][0].split("::", 1)
    cases[tuple(first)] = [{"case": first[1] + "[a]", "outcome": "failed", "seconds": 1.0,
                            "message": "boom"}]
    skipped = rm.ROWS[-1][3][0].split("::", 1)
    cases[tuple(skipped)][0]["outcome"] = "skipped"
    rows = rm.matrix(cases)
    assert rows[0]["result"] == "fail" and rows[1]["result"] == "pass"
    assert rows[-1]["result"] == "pass (some skipped)"
    del cases[tuple(rm.ROWS[1][3][0].split("::", 1))]
    assert rm.matrix(cases)[1]["result"] == "fail"  # a test that did not run

    xml = tmp_path / "junit.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.test_faults" '
                   'name="test_a[x-1]" time="0.5"><skipped message="needs root" /></testcase>'
                   '<testcase classname="tests.test_zoo.TestBox" name="test_b" time="1"/>'
                   '</testsuite></testsuites>')
    read = rm.read_junit(xml)
    assert read[("tests/test_faults.py", "test_a")][0]["outcome"] == "skipped"
    assert read[("tests/test_faults.py", "test_a")][0]["message"] == "needs root"
    assert read[("tests/test_zoo.py", "test_b")][0]["outcome"] == "passed"

    results = tmp_path / "results"
    (results / "reliability").mkdir(parents=True)
    record = {"command": "python tools/reliability_matrix.py", "git": {"commit": "0123456789"},
              "machine": {"device_name": "CPU (Test)", "cpu_count": 2},
              "date": "2026-12-03T12:00:00+00:00"}
    (results / render_docs.RELIABILITY).write_text(json.dumps(dict(record, rows=rows)))
    text = render_docs.render_block("reliability-matrix", render_docs.Results(results))
    assert text.startswith("| input or fault | expected behaviour | pinned by | result |")
    assert f"| {rm.ROWS[0][1]} | {rm.ROWS[0][2]} | `{rm.ROWS[0][3][0][6:]}`" in text
    assert text.count("\n| ") == len(rm.ROWS)  # a line per row after the header
    empty = render_docs.render_block("reliability-matrix", render_docs.Results(tmp_path))
    assert "Not run yet" in empty
