"""benchmarks/gpu_check.sh --dry_run on the CPU: every part runs (tiny sizes, no install) and one
results file holds them; the wheel list is what was imported minus what the GPU machine has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, recipe_env

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402


def test_dry_run_writes_one_results_file_with_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry_run",
                           "--results", str(out)], env=recipe_env(OMP_NUM_THREADS="1"),
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "failed" not in proc.stdout, proc.stdout[-4000:]
    data = json.loads(out.read_text())
    assert data["kind"] == "gpu_check" and data["options"]["dry_run"] is True
    assert data["gpu"] and data["git"] and data["date"] and "--dry_run" in data["command"]
    steps = data["parts"]["steps"]
    assert [r["variant"] for r in steps["rows"]] == ["single", "ee"]
    assert all(r["nonfinite_losses"] == 0 and r["timed_steps"] == 3 for r in steps["rows"])
    assert steps["ratios"]["step_time"] > 0
    assert data["parts"]["training"]["tables"] and data["parts"]["inference"]["variants"]
    assert set(data["seconds"]) == {"steps", "training", "inference"}


def test_wheel_list_is_imports_minus_the_preinstalled(tmp_path):
    log = tmp_path / "importtime.log"
    log.write_text("import time: self [us] | cumulative | imported package\n"
                   "import time:       120 |        120 |   yaml\n"
                   "import time:       300 |        900 | torch\n"
                   "import time:        80 |         80 |     editdistance\n"
                   "import time:        10 |         10 | json\n"
                   "import time:        70 |         70 | espnet2.tasks.asr\n")
    have = gpu_check.closure(gpu_check.PREINSTALLED)
    assert {"torch", "transformers", "pyyaml", "numpy"} <= have
    needed = gpu_check.imported_distributions(log)
    assert {"pyyaml", "torch", "editdistance", "espnet"} <= set(needed)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "wheels",
                           "--imports", str(log)], capture_output=True, text=True, check=True)
    names = [line.split("==")[0] for line in proc.stdout.split()]
    assert names == ["editdistance", "espnet"], proc.stdout


def test_help_and_bad_options():
    script = str(REPO / "benchmarks" / "gpu_check.sh")
    shown = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--prepare DIR" in shown.stdout and "--dry_run" in shown.stdout
    bad = subprocess.run(["bash", script, "--nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown option --nope" in bad.stderr
