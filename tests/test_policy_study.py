"""egs2/fsdd_digits/asr1/policy_study.py (issue 14's measures on the FSDD study) on the synthetic
all-exits tree of tests/test_policy_eval.py (the measures themselves are tested there)."""

from __future__ import annotations

import json

from test_policy_eval import tree  # noqa: F401 (the fixture)

from egs2.fsdd_digits.asr1 import policy_study as ps
from espnet_early_exit import policy_eval as pe


def test_main_writes_every_measure(tree):  # noqa: F811
    out = tree / "out.json"
    ps.main(["--exp_dir", str(tree / "exp"), "--decode", "decode", "--ref_dir",
             str(tree / "dump"), "--out", str(out), "--splits", "10", "--model", "synthetic"])
    d = json.loads(out.read_text())
    assert d["command"].startswith("python ") and "--splits 10" in d["command"]
    labels = set(d["policies"])
    assert {"entropy", "max_posterior", "agreement_e0", "agreement_e1", "learned_dev",
            "learned_unseen"} <= labels
    assert {r["policy"] for r in d["target_wer"]["rows"]} == labels
    assert d["gap"]["best"] in labels and d["gap"]["baseline"] in pe.BASELINES
    assert len(d["ltt"]["rows"]) == 3 * len(labels)
    assert all(0.0 <= r["violation_rate"] <= 1.0 for r in d["ltt"]["rows"])
    assert d["sets"]["dev"]["words"] == 120
    assert d["sets"]["test_unseen_spk"]["words"] == 0  # fitted on, not scored
    assert d["policies"]["learned_dev"]["fit_on"] == "dev"
    assert d["policies"]["learned_unseen"]["options"] == {}  # the fit's temporary path is not kept
    assert set(d["ltt"]["rows"][0]) == {  # the results file's schema: no certificate here
        "policy", "eps", "delta", "dev_threshold", "test_disagree", "test_share", "splits",
        "violation_rate", "mean_share", "binomial_bound", "met"}
