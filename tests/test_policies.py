"""Exit policies on constructed CTC posteriors (no model needed)."""

import itertools
import math

import pytest
import torch

from espnet_early_exit.frame_stats import frame_stats, torch_frame_stats
from espnet_early_exit.policies import (
    POLICIES,
    EntropyPolicy,
    ExitPolicy,
    MaxPosteriorPolicy,
    NBestPosteriorPolicy,
    OraclePolicy,
    ctc_prefix_beam_search,
    get_policy,
    select_exit,
)

V = 6  # blank = 0


def frames(*rows):
    """Log-posteriors (T, V) from per-frame probability lists (renormalised)."""
    p = torch.tensor(rows, dtype=torch.float64)
    p = p / p.sum(-1, keepdim=True)
    return p.log().float()


def peaky(tokens, p=0.97):
    """One frame per token id, each with probability p on it and the rest spread evenly."""
    rows = []
    for t in tokens:
        row = [(1 - p) / (V - 1)] * V
        row[t] = p
        rows.append(row)
    return frames(*rows)


def flat(T=8):
    return frames(*[[1.0] * V for _ in range(T)])


def mixed(T=8, p=0.55):
    """Moderately sure frames (between flat and peaky)."""
    return peaky([1 + t % (V - 1) for t in range(T)], p)


# ------------------------------------------------------------------- confidences
def test_entropy_is_normalised_to_0_1():
    pol = EntropyPolicy(0.5)
    assert pol.confidence(flat()) == pytest.approx(1.0, abs=1e-6)
    assert pol.confidence(peaky([1, 2, 0, 3])) < 0.15
    # exactly one-hot frames (log 0 = -inf) give 0, not NaN
    one_hot = torch.full((3, V), -math.inf)
    one_hot[:, 2] = 0.0
    assert pol.confidence(one_hot) == 0.0


def test_max_posterior_uses_non_blank_frames():
    pol = MaxPosteriorPolicy(0.5)
    # blank-dominated: 6 sure blank frames, 2 unsure non-blank frames (max 0.5)
    rows = [[0.99] + [0.002] * (V - 1)] * 6 + [[0.1, 0.5, 0.1, 0.1, 0.1, 0.1]] * 2
    lp = frames(*rows)
    assert pol.confidence(lp) == pytest.approx(0.5, abs=1e-4)  # not dragged up by blanks
    # all frames blank: mean over all frames
    all_blank = frames(*([[0.9] + [0.02] * (V - 1)] * 4 + [[0.7] + [0.06] * (V - 1)] * 4))
    assert pol.confidence(all_blank) == pytest.approx(0.8, abs=1e-4)


@pytest.mark.parametrize("scale", [0.1, 3.0, 40.0])
@pytest.mark.parametrize("name", ["entropy", "max_posterior", "nbest_posterior"])
def test_confidence_from_logits_equals_the_log_posterior_formula(name, scale):
    """The decoder's path (logits; frame statistics) gives the documented value: the same as
    confidence(log_softmax(logits)), also with very peaky frames, a large vocabulary, the
    statistics passed in, and a blank other than 0."""
    torch.manual_seed(0)
    pol = get_policy(name, 0.5)
    for vocab, blank in ((V, 0), (5000, 0), (300, 7)):
        logits = torch.randn(40, vocab) * scale
        logits[::3, blank] += 3 * scale  # some blank frames
        expected = pol.confidence(logits.log_softmax(-1), blank)
        assert pol.confidence_from_logits(logits, blank) == pytest.approx(expected, abs=2e-5)
        if pol.uses_frame_stats:  # the statistics passed in: torch ops, and the C kernel if built
            for stats in (torch_frame_stats(logits), frame_stats(logits)):
                assert pol.confidence_from_logits(logits, blank, stats) == pytest.approx(
                    expected, abs=2e-5
                )


def test_confidence_from_logits_edge_cases():
    ent, mp = EntropyPolicy(0.5), MaxPosteriorPolicy(0.5)
    # -inf logits (p = 0): the p log p = 0 rule, as on log-posteriors
    z = torch.zeros(3, V)
    z[:, 3:] = -math.inf
    assert ent.confidence_from_logits(z) == pytest.approx(math.log(3) / math.log(V), abs=1e-6)
    assert mp.confidence_from_logits(z) == pytest.approx(1 / 3, abs=1e-6)
    # equal logits everywhere: uniform (entropy 1), every frame's best is blank (a tie)
    assert ent.confidence_from_logits(torch.full((4, V), 7.0)) == pytest.approx(1.0, abs=1e-6)
    assert mp.confidence_from_logits(torch.full((4, V), 7.0)) == pytest.approx(1 / V)
    with pytest.raises(ValueError, match=r"logits must be \(T, V\)"):
        ent.confidence_from_logits(torch.zeros(0, V))


