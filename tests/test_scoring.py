"""Tests of espnet_early_exit.scoring, results and selection and their CLIs (score,
make_results, tradeoff's WER and decision rule)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from espnet_early_exit import scoring
from espnet_early_exit.results import collect_results, make_results
from espnet_early_exit.scoring import (
    error_counts,
    find_sclite,
    parse_sclite_summary,
    score_text,
    score_utterances,
)
from espnet_early_exit.selection import (
    best_fixed_exit,
    best_within_budget,
    select_policy_point,
    select_threshold,
)

SCLITE = find_sclite()
needs_sclite = pytest.mark.skipif(
    SCLITE is None, reason="sclite not found (install SCTK, e.g. Debian's sctk package)"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_text(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {t}".rstrip() + "\n" for u, t in lines), encoding="utf-8")
    return path


def counts_of(res: dict) -> tuple:
    return tuple(res[k] for k in ("n_utt", "n_ref", "corr", "sub", "del", "ins", "err", "sent_err"))


# ---------------------------------------------------------------------------------------
# alignment
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, hyp, expected",
    [
        ("a b c d", "a b c d", (4, 0, 0, 0)),
        ("a b c d", "a x c d", (3, 1, 0, 0)),
        ("a b c d", "a c d", (3, 0, 1, 0)),
        ("a b c d", "a b y c d", (4, 0, 0, 1)),
        ("a b c d", "", (0, 0, 4, 0)),
        ("", "a b", (0, 0, 0, 2)),
        ("a b c d", "a x c d e", (3, 1, 0, 1)),
        # sclite's costs (sub 4, ins/del 3): two subs cost 8 > one del + one ins cost 6
        ("a b c", "a c b", (2, 0, 1, 1)),
    ],
)
def test_error_counts_hand(ref, hyp, expected):
    assert error_counts(ref.split(), hyp.split()) == expected


def test_numpy_and_python_cost_matrices_agree():
    rng = random.Random(3)
    for _ in range(60):
        r = [rng.randrange(4) for _ in range(rng.randint(1, 70))]
        h = [rng.randrange(4) for _ in range(rng.randint(1, 70))]
        assert scoring._cost_matrix_np(r, h).tolist() == scoring._cost_matrix_py(r, h)


# ---------------------------------------------------------------------------------------
# score_text with the python back-end
# ---------------------------------------------------------------------------------------
def test_known_wer_python(tmp_path):
    ref = write_text(tmp_path / "data" / "text", [
        ("spk1-u1", "THE CAT SAT ON THE MAT"),  # 6 words
        ("spk1-u2", "HELLO WORLD AGAIN AND AGAIN"),  # 5 words
    ])
    hyp = write_text(tmp_path / "dec" / "text", [
        ("spk1-u1", "THE BAT SAT ON MAT"),  # 1 sub (CAT->BAT), 1 del (THE)
        ("spk1-u2", "HELLO WORLD AGAIN AND AGAIN TODAY"),  # 1 ins
    ])
    out = tmp_path / "dec" / "score_wer"
    res = score_text(ref, hyp, out, unit="word", tool="python")
    assert (res["n_ref"], res["corr"], res["sub"], res["del"], res["ins"]) == (11, 9, 1, 1, 1)
    assert res["wer"] == pytest.approx(100.0 * 3 / 11, abs=1e-5)
    assert res["n_utt"] == 2 and res["tool"] == "python"
    assert json.loads((out / "result.json").read_text()) == res
    assert (out / "ref.trn").read_text().splitlines()[0] == "THE CAT SAT ON THE MAT\t(spk1-spk1-u1)"
    assert (out / "hyp.trn").read_text().splitlines()[1] == (
        "HELLO WORLD AGAIN AND AGAIN TODAY\t(spk1-spk1-u2)")
    # the fallback's result.txt carries an sclite-style Sum line with the same counts
    assert counts_of(parse_sclite_summary((out / "result.txt").read_text())) == counts_of(res)
    assert re.search(r"\| Sum/Avg\|\s+2\s+11 \|.*27\.3", (out / "result.txt").read_text())


def test_char_level_tokens_and_cer(tmp_path):
    ref = write_text(tmp_path / "ref", [("u1", "ab  cd")])
    hyp = write_text(tmp_path / "hyp", [("u1", "ab ce")])
    res = score_text(ref, hyp, tmp_path / "score_cer", unit="char", tool="python")
    assert (tmp_path / "score_cer" / "ref.trn").read_text() == "a b <space> c d\t(u1-u1)\n"
    assert (res["n_ref"], res["sub"], res["del"], res["ins"]) == (5, 1, 0, 0)
    assert res["cer"] == pytest.approx(20.0)
    assert "wer" not in res


def test_utt2spk_next_to_ref_gives_trn_ids(tmp_path):
    ref = write_text(tmp_path / "data" / "text", [("1089-0001", "A B")])
    (tmp_path / "data" / "utt2spk").write_text("1089-0001 1089\n")
    hyp = write_text(tmp_path / "hyp", [("1089-0001", "A B")])
    score_text(ref, hyp, tmp_path / "s", tool="python")
    assert (tmp_path / "s" / "hyp.trn").read_text() == "A B\t(1089-1089-0001)\n"


def test_missing_hyp_is_all_deletions(tmp_path):
    ref = write_text(tmp_path / "ref", [("u1", "a b c"), ("u2", "d e"), ("u3", "f")])
    hyp = write_text(tmp_path / "hyp", [("u1", "a b c")])
    res = score_text(ref, hyp, tmp_path / "s", tool="python")
    assert (res["corr"], res["del"], res["sub"], res["ins"], res["n_ref"]) == (3, 3, 0, 0, 6)
    assert res["n_missing_hyp"] == 2 and res["n_utt"] == 3
    assert (tmp_path / "s" / "hyp.trn").read_text().splitlines()[1:] == ["\t(u2-u2)", "\t(u3-u3)"]


@pytest.mark.parametrize("tool", ["python", pytest.param("sclite", marks=needs_sclite)])
def test_extra_hyp_raises_naming_it(tmp_path, tool):
    ref = write_text(tmp_path / "ref", [("u1", "a b")])
    hyp = write_text(tmp_path / "hyp", [("u1", "a b"), ("ghost_utt", "x")])
    with pytest.raises(ValueError, match="ghost_utt"):
        score_text(ref, hyp, tmp_path / "s", tool=tool)
    assert not (tmp_path / "s" / "result.json").exists()


def test_stale_result_removed_and_rewritten(tmp_path):
    ref = write_text(tmp_path / "ref", [("u1", "a b")])
    hyp = write_text(tmp_path / "hyp", [("u1", "a")])
    out = tmp_path / "s"
    out.mkdir()
    (out / "result.json").write_text('{"wer": 0.0}')
    res = score_text(ref, hyp, out, tool="python")
    assert json.loads((out / "result.json").read_text())["wer"] == res["wer"] == 50.0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_nonlexical_and_nlsyms_removal(tmp_path):
    ref = write_text(tmp_path / "ref", [("u1", "{NOISE} hello [laughter] world <unk> uh")])
    hyp = write_text(tmp_path / "hyp", [("u1", "hello world <unk>")])
    plain = score_text(ref, hyp, tmp_path / "a", tool="python")
    assert plain["n_ref"] == 6 and plain["err"] == 3
    clean = score_text(ref, hyp, tmp_path / "b", tool="python", remove_nonlexical=True)
    assert (clean["n_ref"], clean["err"]) == (3, 1)  # "uh" deleted
    nls = tmp_path / "nlsyms.txt"
    nls.write_text("uh\n{NOISE}\n")
    both = score_text(ref, hyp, tmp_path / "c", tool="python", remove_nonlexical=True, nlsyms=nls)
    assert (both["n_ref"], both["err"]) == (2, 0)
    chars = score_text(ref, hyp, tmp_path / "d", unit="char", tool="python", remove_nonlexical=True,
                       nlsyms=nls)
    assert (tmp_path / "d" / "ref.trn").read_text().startswith("h e l l o <space> w o r l d\t")
    assert chars["err"] == 0


def test_tool_choice(tmp_path, monkeypatch):
    ref = write_text(tmp_path / "ref", [("u1", "a b")])
    hyp = write_text(tmp_path / "hyp", [("u1", "a c")])
    monkeypatch.setattr(scoring, "find_sclite", lambda: None)
    assert score_text(ref, hyp, tmp_path / "a", tool="auto")["tool"] == "python"
    with pytest.raises(RuntimeError, match="sclite"):
        score_text(ref, hyp, tmp_path / "b", tool="sclite")
    with pytest.raises(ValueError):
        score_text(ref, hyp, tmp_path / "c", unit="phone", tool="python")


# ---------------------------------------------------------------------------------------
# score_utterances: the same scoring in memory (tradeoff, the oracle policy)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["word", "char"])
def test_score_utterances_equals_score_text(tmp_path, unit):
    refs = [("spk1-u1", "THE CAT SAT ON THE MAT"), ("spk1-u2", "Hello {NOISE} world"),
            ("spk1-u3", "gone")]
    hyps = [("spk1-u1", "the bat sat on mat"), ("spk1-u2", "hello world again")]
    opts = dict(remove_nonlexical=True, nlsyms=["again"])
    on_disk = score_text(write_text(tmp_path / "ref", refs), write_text(tmp_path / "hyp", hyps),
                         tmp_path / "s", unit=unit, tool="python", **opts)
    in_memory = score_utterances(dict(refs), dict(hyps), unit, **opts)
    assert in_memory == on_disk and in_memory["n_missing_hyp"] == 1


def test_score_utterances_inputs():
    # sequences pair by position; ASCII case folded as sclite does
    res = score_utterances(["a B c", "d"], ["A b x", "d"])
    assert (res["n_ref"], res["sub"], res["err"], res["n_utt"]) == (4, 1, 1, 2)
    assert res["wer"] == pytest.approx(25.0)
    assert score_utterances(["A"], ["a"], case_sensitive=True)["sub"] == 1
    # no reference token: counts only, no rate
    empty = score_utterances([""], ["x y"])
    assert (empty["wer"], empty["n_ref"], empty["ins"]) == (None, 0, 2)
    with pytest.raises(ValueError, match="ghost"):
        score_utterances({"u1": "a"}, {"u1": "a", "ghost": "b"})
    with pytest.raises(ValueError, match="2 references but 1"):
        score_utterances(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unit"):
        score_utterances(["a"], ["a"], unit="phone")


def test_score_utterances_cleans_the_reference_only(monkeypatch):
    monkeypatch.setattr(scoring, "_make_cleaner", lambda name: None if name == "none" else str.lower)
    assert score_utterances(["A B"], ["A B"], case_sensitive=True, cleaner="lower")["err"] == 2
    assert score_utterances(["A B"], ["a b"], case_sensitive=True, cleaner="lower")["err"] == 0


def test_tradeoff_and_oracle_count_as_stage13():
    from espnet_early_exit.bin import tradeoff
    from espnet_early_exit.policies import word_error_rate

    refs = {"u1": "Hello World", "u2": "a b c"}
    hyps = {"u1": "hello world", "u2": "a c b", "other": "not in refs"}
    assert tradeoff.wer(refs, hyps) == pytest.approx(
        100.0 * score_utterances(refs, {u: hyps[u] for u in refs})["err"] / 5)
    assert tradeoff.wer(refs, hyps) == pytest.approx(40.0)  # sclite: 1 del + 1 ins, no case errors
    assert tradeoff.wer({}, hyps) is None
    assert word_error_rate("Hello World", "hello world") == 0.0
    assert word_error_rate("", "x y") == 2.0


def test_tradeoff_choose_is_the_decoders_rule():
    from espnet_early_exit.bin.tradeoff import choose

    confs = {2: 0.5, 4: 0.95, 6: 0.99}
    assert choose("max_posterior", 0.9, [2, 4, 6], confs) == (4, {2: 0.5, 4: 0.95})
    assert choose("max_posterior", 1.0, [2, 4, 6], confs) == (6, confs)  # the last accepts
    assert choose("entropy", 0.6, [2, 4, 6], confs) == (2, {2: 0.5})
    with pytest.raises(ValueError, match="no confidence at exit 4"):
        choose("max_posterior", 0.9, [2, 4, 6], {2: 0.5})


# ---------------------------------------------------------------------------------------
# sclite vs fallback
# ---------------------------------------------------------------------------------------
CASES = {
    "substitutions": ([("u1", "the cat sat on the mat"), ("u2", "a b c")],
                      [("u1", "the bat sat in the mat"), ("u2", "a x c")]),
    "insertions": ([("u1", "one two three")], [("u1", "zero one two two three four")]),
    "deletions": ([("u1", "one two three four five"), ("u2", "six seven")],
                  [("u1", "one three five"), ("u2", "seven")]),
    "empty_hyp": ([("u1", "a b c"), ("u2", "d e")], [("u1", ""), ("u2", "d e")]),
    "missing_hyp": ([("u1", "a b c"), ("u2", "d e"), ("u3", "f g")], [("u2", "d x")]),
    "empty_ref_utt": ([("u1", ""), ("u2", "a b")], [("u1", "x y"), ("u2", "a b")]),
    "ascii_case": ([("u1", "Hello World FOO")], [("u1", "hello world foo bar")]),
    "unicode": ([("u1", "café naïve Élan ßtraße 東京 です"), ("u2", "Ωmega ǅ")],
                [("u1", "cafe naïve élan strasse 東京 でした"), ("u2", "ωmega ǆ")]),
    "transposition": ([("u1", "a b c d e f")], [("u1", "a c b d f e")]),
}


@needs_sclite
@pytest.mark.parametrize("unit", ["word", "char"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_sclite_and_python_agree(tmp_path, case, unit):
    ref_lines, hyp_lines = CASES[case]
    ref = write_text(tmp_path / "ref", ref_lines)
    hyp = write_text(tmp_path / "hyp", hyp_lines)
    a = score_text(ref, hyp, tmp_path / "sclite", unit=unit, tool="sclite")
    b = score_text(ref, hyp, tmp_path / "python", unit=unit, tool="python")
    assert a.pop("tool") == "sclite" and b.pop("tool") == "python"
    assert a == b
    assert "Sum/Avg" in (tmp_path / "sclite" / "result.txt").read_text()


@needs_sclite
def test_sclite_hand_counts(tmp_path):
    """The sclite back-end's parsed counts match hand-computed ones."""
    ref = write_text(tmp_path / "ref", [("u1", "a b c d"), ("u2", "e f")])
    hyp = write_text(tmp_path / "hyp", [("u1", "a x c d e"), ("u2", "")])
    res = score_text(ref, hyp, tmp_path / "s", tool="sclite")
    assert (res["corr"], res["sub"], res["del"], res["ins"], res["n_ref"]) == (3, 1, 2, 1, 6)
    assert res["wer"] == pytest.approx(400.0 / 6, abs=1e-5)
    assert res["sent_err"] == 2 and res["tool"] == "sclite"


