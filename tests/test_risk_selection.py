"""Risk-controlled thresholds (Learn-then-Test) of espnet_early_exit.selection."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from espnet_early_exit.selection import (
    binomial_tail_pvalue,
    fixed_sequence_test,
    ltt_select,
    safe_to_aggressive,
    select_threshold_risk,
)


def exact_cdf(k, n, eps):
    e = Fraction(eps)
    return float(sum(math.comb(n, i) * e**i * (1 - e) ** (n - i) for i in range(k + 1)))


@pytest.mark.parametrize("k, n, eps", [(0, 10, 0.1), (3, 10, 0.2), (5, 50, 0.05), (40, 400, 0.1),
                                       (0, 1000, 0.01), (9, 1000, 0.02), (7, 7, 0.5)])
def test_pvalue_equals_exact_and_scipy(k, n, eps):
    from scipy.stats import binom

    p = binomial_tail_pvalue(k, n, eps)
    assert p == pytest.approx(exact_cdf(k, n, eps), rel=1e-9, abs=1e-300)
    assert p == pytest.approx(float(binom.cdf(k, n, eps)), rel=1e-8, abs=1e-300)


def test_pvalue_edges_and_monotone():
    assert binomial_tail_pvalue(0, 0, 0.1) == 1.0
    assert binomial_tail_pvalue(3, 10, 0.0) == 1.0
    assert binomial_tail_pvalue(3, 10, 1.0) == 0.0
    ps = [binomial_tail_pvalue(k, 100, 0.1) for k in range(30)]
    assert all(a < b for a, b in zip(ps, ps[1:]))  # more disagreements: less evidence
    qs = [binomial_tail_pvalue(2, n, 0.1) for n in (10, 50, 100, 500)]
    assert all(a > b for a, b in zip(qs, qs[1:]))  # same count, more utterances: more evidence
    with pytest.raises(ValueError):
        binomial_tail_pvalue(-1, 10, 0.1)


def test_fixed_sequence_stops_at_the_first_acceptance():
    assert fixed_sequence_test([0.01, 0.02, 0.5, 0.01], 0.1) == 2
    assert fixed_sequence_test([0.2, 0.01], 0.1) == 0
    assert fixed_sequence_test([], 0.1) == 0
    # a later threshold with a small p-value is never reached
    sel = ltt_select([(0.9, [0] * 100), (0.8, [1] * 50 + [0] * 50), (0.7, [0] * 100)], 0.1, 0.1)
    assert sel.threshold == 0.9 and sel.n_disagree == 0 and len(sel.tests) == 2


class _Untouchable(list):
    """Flags that must not be counted: after the first threshold not rejected."""

    def __iter__(self):
        raise AssertionError("counted a threshold after the fixed sequence ended")


def test_ltt_stops_counting_at_the_first_acceptance():
    flags = [(0.9, [0] * 100), (0.8, [1] * 50 + [0] * 50), (0.7, _Untouchable([0] * 100))]
    sel = ltt_select(flags, 0.1, 0.1)
    assert sel.threshold == 0.9 and [t for t, _, _ in sel.tests] == [0.9, 0.8]
    cert = sel.certificate("entropy", "dev")
    assert cert == {"n": 100, "n_disagree": 0, "p_value": sel.p_value,
                    "guarantee": sel.guarantee("entropy", "dev")}
    assert ltt_select([(0.9, [1] * 100)], 0.1, 0.1).certificate("entropy", "dev")["n_disagree"] \
        is None


def test_order_is_safe_to_aggressive():
    assert safe_to_aggressive("max_posterior", [0.5, 0.9, 0.7]) == [0.9, 0.7, 0.5]
    assert safe_to_aggressive("entropy", [0.5, 0.1, 0.3]) == [0.1, 0.3, 0.5]
    with pytest.raises(ValueError):
        safe_to_aggressive("oracle", [1.0])


def test_guarantee_holds_on_synthetic_draws():
    """True risk r(t) known; over many calibration draws the certified threshold has risk
    > eps at most a fraction delta of the time (plus binomial noise), and is not vacuous."""
    rng = np.random.default_rng(0)
    true_risk = np.linspace(0.0, 0.3, 31)  # thresholds ordered safe -> aggressive
    eps, delta, n, draws = 0.1, 0.1, 300, 1000
    violations, chosen = 0, []
    for _ in range(draws):
        u = rng.random(n)  # one latent per utterance: disagreements nest across thresholds
        sel = ltt_select([(i, u < r) for i, r in enumerate(true_risk)], eps, delta)
        if sel.threshold is not None:
            chosen.append(sel.threshold)
            violations += true_risk[sel.threshold] > eps
    rate = violations / draws
    assert rate <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)
    assert np.mean(true_risk[chosen]) > 0.05  # useful: well past the safest thresholds


def test_ltt_arguments():
    with pytest.raises(ValueError):
        ltt_select([(1, [0, 1])], 0.0, 0.1)
    with pytest.raises(ValueError):
        ltt_select([(1, [0, 1]), (2, [0])], 0.1, 0.1)
    none = ltt_select([(1, [1] * 10)], 0.1, 0.1)
    assert none.threshold is None and "no threshold certified" in none.guarantee("entropy", "dev")


def _risk_exp(tmp_path: Path) -> Path:
    """dev: 100 utts; max_posterior at 0.9 / 0.7 / 0.5 disagrees with exit 4 on 0 / 2 / 30."""
    exp = tmp_path / "exp"
    dev = exp / "decode_x" / "dev"
    utts = [f"u{i:03d}" for i in range(100)]

    def write(name, wrong):
        d = dev / name
        (d / "score_wer").mkdir(parents=True)
        (d / "score_wer" / "result.json").write_text(json.dumps({"wer": 1.0, "n_utt": 100, "n_ref": 200, "sub": 2, "del": 0, "ins": 0}))
        (d / "text").write_text("".join(f"{u} {'x' if i < wrong else 'a b'}\n"
                                        for i, u in enumerate(utts)))
        (d / "exit").write_text("".join(f"{u} 4\n" for u in utts))

    write("exit2", 50)
    write("exit4", 0)
    for thr, wrong in ((0.9, 0), (0.7, 2), (0.5, 30)):
        write(f"max_posterior_th{thr}", wrong)
    return exp


def test_select_threshold_risk_and_cli(tmp_path, capsys):
    exp = _risk_exp(tmp_path)
    sel = select_threshold_risk(exp, "dev", "max_posterior", 0.1, 0.1)
    assert sel.threshold == 0.7 and sel.n == 100 and sel.n_disagree == 2
    assert [t for t, _, _ in sel.tests] == [0.9, 0.7, 0.5]
    assert sel.p_value == pytest.approx(exact_cdf(2, 100, 0.1))
    strict = select_threshold_risk(exp, "dev", "max_posterior", 0.01, 0.1)
    assert strict.threshold is None  # 0 / 100 does not certify 1 % at delta 0.1

    from espnet_early_exit.bin import make_results as cli

    argv = ["--exp_dir", str(exp), "--select_threshold", "dev", "max_posterior",
            "--risk", "0.1", "--delta", "0.1"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == "0.7"
    md = (exp / "RESULTS.md").read_text()
    assert "## Selected thresholds" in md and "max_posterior threshold 0.7" in md
    assert "probability >= 0.9" in md and "at most 10 %" in md
    with pytest.raises(SystemExit):
        cli.main(["--exp_dir", str(exp), "--select_threshold", "dev", "max_posterior"])
