#!/usr/bin/env python3
"""The bad-input and fault matrix of docs/reliability.md, from a pytest run of the tests that pin it.

    python tools/reliability_matrix.py       # runs the tests of ROWS, writes the results file
    python tools/reliability_matrix.py --list    # the rows and their test ids, runs nothing

Each row of ROWS is one bad input or fault, the behaviour expected of the project, and the
tests that pin it. The tool runs exactly those tests (slow ones included) in one pytest run with
``--junitxml``, and writes docs/results/reliability/matrix.json: per row, each test's outcome,
and the row's result (pass when every one of its tests passed). tools/render_docs.py renders
the table of docs/reliability.md from that file (block ``reliability-matrix``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "reliability" / "matrix.json"

# (key, input or fault, expected behaviour, test ids)
ROWS: List[Tuple[str, str, str, Tuple[str, ...]]] = [
    ("corpus_root_missing", "corpus root not set or missing",
     "stage 1 stops naming the variable, the path and the expected layout",
     ("tests/test_recipe_stage1.py::test_missing_corpus_root_names_variable_path_and_layout",
      "tests/test_local_librispeech.py::test_missing_root_names_path_and_layout",
      "tests/test_local_tedlium3.py::test_missing_root_names_path_and_layout")),
    ("corpus_partial", "partial corpus (a split, a talk's audio or a file missing)",
     "stage 1 stops naming the missing path",
     ("tests/test_local_librispeech.py::test_missing_split_names_path",
      "tests/test_local_tedlium3.py::test_missing_sphere_names_file",
      "tests/test_local_tedlium3.py::test_missing_set_folder",
      "tests/test_local_an4.py::test_missing_corpus_or_file_is_named")),
    ("corrupt_audio", "corrupt audio file",
     "stage 1/3 stop naming the file; with `--skip_bad` it is skipped, counted and logged",
     ("tests/test_format_audio.py::test_corrupt_file_error_names_file",
      "tests/test_format_audio.py::test_skip_bad_counts_and_filters",
      "tests/test_local_librispeech.py::test_check_audio_names_corrupt_file")),
    ("empty_transcript", "empty transcript",
     "stage 4 drops the utterance from training and validation and counts it in `.done`",
     ("tests/test_stages.py::test_filter_dir_drops_short_long_and_empty",)),
    ("bad_stm", "bad STM times (end <= start, not a number, too few fields)",
     "the line is skipped, counted and logged with the reason; the rest is prepared",
     ("tests/test_local_tedlium3.py::test_train_line_by_line",)),
    ("wrong_rate", "audio not at 16 kHz",
     "stage 3 stops naming the file unless `--resample`; decoding (CLI and Python) refuses it, "
     "naming the file and both rates",
     ("tests/test_format_audio.py::test_wrong_rate_is_an_error_naming_file_unless_resample",
      "tests/test_inference.py::test_cli_refuses_a_wrong_sample_rate",
      "tests/test_inference.py::test_bad_audio")),
    ("bad_exit_config", "invalid exit config (`exit_layers`, `model_conf`)",
     "building the model stops naming the key and the bad value",
     ("tests/test_core.py::test_invalid_exit_layers_name_the_bad_value",
      "tests/test_core.py::test_bad_model_conf_names_the_key")),
    ("exit_not_in_model", "decoding at an exit the model does not have",
     "refused, listing the model's exits",
     ("tests/test_inference.py::test_bad_options",)),
    ("corrupt_zip", "corrupt packed model (not a zip, truncated, bad CRC)",
     "refused naming the zip (and the member); nothing unpacked",
     ("tests/test_zoo.py::test_corrupt_archives_give_clear_errors",)),
    ("unsafe_zip", "zip members with `..`, absolute paths or links; meta.yaml pointing outside",
     "refused naming the member; nothing written outside the cache",
     ("tests/test_zoo.py::test_escaping_members_are_refused",
      "tests/test_zoo.py::test_meta_yaml_pointing_outside_is_refused")),
    ("unsafe_pth", "checkpoint that would run code when unpickled",
     "refused without running it",
     ("tests/test_zoo.py::test_malicious_checkpoint_is_refused_without_running",)),
    ("missing_meta", "packed model without meta.yaml or a file it lists",
     "refused naming what is missing",
     ("tests/test_zoo.py::test_zip_lacking_a_listed_file",)),
    ("wrong_model", "model file of another config",
     "refused naming both files (not loaded half-random, as ESPnet's `strict=False` would)",
     ("tests/test_faults.py::test_model_file_of_another_config_is_refused",)),
    ("truncated_pth", "truncated checkpoint or model `.pth`",
     "one error naming the file (training resume and decoding)",
     ("tests/test_faults.py::test_truncated_model_file_is_named_at_load",
      "tests/test_faults.py::test_truncated_checkpoint_is_named_at_resume")),
    ("killed_training", "training killed (`kill -9`) in the middle of an epoch",
     "the same command resumes from the last checkpoint and finishes with the same epochs "
     "and a model that loads",
     ("tests/test_faults.py::test_killed_training_resumes_and_finishes",)),
    ("killed_decoding", "decoding (stage 12) killed in the middle of a job",
     "nothing merged or scored; the rerun decodes only the unfinished jobs",
     ("tests/test_faults.py::test_killed_decoding_reruns_only_unfinished_jobs",
      "tests/test_faults.py::test_unfinished_job_is_pending_and_never_merged")),
    ("disk_full", "disk full while decoding",
     "the job fails; no output, `.tmp` or `.done` left that a rerun would take for finished",
     ("tests/test_faults.py::test_disk_full_while_decoding_leaves_no_finished_output",
      "tests/test_faults.py::test_real_full_disk_while_decoding")),
    ("two_trainings", "two trainings on one experiment dir",
     "the second is refused, naming the lock it found",
     ("tests/test_faults.py::test_second_training_on_one_exp_dir_is_refused_fast",)),
]


def test_ids() -> List[str]:
    return [t for row in ROWS for t in row[3]]


def _case_key(classname: str, name: str) -> Tuple[str, str]:
    """A junit testcase -> (``tests/test_x.py``, function name without its parameters)."""
    parts = classname.split(".")
    while parts and not parts[-1].startswith("test_"):  # a test class: Module.TestClass
        parts.pop()
    return "/".join(parts) + ".py", name.split("[", 1)[0]


def read_junit(path: Path) -> Dict[Tuple[str, str], List[dict]]:
    """Every testcase of a junit XML file by (file, function): outcome, seconds, message."""
    cases: Dict[Tuple[str, str], List[dict]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (child.get("message") or "").strip().splitlines()[0][:200] \
                    if child.get("message") else ""
                break
        key = _case_key(case.get("classname", ""), case.get("name", ""))
        cases.setdefault(key, []).append(
            {"case": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
             "message": message})
    return cases


def row_result(outcomes: Sequence[str]) -> str:
    if not outcomes or any(o in ("failed", "error") for o in outcomes):
        return "fail"
    return "pass" if all(o == "passed" for o in outcomes) else "pass (some skipped)"


def matrix(cases: Dict[Tuple[str, str], List[dict]]) -> List[dict]:
    rows = []
    for key, fault, expected, tests in ROWS:
        entries = []
        for test in tests:
            path, name = test.split("::", 1)
            runs = cases.get((path, name), [])
            entries.append({"id": test, "runs": runs,
                            "outcome": row_result([r["outcome"] for r in runs])})
        outcomes = [r["outcome"] for e in entries for r in e["runs"]] if all(
            e["runs"] for e in entries) else []
        rows.append({"key": key, "fault": fault, "expected": expected, "tests": entries,
                     "result": row_result(outcomes)})
    return rows


def run(results: Path, pytest_args: Sequence[str]) -> int:
    sys.path.insert(0, str(REPO))
    from espnet_early_exit import provenance

    head = provenance.record("reliability_matrix")
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={junit}", *pytest_args, *test_ids()], cwd=REPO)
        if not junit.is_file():
            print(f"pytest wrote no results (exit status {proc.returncode})", file=sys.stderr)
            return 2
        rows = matrix(read_junit(junit))
    provenance.write_results(results, dict(head, pytest_exit_status=proc.returncode, rows=rows))
    failed = [r["key"] for r in rows if r["result"] == "fail"]
    print(f"{results}: {len(rows)} rows, {len(rows) - len(failed)} pass"
          + (f"; failing: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--list", action="store_true", help="print the rows and their tests only")
    a, pytest_args = p.parse_known_args(argv)
    if a.list:
        for key, fault, _, tests in ROWS:
            print(f"{key}: {fault}\n  " + "\n  ".join(tests))
        return 0
    return run(a.results, pytest_args)


if __name__ == "__main__":
    sys.exit(main())
