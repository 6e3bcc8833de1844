"""egs2/fsdd_digits/asr1/policy_study.py (issue 14's measures) on a synthetic all-exits tree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from egs2.fsdd_digits.asr1 import policy_study as ps
from espnet_early_exit.exit_trace import format_features
from espnet_early_exit.selection import ltt_select, safe_to_aggressive

SHARES = {1: 0.5, 2: 0.75, 3: 1.0}
DIGITS = ["ONE", "TWO", "THREE", "FOUR"]


def _write_set(root, set_name, n, seed):
    """exit1..3 (flat layout) + the reference text: an utterance's text at an early exit is
    right when its entropy there is low; exit 3 is right except for every tenth utterance."""
    rng = np.random.default_rng(seed)
    utts = [f"{set_name}-{i:03d}" for i in range(n)]
    refs = {u: " ".join(rng.choice(DIGITS, 3)) for u in utts}
    ent = {u: sorted(rng.random(2), reverse=True) + [0.0] for u in utts}
    prev = {}
    for i, k in enumerate(SHARES):
        d = root / "exp" / "decode" / set_name / f"exit{k}"
        d.mkdir(parents=True)
        text, feats = [], []
        for j, u in enumerate(utts):
            wrong = (k == 3 and j % 10 == 0) or (k < 3 and ent[u][i] > 0.4)
            hyp = "ONE" if wrong else refs[u]
            edits = -1 if i == 0 else int(hyp != prev[u][0])
            streak = prev[u][1] + 1 if edits == 0 else 0
            prev[u] = (hyp, streak)
            text.append(f"{u} {hyp}")
            f = {"index": i, "n_frames": 20, "entropy": ent[u][i], "max_posterior": 1 - ent[u][i],
                 "blank_ratio": 0.5, "hyp_len": len(hyp.split()), "edits_prev": edits,
                 "streak": streak}
            feats.append(f"{u} {format_features(f)}")
        (d / "text").write_text("\n".join(text) + "\n")
        (d / "features").write_text("\n".join(feats) + "\n")
    ref = root / "dump" / set_name
    ref.mkdir(parents=True)
    (ref / "text").write_text("".join(f"{u} {t}\n" for u, t in refs.items()))
    return refs


@pytest.fixture
def tree(tmp_path):
    for seed, name in enumerate(("dev", "test", "test_unseen_spk")):
        _write_set(tmp_path, name, 40, seed)
    costs = {"exits": [{"exit": k, "share": s} for k, s in SHARES.items()]}
    (tmp_path / "exp" / "exit_costs.json").write_text(json.dumps(costs))
    return tmp_path


def test_area_and_cheapest():
    upper = [{"share": 0.5, "wer": 10.0}, {"share": 1.0, "wer": 2.0}]
    lower = [{"share": 0.5, "wer": 4.0}, {"share": 0.75, "wer": 2.0}]
    # [0.5, 0.75): 10 - 4; [0.75, 1.0): 10 - 2
    assert ps.area_between(upper, lower, 0.5, 1.0) == pytest.approx(6 * 0.25 + 8 * 0.25)
    assert ps.covered(upper, [{"share": 0.6, "wer": 1.0}]) == (0.6, 1.0)
    assert ps.cheapest_within(upper, 2.1) == upper[1]
    assert ps.cheapest_within(upper, 1.0) is None


def test_ltt_pick_is_ltt_select():
    """Dropping the thresholds after the first with empirical risk > eps changes nothing."""
    rng = np.random.default_rng(3)
    flags = np.array([rng.random(100) < p for p in (0.0, 0.01, 0.03, 0.06, 0.2, 0.01)])
    order = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]
    for eps in (0.02, 0.05, 0.1):
        full = ltt_select(list(zip(order, flags)), eps, 0.1)
        assert ps.ltt_pick(order, flags, eps, 0.1).threshold == full.threshold


def test_sets_oracle_and_policies(tree):
    refs = ps.read_table(tree / "dump" / "dev" / "text")
    s = ps.load_set("dev", tree / "exp" / "decode" / "dev", refs, SHARES)
    ps.check_corpus_wer(s, refs)
    fixed = ps.fixed_points(s)
    assert [p["share"] for p in fixed] == list(SHARES.values())
    assert fixed[0]["wer"] > fixed[-1]["wer"]
    point = ps.oracle_point(s, refs)
    assert point["wer"] <= fixed[-1]["wer"] and point["share"] < 1.0
    oc = ps.oracle_curve(s, point, n_lambda=20)
    assert min(p["wer"] for p in oc) <= point["wer"]
    policy = ps.get_policy("entropy")
    chosen = ps.exit_indices(s, policy, [0.0, 0.4, 1.0])
    assert (chosen[0.0] == 2).all() and (chosen[1.0] == 0).all()
    c = ps.curve(s, chosen)
    assert c[0]["disagree"] == 0.0 and c[0]["wer"] == fixed[-1]["wer"]
    assert safe_to_aggressive("entropy", chosen) == [0.0, 0.4, 1.0]


def test_main_writes_every_measure(tree):
    out = tree / "out.json"
    ps.main(["--exp_dir", str(tree / "exp"), "--decode", "decode", "--ref_dir",
             str(tree / "dump"), "--out", str(out), "--splits", "10", "--model", "synthetic"])
    d = json.loads(out.read_text())
    assert d["command"].startswith("python ") and "--splits 10" in d["command"]
    labels = set(d["policies"])
    assert {"entropy", "max_posterior", "agreement_e0", "agreement_e1", "learned_dev",
            "learned_unseen"} <= labels
    assert {r["policy"] for r in d["target_wer"]["rows"]} == labels
    assert d["gap"]["best"] in labels and d["gap"]["baseline"] in ps.BASELINES
    assert len(d["ltt"]["rows"]) == 3 * len(labels)
    assert all(0.0 <= r["violation_rate"] <= 1.0 for r in d["ltt"]["rows"])
    assert d["sets"]["dev"]["words"] == 120
