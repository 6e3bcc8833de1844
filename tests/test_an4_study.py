"""The AN4 study (egs2/an4/asr1/study.sh and study_tables.py): the paired bootstrap, the results
files and page from a small fake experiment tree, the committed page against its results
files, and (slow) every part of the study on a few utterances of the shared AN4 copy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Sequence

import pytest
import yaml
from conftest import recipe_env

from egs2.an4.asr1 import study_tables as st
from egs2.an4.asr1 import study_targets
from espnet_early_exit.bin import fit_exit_policy
from espnet_early_exit.exit_trace import edit_distance, format_features
from espnet_early_exit.scoring import score_decode_dir
from tools import render_docs

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "egs2" / "an4" / "asr1"
SHARED = next((p for p in (Path(os.environ.get("AN4", "/nonexistent")), Path("/work/shared/data/an4"),
                           REPO.parent / "shared" / "data" / "an4")
               if (p / "an4" / "etc").is_dir()), None)


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_detects_a_real_difference():
    n_ref = [5] * 200
    better = [0] * 150 + [1] * 50  # A: 50 errors
    worse = [1] * 150 + [1] * 50  # B: 200 errors on the same utterances
    res = st.paired_bootstrap(better, worse, n_ref, n_resamples=2000, seed=3)
    assert res["diff"] == pytest.approx(100.0 * -150 / 1000)
    assert res["ci_low"] < res["diff"] < res["ci_high"] < 0 and res["excludes_zero"]
    assert res["share_a_not_better"] == 0.0 and res["n_utt"] == 200


def test_bootstrap_identical_systems_and_noise_contain_zero():
    n_ref = [4] * 100
    errs = [i % 3 for i in range(100)]
    same = st.paired_bootstrap(errs, errs, n_ref, n_resamples=500, seed=0)
    assert same["diff"] == 0.0 and same["ci_low"] == same["ci_high"] == 0.0
    assert not same["excludes_zero"]
    shuffled = errs[1:] + errs[:1]  # the same errors on other utterances: no real difference
    noisy = st.paired_bootstrap(errs, shuffled, n_ref, n_resamples=2000, seed=0)
    assert noisy["ci_low"] < 0 < noisy["ci_high"] and not noisy["excludes_zero"]


def test_bootstrap_is_seeded():
    a, b, n = [0, 1, 2, 0, 3, 1, 0, 2], [1, 1, 0, 2, 3, 2, 1, 2], [3] * 8
    first = st.paired_bootstrap(a, b, n, n_resamples=300, seed=7)
    assert st.paired_bootstrap(a, b, n, n_resamples=300, seed=7) == first
    other = st.paired_bootstrap(a, b, n, n_resamples=300, seed=8)
    assert (other["ci_low"], other["ci_high"]) != (first["ci_low"], first["ci_high"])
    with pytest.raises(ValueError):
        st.paired_bootstrap([1], [1, 2], [3, 3])


# ----------------------------------------------------------------------------- fake experiments
REFS = {"spka-an1-b": "A B C D", "spka-an2-b": "ONE TWO THREE", "spkb-an3-b": "YES",
        "spkb-an4-b": "R U B O U T", "spkc-an5-b": "ENTER FOUR FIVE", "spkc-an6-b": "G O"}


def hyps_with_errors(n_wrong: int) -> Dict[str, str]:
    """The references with the first word of the first ``n_wrong`` utterances replaced."""
    return {u: ("X " + r.split(" ", 1)[1] if " " in r else "X") if i < n_wrong else r
            for i, (u, r) in enumerate(REFS.items())}


def scored(exp: Path, decode: str, test_set: str, name: str, hyps: Dict[str, str], ref: Path,
           exits: Dict[str, int] = None) -> None:
    d = exp / decode / test_set / name
    d.mkdir(parents=True)
    (d / "text").write_text("".join(f"{u} {h}\n" for u, h in hyps.items()))
    if ref is not None:
        score_decode_dir(ref, d, tool="python", utt2spk=None)
    if exits:
        (d / "exit").write_text("".join(f"{u} {k}\n" for u, k in exits.items()))


def write_features(pass_dir: Path, hyps: Sequence[Dict[str, str]]) -> None:
    """``exit<k>/features`` of an all-exits pass whose exit k says ``hyps[k-1]``: entropy high
    where an exit disagrees with the last one, edits and streaks from the hypotheses."""
    prev: Dict[str, tuple] = {}
    for i, at_k in enumerate(hyps):
        lines = []
        for j, (u, h) in enumerate(at_k.items()):
            ent = (0.5 if h != hyps[-1][u] else 0.05) + 0.01 * j
            edits = -1 if i == 0 else edit_distance(h.split(), prev[u][0].split())
            streak = prev[u][1] + 1 if edits == 0 else 0
            prev[u] = (h, streak)
            lines.append(f"{u} " + format_features({
                "index": i, "n_frames": 40, "entropy": ent, "max_posterior": 1 - ent,
                "blank_ratio": 0.5, "hyp_len": len(h.split()), "edits_prev": edits, "streak": streak}))
        (pass_dir / f"exit{i + 1}" / "features").write_text("\n".join(lines) + "\n")


GREEDY = "decode_asr_asr_model_valid.loss.ave"


def fake_exp(exp: Path, ref: Path, errors: Sequence[int], epochs: int = 2,
             policies: bool = False, joint: bool = False) -> None:
    """An experiment dir as stage 12-13 leave it: exit k (1-based) has errors[k-1] wrong
    utterances on test and train_dev (an all-exits pass, with features); with ``policies``
    a few policy dirs, the unscored pass of the fit set and the learned policy's fit, with
    ``joint`` a beam-search decode dir too."""
    n = len(errors)
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump({"max_epoch": epochs}))
    (exp / "exit_costs.json").write_text(json.dumps({"exits": [
        {"exit": k, "params": 1000 * k, "gflops": 0.1 * k, "share": k / n} for k in range(1, n + 1)]}))
    for ts in ("test", "train_dev") + ((study_targets.FIT_SET,) if policies else ()):
        hyps = [hyps_with_errors(e) for e in errors]
        if ts == study_targets.FIT_SET:  # other utterances, not scored
            hyps = [{u.replace("-an", "-fit"): h for u, h in at_k.items()} for at_k in hyps]
        for k, at_k in enumerate(hyps, 1):
            scored(exp, GREEDY, ts, f"exit{k}", at_k, None if ts == study_targets.FIT_SET else ref)
        write_features(exp / GREEDY / ts, hyps)
        if policies and ts != study_targets.FIT_SET:
            for name, k in (("max_posterior_th0.9", 1), ("max_posterior_th0.99", n),
                            ("agreement_th1", 2), ("learned_th0.9", n)):
                scored(exp, GREEDY, ts, name, hyps[k - 1], ref, {u: k for u in REFS})
    if policies:
        assert fit_exit_policy.main(["--all_exits_dir", str(exp / GREEDY / study_targets.FIT_SET),
                                     "--out", str(exp / "exit_policy.json")]) == 0
    if joint:
        scored(exp, "decode_joint_beam10_asr_model_valid.loss.ave", "test", f"exit{n}",
               hyps_with_errors(0), ref)


@pytest.fixture()
def fake_study(tmp_path: Path) -> Path:
    ref = tmp_path / "ref_text"
    ref.write_text("".join(f"{u} {r}\n" for u, r in REFS.items()))
    for ts in ("test", "train_dev"):  # where study_targets reads the references (dump/raw)
        (tmp_path / "dump" / "raw" / ts).mkdir(parents=True)
        shutil.copy(ref, tmp_path / "dump" / "raw" / ts / "text")
    exp = tmp_path / "exp"
    for s, extra in ((1, 0), (2, 1)):
        fake_exp(exp / f"asr_ee_s{s}", ref, [3, 1 + extra, 0 + extra], policies=True)
        fake_exp(exp / f"asr_interctc_s{s}_as_ee", ref, [5, 3, 1 + extra])
        fake_exp(exp / f"asr_stock3_s{s}_as_ee", ref, [1])
    fake_exp(exp / "asr_stock1_s1_as_ee", ref, [4])
    fake_exp(exp / "asr_ee_ft", ref, [2, 1, 0], epochs=1)
    fake_exp(exp / "asr_ee_aed_s1", ref, [4, 2, 1], joint=True)
    (tmp_path / "times.tsv").write_text("prep\t60\tok\ntrain_ee_s1_2threads\t100\tinterrupted\n"
                                        "total\t170\tstopped\ntrain_ee_s1_2threads\t500\tok\n"
                                        "bad line\ntotal\t520\tok\n")
    return tmp_path


def test_tables_from_fake_experiments(fake_study: Path):
    out = fake_study / "results"
    commands = fake_study / "commands.tsv"
    commands.write_text("2026-12-03T10:00:00\tstudy.sh --epochs 2 \n2026-12-03T11:00:00\tstudy.sh --epochs 2 \n"
                        "2026-12-03T12:00:00\tstudy.sh --parts tables \n")
    paths = st.collect(fake_study / "exp", [1, 2], [1, 3], out, fake_study / "times.tsv", commands,
                       n_resamples=200, argv=["study_tables.py", "collect"],
                       target_options={"splits": 20})
    assert sorted(paths) == sorted(st.FILES) and all(p.is_file() for p in paths.values())
    per_exit = st.load(out, "per_exit")
    models = {m["key"]: m for m in per_exit["models"]}
    assert list(models) == ["ee", "interctc", "stock1", "stock3", "ee_ft", "ee_aed"]
    ee = models["ee"]
    assert ee["seeds"] == [1, 2] and ee["exits"] == [1, 2, 3]
    wer_per_wrong = 100.0 / sum(len(r.split()) for r in REFS.values())  # one word per wrong utterance
    assert ee["wer"]["test"]["3"] == pytest.approx([0.0, wer_per_wrong])
    summary = ee["summary"]["test"]["3"]
    assert summary["mean"] == pytest.approx(wer_per_wrong / 2) and summary["n_seeds"] == 2
    assert summary["std"] == pytest.approx(wer_per_wrong / 2 ** 0.5)
    assert models["stock1"]["summary"]["test"]["1"]["std"] is None  # one seed: no spread

    boot = st.load(out, "bootstrap")
    assert boot["seeds"] == [1, 2] and [e["exit"] for e in boot["exits"]] == [1, 2, 3]
    e1 = boot["exits"][0]
    assert e1["diff"] == pytest.approx(-2 * wer_per_wrong) and e1["n_utt"] == len(REFS)
    assert e1["ci_low"] <= e1["diff"] <= e1["ci_high"] and "excludes_zero" in e1

    pol = st.load(out, "policies")
    assert pol["seeds"] == [1, 2]
    assert [(g["policy"], g["threshold"]) for g in pol["grid"]] == [
        ("agreement", "1"), ("learned", "0.9"), ("max_posterior", "0.9"), ("max_posterior", "0.99")]
    half = {c["policy"]: c for c in pol["choices"] if c["budget"] == 0.5}
    assert set(half) == {"agreement", "learned", "max_posterior", "fixed exit"}
    assert [p["threshold"] for p in half["max_posterior"]["per_seed"]] == [0.9, 0.9]
    assert [p["threshold"] for p in half["agreement"]["per_seed"]] == [None, None]  # exit 2: 2/3
    assert half["fixed exit"]["per_seed"][0]["exit"] == 1
    assert half["max_posterior"]["test_share_mean"] == pytest.approx(1 / 3)

    beam = st.load(out, "beam")
    assert [r["decoding"].split(",")[0] for r in beam["rows"]] == ["greedy CTC", "joint CTC/attention"]
    assert beam["rows"][1]["wer"] == 0.0 and beam["espnet_reference"]["test_wer"] == 7.6
    times = st.load(out, "times")
    assert times["parts"][1] == {"part": "train_ee_s1_2threads", "seconds": 600, "tries": 2,
                                 "status": "ok"}
    assert times["total_seconds"] == 690 and times["espnet_epochs"] == 200
    assert [p["part"] for p in times["parts"]] == ["prep", "train_ee_s1_2threads"]
    assert times["commands"] == ["study.sh --epochs 2", "study.sh --parts tables"]
    assert {m["key"]: m["epochs"] for m in times["models"]}["ee_ft"] == 1
    head = json.loads(paths["times"].read_text())
    assert head["kind"] == "an4_study" and "git" in head and "machine" in head

    page = st.render_study_md(out)
    assert "Pending" not in page and "7.6" in page
    assert f"{summary['mean']:.1f} ± {summary['std']:.1f}" in page
    assert "| 2 | 1.0% | 0.00 |" in page  # 2 of ESPnet's 200 epochs, 3000 parameters
    assert f"[{e1['ci_low']:+.2f}, {e1['ci_high']:+.2f}]" in page
    # the docs generator renders the same tables, with where the numbers came from
    site = fake_study / "site_results"
    shutil.copytree(out, site / "an4")
    block = render_docs.render_block("an4 bootstrap", render_docs.Results(site))
    assert block.startswith("\n".join(st.render_bootstrap(boot)).strip("\n"))
    assert "<sub>Measured" in block and "torch" in block
    with pytest.raises(render_docs.ResultsError):
        render_docs.render_block("an4 nonsense", render_docs.Results(site))


def test_issue14_targets_from_fake_experiments(fake_study: Path):
    """targets.json: the FSDD policy study's measures per EE seed (the learned policy's fit
    beside the model), their means over seeds, and the page's issue-14 section."""
    out = fake_study / "results"
    st.collect(fake_study / "exp", [1, 2], [1, 3], out, n_resamples=50,
               target_options={"splits": 20})
    tg = st.load(out, "targets")
    labels = [label for label, _, _ in study_targets.SPECS]
    assert tg["seeds"] == [1, 2] and tg["missing"] == {} and tg["policies"] == labels
    assert tg["dev"] == "train_dev" and tg["fit_set"] == study_targets.FIT_SET
    wer_per_wrong = 100.0 / sum(len(r.split()) for r in REFS.values())
    s1, s2 = tg["per_seed"]
    assert s1["exp"] == "asr_ee_s1" and s1["n_utt"] == {"train_dev": 6, "test": 6}
    assert [f["wer"] for f in s1["fixed"]["test"]] == pytest.approx([3 * wer_per_wrong, wer_per_wrong, 0])
    # exit 3 is right everywhere for seed 1: the oracle takes exit 1 where it is right (3 of 6)
    assert s1["oracle"]["test"]["wer"] == 0.0 and s1["oracle"]["test"]["share"] == pytest.approx(
        (3 * 1 / 3 + 2 * 2 / 3 + 1 * 1.0) / 6)
    assert [r["policy"] for r in s1["target_wer"]["rows"]] == labels
    assert len(s1["ltt"]) == len(labels) * len(study_targets.OPTIONS["eps"])
    row = s1["ltt"][0]
    assert row["n"] == 6 and row["splits"] == 20 and "Learn-then-Test" in row["guarantee"] \
        or row["dev_threshold"] is None and "no threshold certified" in row["guarantee"]
    sm = tg["summary"]
    assert sm["last_test_wer"] == pytest.approx(wer_per_wrong / 2)
    assert [r["policy"] for r in sm["target"]["rows"]] == labels
    rows = {r["policy"]: r for r in sm["target"]["rows"]}
    for label, r in rows.items():  # the means over seeds of each seed's row
        per = [next(x for x in m["target_wer"]["rows"] if x["policy"] == label) for m in tg["per_seed"]]
        assert r["thresholds"] == [x["threshold"] for x in per]
        if all(x.get("test_share") is not None for x in per):
            assert r["test_share"] == pytest.approx(sum(x["test_share"] for x in per) / 2)
    assert sm["target"]["best"] in labels
    assert sm["oracle"]["test_wer"] == pytest.approx((0.0 + s2["oracle"]["test"]["wer"]) / 2)
    assert [g["seed"] for g in sm["gap"]["per_seed"]] == [1, 2]
    assert len(sm["ltt"]) == len(s1["ltt"]) and len(sm["ltt"][0]["calibration"]) == 2
    page = st.render_study_md(out)
    assert "## Issue 14's targets" in page and "Pending" not in page
    assert f"`{sm['target']['best']}`" in page and "oracle (knows the reference)" in page
    assert ("**met**" in page) or ("**not met**" in page)
    shutil.copytree(out, fake_study / "site" / "an4")
    block = render_docs.render_block("an4 targets", render_docs.Results(fake_study / "site"))
    assert block.startswith("\n".join(st.render_targets(tg)).strip("\n")) and "<sub>Measured" in block

    # a seed without its learned fit waits (pending), the other is measured alone
    (fake_study / "exp" / "asr_ee_s2" / "exit_policy.json").unlink()
    st.collect(fake_study / "exp", [1, 2], [1, 3], out, n_resamples=50, target_options={"splits": 5})
    tg = st.load(out, "targets")
    assert tg["seeds"] == [1] and "exit_policy.json" in tg["missing"]["2"]
    assert "Seed 2 pending: no exit_policy.json" in "\n".join(st.render_targets(tg))
    (fake_study / "exp" / "asr_ee_s1" / "exit_policy.json").unlink()
    st.collect(fake_study / "exp", [1, 2], [1, 3], out, n_resamples=50)
    lines = "\n".join(st.render_targets(st.load(out, "targets")))
    assert lines.startswith("*Pending:") and "Seed 1: no exit_policy.json" in lines


