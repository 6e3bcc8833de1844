"""The FSDD study's one command (egs2/fsdd_digits/asr1/study.sh), every part, CI sized: 16
training utterances, 1 epoch, 6 evaluation utterances per set, the study's real configs. It
checks that each part runs and lands in the tables (not the numbers: one epoch learns nothing).

Needs the FSDD recordings (see test_fsdd_recipe.py); skipped with the reason otherwise.
"""

from __future__ import annotations

import subprocess

import pytest

from test_fsdd_recipe import FSDD, RECIPE, _env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FSDD.is_dir() or not any(FSDD.glob("*.wav")),
        reason=f"FSDD recordings not found at {FSDD} (set FSDD_DIR)",
    ),
]

PARTS = "prep ee interctc decode policies single ft conv1d4 tables"


def test_study_every_part_concurrent(tmp_path):
    work = tmp_path / "study"
    cmd = [str(RECIPE / "study.sh"), "--fsdd_dir", str(FSDD), "--workdir", str(work),
           "--num_train", "16", "--num_eval", "6", "--epochs", "1", "--ft_epochs", "1",
           "--concurrent", "true", "--single_depths", "1 6", "--parts", PARTS,
           "--policies", "entropy:0.05 max_posterior:0.9 oracle"]
    proc = subprocess.run(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-6000:]
    tables = (work / "study_results.md").read_text(encoding="utf-8")
    for row in ("EE from scratch (per-exit norm+head)", "ESPnet interCTC (shared norm+head)",
                "single-exit baselines (one model per depth)",
                "EE fine-tuned from single-exit 6", "EE from scratch, conv1d4 front"):
        assert f"| {row} |" in tables, row
    # the single-exit row has depths 1 and 6 only
    line = next(l for l in tables.splitlines()
                if l.startswith("| single-exit baselines") and "(" not in l.split("|")[2])
    cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
    assert cells[0] != "-" and cells[5] != "-" and cells[1:5] == ["-"] * 4, line
    assert "## Exit policies, asr_ee6, test" in tables
    assert "## Exit policies, asr_ee6_conv1d4, test" in tables
    times = (work / "study_times.tsv").read_text(encoding="utf-8")
    for part in ("ee+interctc (concurrent, together)", "single1_2threads", "ee_ft_1epochs",
                 "policies_conv1d4"):
        assert part in times, part
    # the interCTC model, rewritten as an EE model, decodes like the stock one
    assert (work / "exp" / "asr_interctc6_as_ee" / "equivalence.json").is_file()