@needs_sclite
@pytest.mark.parametrize("case_sensitive", [False, True])
def test_sclite_and_python_agree_random(tmp_path, case_sensitive):
    """Many random utterances over a tiny vocabulary (lots of alignment ties), one sclite run."""
    rng = random.Random(11)
    vocab = ["a", "b", "c", "A"]
    refs, hyps = [], []
    for k in range(150):
        r = [rng.choice(vocab) for _ in range(rng.randint(0, 30))]
        h = [rng.choice(vocab) for _ in range(rng.randint(0, 30))]
        if not r:
            r = ["a"]
        refs.append((f"u{k:03d}", " ".join(r)))
        hyps.append((f"u{k:03d}", " ".join(h)))
    ref = write_text(tmp_path / "ref", refs)
    hyp = write_text(tmp_path / "hyp", hyps)
    a = score_text(ref, hyp, tmp_path / "s", tool="sclite", case_sensitive=case_sensitive)
    b = score_text(ref, hyp, tmp_path / "p", tool="python", case_sensitive=case_sensitive)
    a.pop("tool"), b.pop("tool")
    assert a == b
    # per-utterance scores as well
    per = dict(re.findall(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+ \d+ \d+ \d+)",
                          (tmp_path / "s" / "result.txt").read_text()))
    per_py = dict(re.findall(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+ \d+ \d+ \d+)",
                             (tmp_path / "p" / "result.txt").read_text()))
    assert len(per) == 150 and per == per_py