def test_cli_and_pending_page(fake_study: Path):
    empty = fake_study / "none"
    page = st.render_study_md(empty)
    assert page.count("*Pending:") == 6 and "7.6" in page and "3.6" in page
    assert render_docs.render_block("an4 per_exit", render_docs.Results(empty)).startswith("*Pending")
    assert f"{st.DEFAULT_EPOCHS} epochs per model" in page and "5%" in page
    assert not re.search(r"\|\s*this study", page)
    out = fake_study / "results"
    assert st.main(["collect", "--exp_dir", str(fake_study / "exp"), "--seeds", "1", "2",
                    "--single_depths", "1", "3", "--n_resamples", "100", "--ltt_splits", "5",
                    "--out_dir", str(out)]) == 0
    assert st.main(["render", "--results_dir", str(out), "--out", str(fake_study / "page.md")]) == 0
    assert (fake_study / "page.md").read_text() == st.render_study_md(out)
    command = json.loads((out / "per_exit.json").read_text())["command"]
    assert command.startswith("python egs2/an4/asr1/study_tables.py collect")


def test_committed_page_matches_its_results_files():
    """docs/an4_study.md is what docs/results/an4/ renders to (pending while absent): every
    table is a block of tools/render_docs.py and none differs."""
    text = (REPO / "docs" / "an4_study.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- generated: (an4 \w+) -->", text)
    assert sorted(b.split()[1] for b in blocks) == sorted(st.FILES)
    new, changed, errors = render_docs.render_page(text, render_docs.Results(REPO / "docs" / "results"))
    assert (changed, errors) == ([], []) and new == text


