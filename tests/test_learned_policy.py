"""The learned exit policy: logistic regression, its file, fitting from an all-exits dir."""

import numpy as np
import pytest

from espnet_early_exit.exit_classifier import (
    ExitClassifier,
    INPUTS,
    fit_from_all_exits,
    fit_logistic,
)
from espnet_early_exit.exit_trace import FEATURES, format_features
from espnet_early_exit.policies import POLICIES, get_policy


def test_fit_logistic_recovers_a_known_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, 1.0]
    z = 2.0 * x[:, 0] - 0.4 * (x[:, 1] - 10.0) + 0.5
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(float)
    model = fit_logistic(x, y, l2=0.0)
    p = model.predict(x)
    assert np.abs(p - 1 / (1 + np.exp(-z))).mean() < 0.03
    assert model.weights[2] == pytest.approx(0.0, abs=0.1)
    const = fit_logistic(x, np.ones(4000))
    assert 0.99 < const.predict(x[:1])[0] < 1.0  # all targets equal: smoothed constant


def _features(index, edits, streak, entropy):
    return {"index": index, "n_frames": 20, "entropy": entropy, "max_posterior": 1 - entropy,
            "blank_ratio": 0.5, "hyp_len": 3, "edits_prev": edits, "streak": streak}


def _all_exits_dir(root, n=60, seed=0):
    """Flat all-exits dir, 3 exits: an utterance's exit-1 / exit-2 text equals the last one's
    exactly when its entropy there is low."""
    rng = np.random.default_rng(seed)
    utts = [f"u{i:03d}" for i in range(n)]
    for i, k in enumerate((2, 4, 6)):
        d = root / f"exit{k}"
        d.mkdir(parents=True)
        text, feats = [], []
        for u in utts:
            ent = float(rng.random())
            good = k == 6 or ent < 0.5
            text.append(f"{u} {'a b c' if good else 'a x'}")
            feats.append(f"{u} {format_features(_features(i, -1 if i == 0 else 0, 0, ent))}")
        (d / "text").write_text("\n".join(text) + "\n")
        (d / "features").write_text("\n".join(feats) + "\n")
    return root


def test_fit_save_load_and_policy(tmp_path):
    from espnet_early_exit.bin import fit_exit_policy
    from espnet_early_exit.derive import load_all_exits, policy_decisions

    root = _all_exits_dir(tmp_path / "all")
    clf = fit_from_all_exits(load_all_exits(root))
    assert sorted(clf.models) == [2, 4] and set(INPUTS) <= set(FEATURES)
    assert clf.probability(2, _features(0, -1, 0, 0.1)) > 0.9
    assert clf.probability(2, _features(0, -1, 0, 0.9)) < 0.1
    assert clf.probability(6, _features(2, 0, 0, 0.9)) == 1.0  # the last exit
    assert all(s["train_accuracy"] > 0.9 for s in clf.info["per_exit"])

    model_file = tmp_path / "exp" / "model.pth"
    model_file.parent.mkdir()
    assert fit_exit_policy.main(["--all_exits_dir", str(root), "--model_file", str(model_file),
                                 "--log_level", "WARNING"]) == 0
    saved = ExitClassifier.load(tmp_path / "exp" / "exit_policy.json")
    assert saved.probability(4, _features(1, 0, 0, 0.3)) == pytest.approx(
        clf.probability(4, _features(1, 0, 0, 0.3)))

    pol = get_policy("learned", 0.5)
    with pytest.raises(FileNotFoundError, match="fit_exit_policy"):
        pol.prepare(str(tmp_path / "nowhere" / "m.pth"), [2, 4, 6])
    pol.prepare(str(model_file), [2, 4, 6])  # found beside the model by name
    data = load_all_exits(root)
    chosen = policy_decisions(data, pol, [0.5])[0.5]
    for u, (k, _) in chosen.items():
        want = 2 if data.tables[2]["text"][u] == "a b c" else (
            4 if data.tables[4]["text"][u] == "a b c" else 6)
        assert k == want, u
    assert "learned" in POLICIES and POLICIES["learned"].uses_trace
    with pytest.raises(ValueError):
        get_policy("learned", 1.5)
