"""espnet_early_exit.policy_eval (issue 14's measures from all-exits passes) on a synthetic tree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from espnet_early_exit import policy_eval as pe
from espnet_early_exit.exit_classifier import fit_from_all_exits
from espnet_early_exit.exit_trace import format_features
from espnet_early_exit.fileio import read_table
from espnet_early_exit.policies import get_policy
from espnet_early_exit.selection import RiskSelection, cheapest_within_wer, safe_to_aggressive

SHARES = {1: 0.5, 2: 0.75, 3: 1.0}
DIGITS = ["ONE", "TWO", "THREE", "FOUR"]
OPTS = {"wer_factor": 1.05, "max_rel": 0.05, "max_share": 0.7, "gap_target": 0.5,
        "eps": [0.05, 0.1], "delta": 0.1, "splits": 10, "seed": 0}


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
    """exp/decode/{dev,test,test_unseen_spk} (40 utterances each), dump/<set>/text,
    exp/exit_costs.json."""
    for seed, name in enumerate(("dev", "test", "test_unseen_spk")):
        _write_set(tmp_path, name, 40, seed)
    costs = {"exits": [{"exit": k, "share": s} for k, s in SHARES.items()]}
    (tmp_path / "exp" / "exit_costs.json").write_text(json.dumps(costs))
    return tmp_path


def test_area_and_cheapest():
    upper = [{"share": 0.5, "wer": 10.0}, {"share": 1.0, "wer": 2.0}]
    lower = [{"share": 0.5, "wer": 4.0}, {"share": 0.75, "wer": 2.0}]
    # [0.5, 0.75): 10 - 4; [0.75, 1.0): 10 - 2
    assert pe.area_between(upper, lower, 0.5, 1.0) == pytest.approx(6 * 0.25 + 8 * 0.25)
    assert pe.covered(upper, [{"share": 0.6, "wer": 1.0}]) == (0.6, 1.0)
    assert pe.envelope(upper, 0.9) == 10.0 and pe.envelope(upper, 0.4) is None

    def wer(p):
        return p["wer"]

    def share(p):
        return p["share"]

    assert cheapest_within_wer(upper, 2.1, wer, share) == upper[1]
    assert cheapest_within_wer(upper, 1.0, wer, share) is None
    tie = [{"share": 0.5, "wer": 3.0}, {"share": 0.5, "wer": 2.0}, {"share": 0.4, "wer": None}]
    assert cheapest_within_wer(tie, 3.0, wer, share) == tie[1]  # same share: the lower WER


def test_sets_oracle_and_policies(tree):
    refs = read_table(tree / "dump" / "dev" / "text")
    s = pe.load_set("dev", tree / "exp" / "decode" / "dev", refs, SHARES)
    pe.check_corpus_wer(s)
    fixed = pe.fixed_points(s)
    assert [p["share"] for p in fixed] == list(SHARES.values())
    assert fixed[0]["wer"] > fixed[-1]["wer"]
    point = pe.oracle_point(s)
    assert point["wer"] <= fixed[-1]["wer"] and point["share"] < 1.0
    oc = pe.oracle_curve(s, point, n_lambda=20)
    assert min(p["wer"] for p in oc) <= point["wer"]
    chosen = pe.exit_indices(s, get_policy("entropy"), [0.0, 0.4, 1.0])
    assert (chosen[0.0] == 2).all() and (chosen[1.0] == 0).all()
    c = pe.curve(s, chosen)
    assert c[0]["disagree"] == 0.0 and c[0]["wer"] == fixed[-1]["wer"]
    assert safe_to_aggressive("entropy", chosen) == [0.0, 0.4, 1.0]
    with pytest.raises(ValueError, match="without reference"):
        pe.load_set("dev", tree / "exp" / "decode" / "dev", {}, SHARES)


def test_load_sets_names_and_unscored(tree):
    sets = pe.load_sets(tree / "exp", tree / "exp" / "decode", tree / "dump",
                        ("test", "absent", "test_unseen_spk"), unscored=("test_unseen_spk",))
    assert list(sets) == ["test", "test_unseen_spk"]  # in the given order, absent ones skipped
    assert int(sets["test"].n_ref.sum()) == 120 and sets["test"].name == "test"
    assert sets["test_unseen_spk"].refs is None and int(sets["test_unseen_spk"].n_ref.sum()) == 0


def test_measure_with_a_fit_passed_in(tree):
    """Any two sets as dev / test (the outputs keyed by role); the learned policy fitted on the
    set the caller chooses; every LTT row with its dev calibration and certificate."""
    sets = pe.load_sets(tree / "exp", tree / "exp" / "decode", tree / "dump",
                        ("test", "dev", "test_unseen_spk"), unscored=("test_unseen_spk",))
    fit = tree / "fit.json"
    fit_from_all_exits(sets["test_unseen_spk"].data).save(fit)
    specs = [pe.PolicySpec("entropy", "entropy", {}),
             pe.PolicySpec("max_posterior", "max_posterior", {}),
             pe.PolicySpec("agreement_e1", "agreement", {"max_edits": 1}),
             pe.PolicySpec("learned", "learned", {}, "test_unseen_spk", str(fit))]
    m = pe.measure(sets["test"], sets["dev"], specs, OPTS)  # chosen on "test", reported on "dev"
    assert list(m) == ["fixed", "oracle", "policies", "target_wer", "gap", "ltt"]
    assert set(m["fixed"]) == set(m["oracle"]) == {"dev", "test"}
    assert m["fixed"]["dev"] == pe.fixed_points(sets["test"])
    learned = m["policies"]["learned"]
    assert learned["options"] == {} and learned["fit_on"] == "test_unseen_spk"
    assert set(learned["curves"]) == {"dev", "test"}
    assert len(learned["curves"]["dev"]) == len(pe.threshold_grid("learned"))
    assert [r["policy"] for r in m["target_wer"]["rows"]] == [s.label for s in specs]
    assert m["gap"]["baseline"] in pe.BASELINES
    assert set(m["gap"]["areas"]["learned"]) == {"dev", "test"}
    assert len(m["ltt"]) == len(specs) * len(OPTS["eps"])
    for row, sel in m["ltt"]:
        assert isinstance(sel, RiskSelection) and sel.n == 40 and sel.eps == row["eps"]
        assert sel.threshold == row["dev_threshold"] and row["splits"] == 10
        cert = sel.certificate(row["policy"], "test")
        assert list(cert) == ["n", "n_disagree", "p_value", "guarantee"]
        assert "calibrated on test" in cert["guarantee"] or "no threshold certified on test" \
            in cert["guarantee"]
    with pytest.raises(FileNotFoundError):  # a learned policy needs its fit
        pe.measure(sets["test"], sets["dev"], [pe.PolicySpec("learned", "learned", {})], OPTS)