def test_study_defaults_match_the_page():
    text = (RECIPE / "study.sh").read_text()
    assert f"\nepochs={st.DEFAULT_EPOCHS}\n" in text
    assert f"\nfit_set={study_targets.FIT_SET} " in text  # where the learned policy is fitted
    assert st.STUDY_COMMAND.split(" ", 1)[1].split()[0] == "egs2/an4/asr1/study.sh"


# ----------------------------------------------------------------------------- the study, tiny
TINY = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2,
        "cnn_module_kernel": 7}


def tiny_conf(dst: Path) -> Path:
    """The recipe's conf/ with 2-block, d 32 models (same files, same options otherwise)."""
    shutil.copytree(RECIPE / "conf", dst)
    for path in (dst / "tuning").glob("train_*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        enc = cfg["encoder_conf"]
        enc.update(TINY)
        if "exit_layers" in enc:
            enc["exit_layers"] = [1, 2]
            cfg["model_conf"]["exit_weights"] = [1.0, 1.0]
        if "interctc_layer_idx" in enc:
            enc["interctc_layer_idx"] = [1]
        if "decoder_conf" in cfg:
            cfg["decoder_conf"].update(attention_heads=2, linear_units=64, num_blocks=1)
        cfg.update(batch_size=8, keep_nbest_models=1)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def small_an4(src: Path, dst: Path, n_train: int = 40, n_test: int = 6) -> Path:
    """A copy of AN4 with the first utterances of each part (audio linked, not copied)."""
    for part, n in (("train", n_train), ("test", n_test)):
        fileids = (src / "an4" / "etc" / f"an4_{part}.fileids").read_text().split()[:n]
        ids = {f.rsplit("/", 1)[1] for f in fileids}
        trans = [l for l in (src / "an4" / "etc" / f"an4_{part}.transcription").read_text().splitlines()
                 if l.rsplit("(", 1)[-1].rstrip(")").strip() in ids]
        (dst / "an4" / "etc").mkdir(parents=True, exist_ok=True)
        (dst / "an4" / "etc" / f"an4_{part}.fileids").write_text("\n".join(fileids) + "\n")
        (dst / "an4" / "etc" / f"an4_{part}.transcription").write_text("\n".join(trans) + "\n")
        for f in fileids:
            audio = next((src / "an4" / "wav").glob(f + ".*"))
            link = dst / "an4" / "wav" / audio.relative_to(src / "an4" / "wav")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(audio)
    return dst


@pytest.mark.slow
@pytest.mark.skipif(SHARED is None, reason="AN4 not found (set $AN4 to the folder holding an4/, "
                                           "or put it at ../shared/data/an4)")
def test_study_every_part_on_a_few_utterances(tmp_path: Path):
    an4_root = small_an4(SHARED, tmp_path / "an4_small")
    results = tmp_path / "results"
    cmd = [str(RECIPE / "study.sh"), "--an4_root", str(an4_root), "--workdir", str(tmp_path / "w"),
           "--conf", str(tiny_conf(tmp_path / "conf")), "--ndev_utt", "8", "--epochs", "1",
           "--ft_epochs", "1", "--seeds", "1", "--single_depths", "1 2",
           "--policies", "max_posterior:0.9 entropy:0.3", "--trace_policies", "agreement:1 learned:0.9",
           "--fit_utt", "10", "--results_dir", str(results)]
    proc = subprocess.run(cmd, env=recipe_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    per_exit = st.load(results, "per_exit")
    models = {m["key"]: m for m in per_exit["models"]}
    assert list(models) == ["ee", "interctc", "stock1", "stock2", "ee_ft", "ee_aed"]
    assert models["ee"]["exits"] == [1, 2] and models["stock1"]["exits"] == [1]
    for m in models.values():
        for ts in ("test", "train_dev"):
            assert all(v is not None for k in m["exits"] for v in m["wer"][ts][str(k)]), (m["key"], ts)
    assert [e["exit"] for e in st.load(results, "bootstrap")["exits"]] == [1, 2]
    pol = st.load(results, "policies")
    assert {c["policy"] for c in pol["choices"]} == {"entropy", "max_posterior", "agreement", "learned",
                                                     "fixed exit"}
    assert len(pol["grid"]) == 4
    # the learned policy: fitted on every 4th of the 32 train_nodev utterances, never scored
    work = tmp_path / "w"
    fit = (work / "dump" / "raw" / study_targets.FIT_SET / "wav.scp").read_text().split("\n")
    assert len([line for line in fit if line]) == 8
    assert (work / "exp" / "asr_ee_s1" / "exit_policy.json").is_file()
    assert not list((work / "exp" / "asr_ee_s1").glob(f"decode_*/{study_targets.FIT_SET}/*/score_wer"))
    targets = st.load(results, "targets")
    assert targets["seeds"] == [1] and targets["missing"] == {}
    assert [r["policy"] for r in targets["summary"]["target"]["rows"]] == targets["policies"]
    for tag in ("interctc_s1", "stock1_s1", "stock2_s1"):  # the rewritten models decode alike
        eq = json.loads((tmp_path / "w" / "exp" / f"asr_{tag}_as_ee" / "equivalence.json").read_text())
        assert eq["identical"], eq
    assert len(st.load(results, "beam")["rows"]) == 2
    parts = {p["part"] for p in st.load(results, "times")["parts"]}
    for part in ("prep", "train_ee_s1_1thread_concurrent", "convert_interctc_s1", "decode_stock2_s1",
                 "train_ee_aed_s1_1thread_concurrent",
                 "ft_add_exits", "train_ee_ft_1thread_concurrent", "decode_ee_aed_s1_joint_beam10",
                 "policies_ee_s1", "fit_set", "decode_fit_ee_s1", "fit_policy_ee_s1",
                 "trace_policies_ee_s1"):
        assert part in parts, part
    assert (tmp_path / "w" / "study_results.md").read_text() == st.render_study_md(results)
    # resumable: a second run skips every finished part
    again = subprocess.run(cmd + ["--parts", "ee interctc single ft aed policies"],
                           env=recipe_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
    assert again.returncode == 0 and ": start" not in again.stdout, again.stdout[-3000:]
