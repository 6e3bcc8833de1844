#!/usr/bin/env python3
"""WER / compute trade-off of an exit policy over many thresholds, from ONE all-exits pass.

    python -m espnet_early_exit.bin.asr_inference ... --all_exits true \
        --exit_policy entropy --output_dir decode/dev            # hyps + confidences per exit
    python -m espnet_early_exit.bin.tradeoff --all_exits_dir decode/dev \
        --thresholds 0.05 0.1 0.2 0.3 --ref_text data/dev/text \
        --exit_costs exp/asr_x/exit_costs.json [--write_dir decode/dev_policies]

A threshold policy's decision at exit k depends only on its confidences at exits <= k, and its
hypothesis is the one decoded at the chosen exit; an all-exits pass records both for every
exit (``exit<k>/1best_recog/{text,confidence,...}``), so the policy's output at any threshold
follows without decoding again (the same result as decoding with ``--exit_policy``; only the
timing is not measured). The table lists, per threshold, the mean exit, the mean compute
share (exit_costs.json) and the WER against ``--ref_text`` (counted as stage 13 counts it:
:func:`espnet_early_exit.scoring.score_utterances`); the fixed exits are listed too.
``--write_dir`` writes ``<policy>_th<threshold>/1best_recog/`` in the decoding CLI's format.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

from espnet_early_exit.fileio import read_table, write_table
from espnet_early_exit.policies import POLICIES, first_accepted_exit
from espnet_early_exit.scoring import score_utterances

FILES = ("text", "token", "token_int", "score")


def parse_confidences(value: str) -> Dict[int, float]:
    out = {}
    for item in value.split():
        k, c = item.split(":")
        out[int(k)] = float(c)
    return out


def load_all_exits(root: Path):
    """({exit: {file: {utt: value}}}, [exits], policy name or None)."""
    exits = sorted(
        int(m.group(1))
        for p in root.iterdir()
        if p.is_dir() and (m := re.fullmatch(r"exit(\d+)", p.name))
    )
    if not exits:
        raise ValueError(f"{root}: no exit<k>/ dirs (decode with --all_exits true)")
    data = {
        k: {
            f: read_table(root / f"exit{k}" / "1best_recog" / f, duplicates="last", missing_ok=True)
            for f in FILES + ("confidence",)
        }
        for k in exits
    }
    policy = None
    timing = root / "timing.json"
    if timing.is_file():
        policy = json.loads(timing.read_text()).get("policy")
    return data, exits, policy


def choose(policy_name: str, threshold: float, exits: List[int], confs: Dict[int, float]):
    """(exit, {exit: confidence} evaluated) of the policy at ``threshold`` from recorded
    confidences: the decoder's rule (:func:`policies.first_accepted_exit`)."""

    def confidence_at(k: int) -> float:
        if k not in confs:
            raise ValueError(f"no confidence at exit {k}")
        return confs[k]

    return first_accepted_exit(POLICIES[policy_name](threshold), exits, confidence_at)


def wer(refs: Dict[str, str], hyps: Dict[str, str]) -> Optional[float]:
    """WER (%) of ``hyps`` on the utterances of ``refs`` as stage 13 counts it (None: no refs)."""
    if not refs:
        return None
    res = score_utterances(refs, {u: hyps.get(u, "") for u in refs})
    return 100.0 * res["err"] / max(res["n_ref"], 1)


def main(cmd=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all_exits_dir", required=True, type=Path)
    ap.add_argument("--policy", default=None, help="default: the one the pass recorded")
    ap.add_argument("--thresholds", type=float, nargs="+", required=True)
    ap.add_argument("--ref_text", type=Path, default=None)
    ap.add_argument("--exit_costs", type=Path, default=None)
    ap.add_argument("--write_dir", type=Path, default=None)
    args = ap.parse_args(cmd)

    data, exits, recorded = load_all_exits(args.all_exits_dir)
    policy = args.policy or recorded
    if policy is None or policy not in POLICIES or not POLICIES[policy].dynamic:
        raise ValueError(f"--policy: need a threshold policy, got {policy!r}")
    if recorded is not None and recorded != policy:
        raise ValueError(
            f"{args.all_exits_dir} holds {recorded!r} confidences, not {policy!r}"
        )
    for t in args.thresholds:
        POLICIES[policy].check_threshold(t)
    last = exits[-1]
    utts = sorted(data[last]["confidence"])
    all_confs = {u: parse_confidences(data[last]["confidence"][u]) for u in utts}
    refs = read_table(args.ref_text, duplicates="last", missing_ok=True) if args.ref_text else {}
    refs = {u: refs[u] for u in utts if u in refs}
    share = {}
    if args.exit_costs:
        share = {e["exit"]: e["share"] for e in json.loads(args.exit_costs.read_text())["exits"]}

    rows = []
    for k in exits:
        rows.append((f"exit{k}", float(k), share.get(k), wer(refs, data[k]["text"])))
    for t in args.thresholds:
        chosen = {u: choose(policy, t, exits, all_confs[u]) for u in utts}
        hyps = {u: data[k]["text"].get(u, "") for u, (k, _) in chosen.items()}
        mean_exit = sum(k for k, _ in chosen.values()) / max(len(chosen), 1)
        mean_share = (
            sum(share[k] for k, _ in chosen.values()) / max(len(chosen), 1) if share else None
        )
        name = f"{policy}_th{t:g}"
        rows.append((name, mean_exit, mean_share, wer(refs, hyps)))
        if args.write_dir:
            best = args.write_dir / name / "1best_recog"
            for f in FILES:
                write_table(best / f, {
                    u: data[k][f][u] for u, (k, _) in chosen.items() if u in data[k][f]
                })
            write_table(best / "exit", {u: str(k) for u, (k, _) in chosen.items()})
            write_table(best / "confidence", {
                u: " ".join(f"{j}:{c:.6g}" for j, c in cs.items()) for u, (_, cs) in chosen.items()
            })

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    print(f"| decode ({len(utts)} utts) | mean exit | mean share | WER % |")
    print("|---|---|---|---|")
    for name, e, s, w in rows:
        print(f"| {name} | {e:.2f} | {fmt(s, '.3f')} | {fmt(w, '.2f')} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