def test_nbest_posterior_peaky_vs_flat():
    pol = NBestPosteriorPolicy(0.5, nbest=4)
    assert pol.confidence(peaky([0, 3, 3, 0, 2, 0], p=0.999)) > 0.95
    c_flat = pol.confidence(flat(6))
    assert 0.25 - 1e-6 <= c_flat < 0.5  # n = 4 hypotheses: at least 1/4
    assert NBestPosteriorPolicy.posterior_of_best([-1.0]) == 1.0
    assert NBestPosteriorPolicy.posterior_of_best([0.0, 0.0]) == pytest.approx(0.5)


def _exact_label_probs(log_probs):
    """P(label sequence) summed over every CTC alignment, by brute force."""
    p = log_probs.double().exp()
    T, n_vocab = p.shape
    probs = {}
    for path in itertools.product(range(n_vocab), repeat=T):
        collapsed = [k for k, _ in itertools.groupby(path) if k != 0]
        prob = math.prod(float(p[t, s]) for t, s in enumerate(path))
        probs[tuple(collapsed)] = probs.get(tuple(collapsed), 0.0) + prob
    return probs


def test_prefix_beam_search_matches_brute_force():
    torch.manual_seed(0)
    lp = torch.randn(4, 3).log_softmax(-1)
    exact = _exact_label_probs(lp)
    hyps = ctc_prefix_beam_search(lp, beam=50, token_beam=2)
    assert len(hyps) == len(exact)  # a wide beam keeps every label sequence
    for tokens, score in hyps:
        assert math.exp(score) == pytest.approx(exact[tokens], rel=1e-5)
    best = max(exact, key=exact.get)
    assert hyps[0][0] == best


# ------------------------------------------------------------------- decisions
def run(policy, per_exit):
    """The exit a policy picks over {exit: log_probs}, evaluating lazily."""
    asked = []

    def at(k):
        asked.append(k)
        return per_exit[k]

    chosen, confs = select_exit(policy, sorted(per_exit), at)
    assert asked == [k for k in sorted(per_exit) if k <= chosen]  # nothing after it
    assert sorted(confs) == asked
    return chosen


@pytest.mark.parametrize(
    "policy",
    [
        EntropyPolicy(0.3),
        MaxPosteriorPolicy(0.8),
        NBestPosteriorPolicy(0.8, nbest=4),
    ],
    ids=lambda p: p.name,
)
def test_policies_stop_at_the_first_confident_exit(policy):
    sure = peaky([0, 1, 1, 0, 2, 0, 0, 3], p=0.99)
    assert run(policy, {2: flat(), 4: sure, 6: sure}) == 4
    assert run(policy, {2: sure, 4: flat(), 6: flat()}) == 2
    assert run(policy, {2: flat(), 4: flat(), 6: flat()}) == 6  # the last exit accepts
    assert run(policy, {2: flat(), 4: mixed(), 6: sure}) == 6


def test_blank_dominated_exit():
    # mostly sure blanks with a few sure tokens: confident for every policy
    sure_blanks = peaky([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0], p=0.99)
    # mostly sure blanks with unsure tokens: entropy is fooled (low on average),
    # max_posterior is not (it only looks at the non-blank frames)
    rows = [[0.99] + [0.002] * (V - 1)] * 10 + [[0.1, 0.3, 0.25, 0.15, 0.1, 0.1]] * 2
    unsure_tokens = frames(*rows)
    assert run(EntropyPolicy(0.3), {2: unsure_tokens, 4: sure_blanks}) == 2
    assert run(MaxPosteriorPolicy(0.8), {2: unsure_tokens, 4: sure_blanks}) == 4


def test_threshold_extremes():
    sure = peaky([1, 0, 2])
    assert run(EntropyPolicy(0.0), {1: sure, 2: sure}) == 2  # H < 0 never holds
    assert run(MaxPosteriorPolicy(0.0), {1: flat(), 2: sure}) == 1
    assert run(NBestPosteriorPolicy(1.0), {1: mixed(), 2: mixed()}) == 2


def test_oracle_select():
    pol = OraclePolicy()
    hyps = {2: "a b x", 4: "a b c", 6: "a b c"}
    chosen, confs = pol.select(hyps, "a b c")
    assert chosen == 4 and confs[4] == 1.0
    assert confs[2] == pytest.approx(1 - 1 / 3)
    # exit 2 is as good as the last exit here
    assert pol.select({2: "a b x", 4: "a b c", 6: "a b c d"}, "a b c")[0] == 2
    # the last exit is the bar, even when it is wrong: the lowest exit no worse than it
    chosen, _ = pol.select({2: "x y z", 4: "a q c", 6: "a b q"}, "a b c")
    assert chosen == 4
    with pytest.raises(ValueError, match="reference"):
        pol.select(hyps, None)


# ------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ["entropy", "max_posterior", "nbest_posterior"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_threshold_out_of_range(name, bad):
    with pytest.raises(ValueError, match=r"outside \[0.0, 1.0\]") as e:
        get_policy(name, bad)
    assert str(bad) in str(e.value)


def test_threshold_not_a_number():
    with pytest.raises(ValueError, match="not a number"):
        get_policy("entropy", "high")


