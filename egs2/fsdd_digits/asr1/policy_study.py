#!/usr/bin/env python3
"""Issue 14's measures on one EE model, from its all-exits passes only (no decoding).

    python egs2/fsdd_digits/asr1/policy_study.py --exp_dir W/exp/asr_ee6 \
        --decode decode_asr_asr_model_valid.loss.ave --ref_dir W/dump/raw \
        --out docs/results/policies/fsdd_conv2d.json

The measures are :func:`espnet_early_exit.policy_eval.measure`'s (their one home, where each
is described): ``target_wer``, the oracle ``gap`` and Learn-then-Test (``ltt``), thresholds
chosen on ``dev``, reported on ``test``. Policies: ``entropy``, ``max_posterior``,
``agreement`` (patience 1..3, ``max_edits`` 0 and 1), ``learned`` fitted
(:func:`espnet_early_exit.exit_classifier.fit_from_all_exits`, no transcript) on the dev pass
and, as an honest check, on ``test_unseen_spk``'s (not scored).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from espnet_early_exit import policy_eval as pe
from espnet_early_exit.exit_classifier import fit_from_all_exits
from espnet_early_exit.provenance import record, write_results

#: the sets of the study's decode dir (the last one only fitted on)
SETS = ("dev", "test", "test_unseen_spk")
UNSEEN = "test_unseen_spk"


def policy_specs(with_unseen: bool) -> List[pe.PolicySpec]:
    specs = [pe.PolicySpec("entropy", "entropy", {}),
             pe.PolicySpec("max_posterior", "max_posterior", {}),
             pe.PolicySpec("agreement_e0", "agreement", {"max_edits": 0}),
             pe.PolicySpec("agreement_e1", "agreement", {"max_edits": 1}),
             pe.PolicySpec("learned_dev", "learned", {}, "dev")]
    if with_unseen:
        specs.append(pe.PolicySpec("learned_unseen", "learned", {}, UNSEEN))
    return specs


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exp_dir", type=Path, required=True)
    p.add_argument("--decode", required=True, help="the decode_* dir holding the sets")
    p.add_argument("--ref_dir", type=Path, required=True, help="<ref_dir>/<set>/text")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="", help="label of the model in the results")
    p.add_argument("--wer_factor", type=float, default=1.05)
    p.add_argument("--max_rel", type=float, default=0.05)
    p.add_argument("--max_share", type=float, default=0.70)
    p.add_argument("--gap_target", type=float, default=0.5)
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--delta", type=float, default=0.1)
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    return p


def run_study(args) -> dict:
    sets = pe.load_sets(args.exp_dir, args.exp_dir / args.decode, args.ref_dir, SETS,
                        unscored=(UNSEEN,))
    specs = policy_specs(UNSEEN in sets)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            if spec.name == "learned":  # fitted here, loaded by path as the decoder loads it
                spec.model = str(Path(tmp) / f"exit_policy_{spec.fit_on}.json")
                fit_from_all_exits(sets[spec.fit_on].data).save(spec.model)
        measures = pe.measure(sets["dev"], sets["test"], specs, vars(args))
    ltt = [row for row, _ in measures["ltt"]]
    return {
        "model": args.model, "exp_dir": str(args.exp_dir), "decode": args.decode,
        "sets": {n: {"n_utt": len(s.utts), "words": int(s.n_ref.sum()), "exits": s.exits}
                 for n, s in sets.items()},
        **measures, "ltt": {"rows": ltt, "met": all(r["met"] for r in ltt), "seed": args.seed},
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    payload = {**record("policy_study", [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
               "options": {k: v for k, v in vars(args).items()
                           if k not in ("exp_dir", "ref_dir", "out")}}
    payload.update(run_study(args))
    write_results(args.out, payload)
    t, g = payload["target_wer"], payload["gap"]
    print(f"wrote {args.out}: target 1 {'met' if t['met'] else 'NOT met'}, gap closed "
          f"{g['fraction_closed']} ({g['best']} vs {g['baseline']}), LTT "
          f"{'met' if payload['ltt']['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