def test_find_sclite_returns_runnable_prefix():
    argv = find_sclite()
    if argv is None:
        pytest.skip("sclite not found (install SCTK, e.g. Debian's sctk package)")
    assert isinstance(argv, list) and argv and Path(argv[0]).exists()


# ---------------------------------------------------------------------------------------
# CLI: score
# ---------------------------------------------------------------------------------------
def test_score_cli(tmp_path):
    from espnet_early_exit.bin import score

    ref = write_text(tmp_path / "data" / "test" / "text", [("u1", "ab c"), ("u2", "d")])
    dec = tmp_path / "decode" / "test" / "exit2"
    hyp = write_text(dec / "text", [("u1", "ab x"), ("u2", "d")])
    rc = score.main(["--ref", str(ref), "--hyp", str(hyp), "--out", str(dec), "--tool", "python"])
    assert rc == 0
    wer = json.loads((dec / "score_wer" / "result.json").read_text())
    cer = json.loads((dec / "score_cer" / "result.json").read_text())
    assert wer["wer"] == pytest.approx(100 / 3, abs=1e-5)
    assert cer["cer"] == pytest.approx(100 / 5, abs=1e-5)
    for d in ("score_wer", "score_cer"):
        assert {p.name for p in (dec / d).iterdir()} == {"ref.trn", "hyp.trn", "result.txt", "result.json"}

    only = tmp_path / "only_char"
    assert score.main(["--ref", str(ref), "--hyp", str(hyp), "--out", str(only), "--units", "char",
                       "--tool", "python"]) == 0
    assert (only / "score_cer").is_dir() and not (only / "score_wer").exists()

    bad = write_text(tmp_path / "bad_hyp", [("zz_unknown", "x")])
    assert score.main(["--ref", str(ref), "--hyp", str(bad), "--out", str(tmp_path / "b"),
                       "--tool", "python"]) == 1