def test_policies_without_threshold():
    with pytest.raises(ValueError, match="takes no threshold"):
        get_policy("fixed", 0.5)
    with pytest.raises(ValueError, match="takes no threshold"):
        get_policy("oracle", 0.5)
    pol = get_policy("entropy")  # may be built without one (to compute confidences) ...
    with pytest.raises(ValueError, match="needs exit_threshold"):
        pol.should_exit(0.1)  # ... but cannot decide


def test_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match="unknown exit policy 'greedy'.*entropy"):
        get_policy("greedy", 0.5)


def test_get_policy_options():
    pol = get_policy("nbest_posterior", 0.9, nbest=3, exit_layer=4)  # exit_layer: not its
    assert isinstance(pol, NBestPosteriorPolicy) and pol.nbest == 3 and pol.beam == 3
    assert get_policy("fixed", exit_layer=4).exit_layer == 4
    with pytest.raises(ValueError, match="exit_policy_nbest"):
        get_policy("nbest_posterior", 0.9, nbest=0)


def test_registry_takes_a_new_policy(monkeypatch):
    class MeanBlank(ExitPolicy):
        """Stop when the mean blank posterior is >= threshold."""

        name = "mean_blank"

        def confidence(self, log_probs, blank_id=0):
            return float(log_probs[:, blank_id].exp().mean())

    monkeypatch.setitem(POLICIES, "mean_blank", MeanBlank)
    pol = get_policy("mean_blank", 0.9)
    assert run(pol, {1: flat(), 2: peaky([0, 0, 0])}) == 2
    with pytest.raises(ValueError):
        get_policy("mean_blank", 2.0)


def test_frame_stride_option():
    assert get_policy("entropy", 0.5, frame_stride=4).frame_stride == 4
    assert get_policy("max_posterior", 0.5).frame_stride == 1
    assert get_policy("nbest_posterior", 0.5, frame_stride=4).frame_stride == 1  # not a mean
    with pytest.raises(ValueError, match="frame_stride"):
        get_policy("entropy", 0.5, frame_stride=0)


# ------------------------------------------------------------------- agreement, exit trace
def test_edit_distance_and_exit_view():
    from espnet_early_exit.exit_trace import FEATURES, edit_distance, exit_view, parse_features
    from espnet_early_exit.exit_trace import format_features

    assert edit_distance([], []) == 0 and edit_distance([1, 2, 3], []) == 3
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([1, 2], [2, 1]) == 2
    lp = peaky([0, 1, 1, 0, 2, 2, 0, 0])
    first = exit_view(frame_stats(lp), 2, 0, 0)
    assert first.tokens == (1, 2) and first.edits_prev is None and first.streak == 0
    assert first.blank_ratio == pytest.approx(0.5) and first.n_frames == 8
    assert first.entropy == pytest.approx(EntropyPolicy().confidence(lp), abs=1e-5)
    assert first.max_posterior == pytest.approx(MaxPosteriorPolicy().confidence(lp), abs=1e-5)
    second = exit_view(frame_stats(lp), 4, 1, 0, first)
    third = exit_view(frame_stats(peaky([1, 3])), 6, 2, 0, second)
    assert (second.edits_prev, second.streak, third.edits_prev, third.streak) == (0, 1, 1, 0)
    feats = parse_features(format_features(third.features()))
    assert list(feats) == list(FEATURES) and feats["hyp_len"] == 2 and feats["index"] == 2


@pytest.mark.parametrize(
    "patience, max_edits, expected",
    [(1, 0, 4), (2, 0, 5), (3, 0, 6), (1, 1, 2), (2, 1, 5)],
)
def test_agreement_stops_when_hypotheses_settle(patience, max_edits, expected):
    a, b, c = peaky([1, 0, 2]), peaky([1, 0, 2, 3]), peaky([1, 0, 2, 0, 3])
    # greedy hypotheses: (1 2), (1), (1 2 3), (1 2 3), (1 2 3), (); edits 1, 2, 0, 0, 3
    per_exit = {1: a, 2: peaky([1, 1]), 3: b, 4: c, 5: c, 6: flat()}
    pol = get_policy("agreement", patience, max_edits=max_edits)
    assert run(pol, per_exit) == expected
    assert pol.confidence_from_trace([]) == 0.0


def test_agreement_confidences_and_range():
    pol = get_policy("agreement", 1)
    same = peaky([1, 0, 2])
    chosen, confs = select_exit(pol, [1, 2, 3], lambda k: same)
    assert chosen == 2 and confs == {1: 0.0, 2: 1.0}
    with pytest.raises(ValueError, match="outside"):
        get_policy("agreement", 0.5)
    with pytest.raises(ValueError, match="max_edits"):
        get_policy("agreement", 1, max_edits=-1)
    with pytest.raises(RuntimeError, match="exits before"):
        pol.confidence(same)
    assert "agreement" in POLICIES and POLICIES["agreement"].uses_trace
