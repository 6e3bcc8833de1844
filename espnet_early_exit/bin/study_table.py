"""Helpers of egs2/fsdd_digits/asr1/study.sh (the FSDD early-exit study).

    # decode ESPnet interCTC at its intermediate layers: rewrite a stock `conformer` +
    # `interctc_layer_idx` experiment as an `ee_conformer` with a shared norm and head
    python -m espnet_early_exit.bin.study_table interctc_to_ee --src_exp exp/asr_interctc \
        --out_exp exp/asr_interctc_as_ee --verify_wav_scp dump/raw/test/wav.scp

    # the study's markdown tables
    python -m espnet_early_exit.bin.study_table tables --out study.md \
        --model "EE (from scratch)=exp/asr_ee" --model "interCTC=exp/asr_interctc_as_ee" \
        --policy_exp exp/asr_ee --times times.tsv

`interctc_to_ee`: ESPnet's Conformer applies `after_norm` to every intermediate output and its
interCTC uses the one `ctc` head, so `exit_norm: shared` + `share_exit_heads: true` is the same
network with the same parameter names; the state dict loads strictly, and the command checks on
one utterance that the stock model's `encode` (last layer and every intermediate layer) gives
the same greedy CTC output as the early-exit decoder at each exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from espnet_early_exit.scoring import (
    ScoredDir,
    atomic_write_text,
    collect_results,
    load_exit_costs,
    select_threshold,
)


# ----------------------------------------------------------------------------- interctc_to_ee
def interctc_config_to_ee(cfg: dict) -> dict:
    """The `ee_conformer`/`ee_espnet` config equivalent to a stock interCTC config."""
    if cfg.get("encoder") != "conformer":
        raise ValueError(f"encoder is {cfg.get('encoder')!r}, expected the stock 'conformer'")
    cfg = dict(cfg)
    enc = dict(cfg.get("encoder_conf") or {})
    inter = [int(k) for k in enc.pop("interctc_layer_idx", []) or []]
    if enc.pop("interctc_use_conditioning", False):
        raise ValueError("interctc_use_conditioning: true (self-conditioning) has no EE equivalent")
    n = int(enc.get("num_blocks", 6))
    enc["exit_layers"] = sorted(set(inter) | {n})
    enc["exit_norm"] = "shared"
    cfg["encoder"], cfg["encoder_conf"] = "ee_conformer", enc
    mc = dict(cfg.get("model_conf") or {})
    mc.pop("interctc_weight", None)
    mc["share_exit_heads"] = True
    mc["exit_decoders"] = "last"
    cfg["model"], cfg["model_conf"] = "ee_espnet", mc
    return cfg


def _greedy(log_probs, token_list: Sequence[str]) -> str:
    ids = log_probs.argmax(-1).tolist()
    out, prev = [], None
    for i in ids:
        if i != prev and i != 0:
            out.append(token_list[i])
        prev = i
    return "".join(out).replace("<space>", " ").strip()


def interctc_to_ee(src_exp: Path, out_exp: Path, model_file: str,
                   verify_wav_scp: Optional[Path]) -> dict:
    import shutil

    import soundfile
    import torch
    from espnet2.tasks.asr import ASRTask

    import espnet_early_exit  # noqa: F401  (registers the ee_* classes)
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    with open(src_exp / "config.yaml", encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    ee_cfg = interctc_config_to_ee(cfg)
    out_exp.mkdir(parents=True, exist_ok=True)
    with open(out_exp / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(ee_cfg, f, sort_keys=False)
    shutil.copyfile(src_exp / model_file, out_exp / model_file)
    for extra in ("train.log",):  # kept for the record (wall time, losses)
        if (src_exp / extra).is_file():
            shutil.copyfile(src_exp / extra, out_exp / f"src_{extra}")

    # strict load: every key of the stock model maps to the EE model and back
    ee_model, _ = ASRTask.build_model_from_file(out_exp / "config.yaml", None, "cpu")
    state = torch.load(out_exp / model_file, map_location="cpu")
    missing, unexpected = ee_model.load_state_dict(state, strict=False)
    report = {"missing_keys": list(missing), "unexpected_keys": list(unexpected)}
    if missing or unexpected:
        raise RuntimeError(f"state dict does not map 1:1: {report}")
    if verify_wav_scp is None:
        return report

    line = Path(verify_wav_scp).read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)
    utt, path = line[0], line[1]
    wav, fs = soundfile.read(path, dtype="float32")
    stock, _ = ASRTask.build_model_from_file(src_exp / "config.yaml", src_exp / model_file, "cpu")
    stock.eval()
    speech = torch.from_numpy(wav)[None]
    with torch.no_grad():
        enc, _ = stock.encode(speech, torch.tensor([speech.shape[1]]))
    layers: Dict[int, torch.Tensor] = {}
    if isinstance(enc, tuple):
        enc, inter = enc
        for k, h in inter:
            layers[int(k)] = h
    layers[int(ee_cfg["encoder_conf"]["num_blocks"])] = enc
    token_list = list(stock.token_list)
    stock_text = {k: _greedy(stock.ctc.log_softmax(h)[0], token_list) for k, h in layers.items()}

    s2t = EarlyExitSpeech2Text(str(out_exp / "config.yaml"), str(out_exp / model_file),
                               device="cpu", beam_size=1, ctc_weight=1.0, lm_weight=0.0,
                               nbest=1)
    per_exit = s2t.decode_all_exits(wav, fs=fs)
    ee_text = {int(k): r[0].text for k, r in per_exit.items()}
    # also the last exit's encoder output itself
    with torch.no_grad():
        ee_enc, _ = ee_model.eval().encode(speech, torch.tensor([speech.shape[1]]))
    if isinstance(ee_enc, tuple):
        ee_enc = ee_enc[0]
    max_diff = float((ee_enc - enc).abs().max())
    same = all(stock_text[k] == ee_text.get(k) for k in stock_text)
    report.update({"utt": utt, "stock_greedy": stock_text, "ee_greedy": ee_text,
                   "last_layer_max_abs_diff": max_diff, "identical": same})
    return report


# ----------------------------------------------------------------------------- tables
def _wer(r: Optional[ScoredDir]) -> str:
    return "-" if r is None or r.wer is None else f"{r.wer['wer']:.2f}"


Model = Tuple[str, List[Path]]  # a table row: its name and the experiment dir(s) that fill it


def per_exit_table(models: List[Model], test_set: str) -> List[str]:
    """One row per model, a column per exit; a row made of several experiments (e.g. one
    single-exit model per depth) takes each exit from the experiment that has it."""
    rows = {name: {r.exit: r for exp in exps for r in collect_results(exp)
                   if r.test_set == test_set and r.is_fixed} for name, exps in models}
    exits = sorted({k for v in rows.values() for k in v})
    if not exits:
        return [f"(no results for {test_set})", ""]
    out = [f"| model \\ exit | " + " | ".join(str(k) for k in exits) + " |",
           "|---|" + "---|" * len(exits)]
    for name, _ in models:
        out.append(f"| {name} | " + " | ".join(_wer(rows[name].get(k)) for k in exits) + " |")
    return out + [""]


def cost_table(models: List[Model]) -> List[str]:
    """GFLOPs and share of the full encoder per exit (exit_costs.json), one row per model."""
    costs = {}
    for name, exps in models:
        costs[name] = {}
        for exp in exps:
            costs[name].update(load_exit_costs(exp))
    exits = sorted({k for c in costs.values() for k in c})
    if not exits:
        return []
    out = ["| model \\ exit: GFLOPs (share of its full encoder) | " + " | ".join(str(k) for k in exits)
           + " |", "|---|" + "---|" * len(exits)]
    for name, c in costs.items():
        if c:
            out.append(f"| {name} | " + " | ".join(
                f"{c[k]['gflops']:.2f} ({c[k]['share']:.3f})" if k in c else "-" for k in exits) + " |")
    return out + [""]


def policy_table(exp: Path, test_set: str) -> List[str]:
    rows = [r for r in collect_results(exp) if r.test_set == test_set]
    out = ["| decoding | threshold | WER % | avg exit | avg compute share | RTF |",
           "|---|---|---|---|---|---|"]

    def f(x, spec):
        return "-" if x is None else format(x, spec)

    for r in rows:
        name = f"exit {r.exit}" if r.is_fixed else r.policy
        out.append(f"| {name} | {r.threshold_str or '-'} | {_wer(r)} | {f(r.avg_exit, '.2f')} | "
                   f"{f(r.avg_share, '.3f')} | {f(r.rtf, '.4f')} |")
    return out + [""]


def budget_table(exp: Path, dev: str, test: str, policies: Sequence[str],
                 budgets: Sequence[float]) -> List[str]:
    res = collect_results(exp)
    out = ["| budget (share of full encoder) | policy | threshold (chosen on " + dev +
           ") | dev WER % | dev share | " + test + " WER % | " + test + " share |",
           "|---|---|---|---|---|---|---|"]
    fixed = {r.exit: r for r in res if r.test_set == test and r.is_fixed}
    fixed_dev = {r.exit: r for r in res if r.test_set == dev and r.is_fixed}
    for b in budgets:
        best = None
        for pol in policies:
            try:
                sel = select_threshold(exp, dev, pol, b)
            except ValueError as e:
                logging.warning("%s", e)
                sel = None
            if sel is None:
                out.append(f"| {b:g} | {pol} | none within budget | - | - | - | - |")
                continue
            thr, dwer, dshare = sel
            t = [r for r in res if r.test_set == test and r.policy == pol
                 and r.threshold is not None and abs(r.threshold - thr) < 1e-12]
            tr = t[0] if t else None
            out.append(f"| {b:g} | {pol} | {thr:g} | {dwer:.2f} | {dshare:.3f} | {_wer(tr)} | "
                       f"{'-' if tr is None or tr.avg_share is None else format(tr.avg_share, '.3f')} |")
            if best is None or dwer < best[1]:
                best = (pol, dwer)
        # the best fixed exit within the budget, for reference
        ok = [r for k, r in fixed_dev.items() if r.avg_share is not None
              and r.avg_share <= b + 1e-12 and r.wer is not None]
        if ok:
            r = min(ok, key=lambda r: (r.wer["wer"], r.avg_share))
            tr = fixed.get(r.exit)
            out.append(f"| {b:g} | fixed exit {r.exit} | - | {_wer(r)} | {r.avg_share:.3f} | "
                       f"{_wer(tr)} | {r.avg_share:.3f} |")
    return out + [""]


def make_tables(models: List[Model], policy_exps: Sequence[Path],
                test_sets: Sequence[str], dev: str, policies: Sequence[str],
                budgets: Sequence[float], times: Optional[Path]) -> str:
    md: List[str] = ["# FSDD early-exit study: measured tables", ""]
    for ts in test_sets:
        md += [f"## Greedy CTC WER % per exit, {ts}", ""] + per_exit_table(models, ts)
    md += ["## Encoder compute per exit", ""] + cost_table(models)
    for policy_exp in policy_exps:
        for ts in (dev,) + tuple(t for t in test_sets if t != dev):
            if any(r.test_set == ts and not r.is_fixed for r in collect_results(policy_exp)):
                md += [f"## Exit policies, {policy_exp.name}, {ts}", ""] + policy_table(policy_exp, ts)
        md += [f"## Best policy under a compute budget ({policy_exp.name})", ""]
        md += budget_table(policy_exp, dev, test_sets[0], policies, budgets)
    if times is not None and times.is_file():
        md += ["## Wall times", "", "| part | seconds | minutes |", "|---|---|---|"]
        for line in times.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[1].strip().isdigit():
                s = int(parts[1])
                md.append(f"| {parts[0]} | {s} | {s / 60:.1f} |")
        md.append("")
    return "\n".join(md)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("interctc_to_ee", help="stock interCTC exp -> equivalent EE exp")
    c.add_argument("--src_exp", type=Path, required=True)
    c.add_argument("--out_exp", type=Path, required=True)
    c.add_argument("--model_file", default="valid.loss.ave.pth")
    c.add_argument("--verify_wav_scp", type=Path, default=None,
                   help="check the equivalence on the first utterance of this wav.scp")
    t = sub.add_parser("tables", help="markdown tables of the study")
    t.add_argument("--model", action="append", default=[], metavar="NAME=EXP_DIR[,EXP_DIR...]",
                   help="a row of the per-exit tables (repeat); several comma-separated dirs "
                        "fill one row, each exit from the dir that has it")
    t.add_argument("--policy_exp", type=Path, action="append", default=[],
                   help="policy and budget tables for this experiment (repeat)")
    t.add_argument("--test_sets", nargs="+", default=["test", "test_unseen_spk"])
    t.add_argument("--dev", default="dev")
    t.add_argument("--policies", nargs="+",
                   default=["entropy", "max_posterior", "nbest_posterior"])
    t.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.75])
    t.add_argument("--times", type=Path, default=None, help="TSV: part<TAB>seconds")
    t.add_argument("--out", type=Path, required=True)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if args.cmd == "interctc_to_ee":
        rep = interctc_to_ee(args.src_exp, args.out_exp, args.model_file, args.verify_wav_scp)
        atomic_write_text(args.out_exp / "equivalence.json", json.dumps(rep, indent=1) + "\n")
        print(json.dumps(rep, indent=1))
        return 0 if rep.get("identical", True) else 1
    models: List[Model] = []
    for m in args.model:
        name, _, paths = m.partition("=")
        dirs = []
        for path in filter(None, paths.split(",")):
            if Path(path).is_dir():
                dirs.append(Path(path))
            else:
                logging.warning("%s: no experiment dir %s (left out)", name, path)
        if dirs:
            models.append((name, dirs))
    policy_exps = []
    for p in args.policy_exp:
        if p.is_dir():
            policy_exps.append(p)
        else:
            logging.warning("no experiment dir %s (its policy tables are left out)", p)
    text = make_tables(models, policy_exps, args.test_sets, args.dev, args.policies,
                       args.budgets, args.times)
    atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
