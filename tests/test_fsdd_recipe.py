"""The FSDD connected-digit recipe end to end, CI sized: egs2/fsdd_digits/asr1/run.sh with 60
training utterances, 2 epochs and a tiny 2-exit model (conf/tuning/train_ee_tiny_test.yaml), every
stage from data preparation to RESULTS.md.

Needs the FSDD recordings at ``<repo>/../shared/data/fsdd/recordings`` (or ``$FSDD_DIR``);
skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import recipe_env

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "egs2" / "fsdd_digits" / "asr1"
CONFIG = RECIPE / "conf" / "tuning" / "train_ee_tiny_test.yaml"
FSDD = Path(os.environ.get("FSDD_DIR", REPO.parent / "shared" / "data" / "fsdd" / "recordings"))
TEST_SETS = ["test", "test_unseen_spk"]

pytestmark = pytest.mark.skipif(
    not FSDD.is_dir() or not any(FSDD.glob("*.wav")),
    reason=f"FSDD recordings not found at {FSDD} (set FSDD_DIR or put shared/ beside the clone)",
)


def _env() -> dict:
    return recipe_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))


@pytest.fixture(scope="module")
def fsdd_run(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("fsdd_work")
    start = time.monotonic()
    proc = subprocess.run(
        [str(RECIPE / "run.sh"), "--fsdd_dir", str(FSDD), "--workdir", str(work),
         "--num_train", "60", "--num_dev", "10", "--num_test", "10", "--num_test_unseen", "10",
         "--asr_config", str(CONFIG), "--asr_tag", "tiny", "--exit_policies", "",
         "--inference_nj", "1", "--nj", "1"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, f"run.sh failed after {took:.0f} s:\n{proc.stdout[-6000:]}"
    print(f"fsdd recipe (tiny): {took:.0f} s")
    return {"exp": work / "exp" / "asr_tiny", "log": proc.stdout, "seconds": took}


@pytest.mark.slow
def test_training_loss_falls(fsdd_run) -> None:
    log = (fsdd_run["exp"] / "train.log").read_text(encoding="utf-8", errors="replace")
    losses = []
    for line in log.splitlines():
        m = re.search(r"(\d+)epoch results: \[train\] .*?\bloss=([0-9.eE+-]+)", line)
        if m:
            losses.append((int(m.group(1)), float(m.group(2))))
    epochs = yaml.safe_load(CONFIG.read_text())["max_epoch"]
    assert [e for e, _ in losses] == list(range(1, epochs + 1)), f"per-epoch losses: {losses}"
    assert losses[0][1] > losses[-1][1], f"training loss did not fall: {losses}"


@pytest.mark.slow
def test_results_md_has_a_row_per_exit(fsdd_run) -> None:
    exits = yaml.safe_load(CONFIG.read_text())["encoder_conf"]["exit_layers"]
    results = (fsdd_run["exp"] / "RESULTS.md").read_text(encoding="utf-8")
    for ts in TEST_SETS:
        section = re.search(rf"^### {re.escape(ts)}\b.*?(?=^#|\Z)", results, re.M | re.S)
        assert section, f"no '### {ts}' section in RESULTS.md"
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in section.group(0).splitlines()
                if line.startswith("|") and not line.startswith("|---")]
        found = sorted(int(r[0]) for r in rows if r[0].isdigit())
        assert found == exits, f"{ts}: rows for exits {found}, config has {exits}"
        for r in rows:
            if r[0].isdigit():
                assert 0.0 <= float(r[1]) <= 300.0, r


@pytest.mark.slow
def test_every_exit_decoded_and_scored(fsdd_run) -> None:
    exits = yaml.safe_load(CONFIG.read_text())["encoder_conf"]["exit_layers"]
    decode = sorted(fsdd_run["exp"].glob("decode_*"))
    assert len(decode) == 1, decode
    for ts in TEST_SETS:
        for k in exits:
            d = decode[0] / ts / f"exit{k}"
            assert (d / "score_wer" / "result.json").is_file(), d
            assert len((d / "text").read_text().splitlines()) == 10
