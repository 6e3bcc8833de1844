#!/usr/bin/env python3
"""WER / compute trade-off of an exit policy over many thresholds, from ONE all-exits pass.

    python -m espnet_early_exit.bin.asr_inference ... --all_exits true \
        --exit_policy entropy --output_dir decode/dev            # hyps + features per exit
    python -m espnet_early_exit.bin.tradeoff --all_exits_dir decode/dev --policy agreement \
        --thresholds 1 2 3 --ref_text data/dev/text \
        --exit_costs exp/asr_x/exit_costs.json [--write_dir decode/dev_policies]

The policy's output at any threshold follows from the pass without decoding again
(:mod:`espnet_early_exit.derive`: the same result as decoding with ``--exit_policy``; the
timing is derived from the per-exit timings, not measured). ``entropy``, ``max_posterior``,
``agreement`` and ``learned`` are derived from the recorded features of any all-exits pass;
another policy (``nbest_posterior``) needs a pass run with it. The table lists, per threshold,
the mean exit, the mean compute share (exit_costs.json) and the WER against ``--ref_text``
(counted as stage 13 counts it: :func:`espnet_early_exit.scoring.score_utterances`); the fixed
exits are listed too. ``--write_dir`` writes ``<policy>_th<threshold>/`` in the pass's layout
(stage 12 derives its policy dirs this way).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional

import yaml

from espnet_early_exit.derive import choose, load_all_exits, policy_decisions, write_policy_dir
from espnet_early_exit.fileio import read_table
from espnet_early_exit.policies import POLICIES, get_policy
from espnet_early_exit.scoring import score_utterances

__all__ = ["choose", "wer", "main"]


def wer(refs: Dict[str, str], hyps: Dict[str, str]) -> Optional[float]:
    """WER (%) of ``hyps`` on the utterances of ``refs`` as stage 13 counts it (None: no refs)."""
    if not refs:
        return None
    res = score_utterances(refs, {u: hyps.get(u, "") for u in refs})
    return 100.0 * res["err"] / max(res["n_ref"], 1)


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all_exits_dir", required=True, type=Path)
    ap.add_argument("--policy", default=None, help="default: the one the pass recorded")
    ap.add_argument("--policy_conf", type=yaml.safe_load, default=None,
                    help='options of the policy, e.g. "{max_edits: 1}" or "{model: F}"')
    ap.add_argument("--model_file", default=None,
                    help="the model's file (a learned policy's fit is found beside it)")
    ap.add_argument("--thresholds", type=float, nargs="+", required=True)
    ap.add_argument("--ref_text", type=Path, default=None)
    ap.add_argument("--exit_costs", type=Path, default=None)
    ap.add_argument("--write_dir", type=Path, default=None)
    ap.add_argument("--dir_names", nargs="+", default=None,
                    help="names of the written dirs, one per threshold (default "
                         "<policy>_th<threshold>)")
    ap.add_argument("--quiet", action="store_true", help="no table")
    return ap


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    data = load_all_exits(args.all_exits_dir)
    name = args.policy or data.policy
    if name is None or name not in POLICIES or POLICIES[name].threshold_range is None:
        raise ValueError(f"--policy: need a threshold policy, got {name!r}")
    policy = get_policy(name, **(args.policy_conf or {}))
    policy.prepare(args.model_file, data.exits)
    decisions = policy_decisions(data, policy, args.thresholds)
    names = args.dir_names or [f"{name}_th{t:g}" for t in args.thresholds]
    if len(names) != len(args.thresholds):
        raise ValueError("--dir_names: one name per threshold")
    refs = read_table(args.ref_text, duplicates="last", missing_ok=True) if args.ref_text else {}
    refs = {u: refs[u] for u in data.utts if u in refs}
    share = {}
    if args.exit_costs:
        share = {e["exit"]: e["share"] for e in json.loads(args.exit_costs.read_text())["exits"]}

    rows = [(f"exit{k}", float(k), share.get(k), wer(refs, data.tables[k]["text"]))
            for k in data.exits]
    for dir_name, (t, chosen) in zip(names, decisions.items()):
        hyps = {u: data.tables[k]["text"].get(u, "") for u, (k, _) in chosen.items()}
        n = max(len(chosen), 1)
        mean_share = sum(share[k] for k, _ in chosen.values()) / n if share else None
        rows.append((dir_name, sum(k for k, _ in chosen.values()) / n, mean_share,
                     wer(refs, hyps)))
        if args.write_dir:
            info = {"policy": name, "threshold": t, "policy_conf": args.policy_conf or {}}
            write_policy_dir(data, chosen, args.write_dir / dir_name, info)
    if args.quiet:
        return

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    print(f"| decode ({len(data.utts)} utts) | mean exit | mean share | WER % |")
    print("|---|---|---|---|")
    for row, e, s, w in rows:
        print(f"| {row} | {e:.2f} | {fmt(s, '.3f')} | {fmt(w, '.2f')} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