# ---------------------------------------------------------------------------------------
# RESULTS.md, plots, threshold selection
# ---------------------------------------------------------------------------------------
def _fake_result(d: Path, metric: str, n_ref: int, sub: int, dele: int, ins: int, n_utt: int = 4):
    err = sub + dele + ins
    res = {metric: 100.0 * err / n_ref, "n_ref": n_ref, "corr": n_ref - sub - dele, "sub": sub,
           "del": dele, "ins": ins, "err": err, "n_utt": n_utt, "tool": "python"}
    sd = d / f"score_{metric}"
    sd.mkdir(parents=True, exist_ok=True)
    (sd / "result.json").write_text(json.dumps(res))


def _fake_exp(tmp_path: Path) -> Path:
    exp = tmp_path / "exp" / "asr_ee"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text("encoder: ee_conformer\n")
    costs = {"front_share": 0.05, "exits": [
        {"exit": 2, "params": 2_000_000, "gflops": 0.5, "share": 0.2},
        {"exit": 4, "params": 4_000_000, "gflops": 1.0, "share": 0.4},
        {"exit": 6, "params": 6_000_000, "gflops": 1.5, "share": 0.6},
        {"exit": 10, "params": 10_000_000, "gflops": 2.5, "share": 1.0},
    ]}
    (exp / "exit_costs.json").write_text(json.dumps(costs))
    dec = exp / "decode_ctc_greedy"
    # fixed exits on "test": WER 40, 30, 20, 10 (100 words); CER = WER / 2 (200 chars)
    for k, e in [(10, 10), (2, 40), (6, 20), (4, 30)]:
        d = dec / "test" / f"exit{k}"
        _fake_result(d, "wer", 100, sub=e // 2, dele=e // 4, ins=e - e // 2 - e // 4)
        _fake_result(d, "cer", 200, sub=e, dele=0, ins=0)
    # fixed exits on "dev"
    for k, e in [(2, 50), (4, 35), (6, 25), (10, 15)]:
        _fake_result(dec / "dev" / f"exit{k}", "wer", 100, sub=e, dele=0, ins=0)
    # policies on dev: (dir, wer errors, exits of the 4 utts, rtf)
    pol = [
        ("entropy_th0.1", 16, [10, 10, 10, 6], 0.05),  # share 0.9
        ("entropy_th0.5", 18, [6, 6, 2, 6], None),  # share 0.5
        ("entropy_th1.0", 30, [2, 4, 2, 4], None),  # share 0.3
        ("max_posterior_th0.9", 17, [10, 4, 6, 4], 0.04),  # share 0.6
        ("oracle", 12, [2, 2, 4, 10], None),  # share 0.45
    ]
    for name, e, exits, rtf in pol:
        d = dec / "dev" / name
        _fake_result(d, "wer", 100, sub=e, dele=0, ins=0)
        (d / "exit").write_text("".join(f"utt{i} {x}\n" for i, x in enumerate(exits)))
        (d / "text").write_text("")
        if rtf is not None:
            (d / "timing.json").write_text(json.dumps({"rtf": rtf}))
    # a dir without scores is ignored
    (dec / "dev" / "logdir").mkdir()
    return exp


def _table_rows(md: str, header_start: str):
    lines = md.splitlines()
    out, on = [], False
    for line in lines:
        if line.startswith(header_start):
            on = True
            out.append([])
            continue
        if on:
            if line.startswith("|---"):
                continue
            if not line.startswith("|"):
                on = False
                continue
            out[-1].append(line.strip("|").split("|"))
    return out


def test_make_results(tmp_path):
    exp = _fake_exp(tmp_path)
    written = make_results(exp, exp / "RESULTS.md")
    assert [p.name for p in written] == ["RESULTS.md", "wer_vs_exit.png", "wer_vs_compute.png"]
    md = (exp / "RESULTS.md").read_text()
    assert "espnet version" in md and str(exp / "config.yaml") in md and "decode_ctc_greedy" in md

    fixed = _table_rows(md, "|exit|WER|")
    assert len(fixed) == 2  # one table per test set: dev then test
    dev, test = fixed
    assert [r[0] for r in test] == ["2", "4", "6", "10"]  # sorted numerically, every exit
    assert test[0] == ["2", "40.00", "20.00", "20.00/10.00/10.00", "2.00", "0.50", "0.200"]
    assert test[3] == ["10", "10.00", "5.00", "5.00/2.00/3.00", "10.00", "2.50", "1.000"]
    assert [r[1] for r in dev] == ["50.00", "35.00", "25.00", "15.00"]
    assert [r[2] for r in dev] == ["-"] * 4  # no CER scored on dev

    pol = _table_rows(md, "|policy|threshold|")
    assert len(pol) == 1  # only dev has policies
    rows = {(r[0], r[1]): r for r in pol[0]}
    assert rows[("entropy", "0.1")] == ["entropy", "0.1", "16.00", "-", "9.00", "0.900", "0.0500"]
    assert rows[("entropy", "0.5")][4:6] == ["5.00", "0.500"]
    assert rows[("entropy", "1.0")][4:] == ["3.00", "0.300", "-"]
    assert rows[("max_posterior", "0.9")][2:] == ["17.00", "-", "6.00", "0.600", "0.0400"]
    assert rows[("oracle", "-")][2:6] == ["12.00", "-", "4.50", "0.450"]
    assert [r[1] for r in pol[0] if r[0] == "entropy"] == ["0.1", "0.5", "1.0"]

    for name in ("wer_vs_exit.png", "wer_vs_compute.png"):
        data = (exp / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
        import matplotlib.image

        img = matplotlib.image.imread(exp / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_make_results_without_costs_and_cli(tmp_path):
    exp = _fake_exp(tmp_path)
    (exp / "exit_costs.json").unlink()
    from espnet_early_exit.bin import make_results as cli

    out = tmp_path / "report" / "R.md"
    assert cli.main(["--exp_dir", str(exp), "--out", str(out)]) == 0
    md = out.read_text()
    test = _table_rows(md, "|exit|WER|")[1]
    assert test[0] == ["2", "40.00", "20.00", "20.00/10.00/10.00", "-", "-", "-"]
    pol = {(r[0], r[1]): r for r in _table_rows(md, "|policy|threshold|")[0]}
    assert pol[("entropy", "0.5")][4:6] == ["5.00", "-"]  # avg exit known, share unknown
    assert (out.parent / "wer_vs_exit.png").read_bytes()[:8] == PNG_MAGIC
    assert (out.parent / "wer_vs_compute.png").read_bytes()[:8] == PNG_MAGIC
    assert cli.main(["--exp_dir", str(tmp_path / "nope")]) == 1


@pytest.mark.parametrize(
    "policy, max_share, expected",
    [
        ("entropy", 1.0, (0.1, 16.0, 0.9)),
        ("entropy", 0.6, (0.5, 18.0, 0.5)),
        ("entropy", 0.5, (0.5, 18.0, 0.5)),  # the bound is inclusive
        ("entropy", 0.49, (1.0, 30.0, 0.3)),
        ("entropy", 0.2, None),
        ("max_posterior", 0.7, (0.9, 17.0, 0.6)),
        ("oracle", 1.0, None),  # no thresholds
    ],
)
def test_select_threshold(tmp_path, policy, max_share, expected):
    exp = _fake_exp(tmp_path)
    got = select_threshold(exp, "dev", policy, max_share)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_selection_helpers(tmp_path):
    rows = collect_results(_fake_exp(tmp_path))
    best = select_policy_point(rows, "dev", "entropy", 0.6)
    assert (best.threshold, best.threshold_str, best.avg_share) == (0.5, "0.5", pytest.approx(0.5))
    assert select_policy_point(rows, "dev", "entropy", 0.2) is None
    fixed = best_fixed_exit(rows, "dev", 0.6)
    assert fixed.exit == 6 and fixed.wer["wer"] == 25.0
    assert best_fixed_exit(rows, "test", 0.1) is None
    # any points: ties in WER go to the smaller share, then the tie-break
    pts = [("a", 10.0, 0.5), ("b", 10.0, 0.4), ("c", 9.0, 0.7), ("d", None, 0.1), ("e", 10.0, 0.4)]
    pick = lambda b, tb=None: best_within_budget(pts, b, lambda p: p[1], lambda p: p[2], tb)  # noqa: E731
    assert pick(0.6)[0] == "b" and pick(0.7)[0] == "c" and pick(0.3) is None
    assert pick(0.6, lambda p: -ord(p[0]))[0] == "e"
