"""A policy's decode at any threshold, derived from ONE all-exits pass.

A threshold policy's decision at exit k depends only on what it saw at exits <= k, and its
hypothesis is the one decoded at the chosen exit. An all-exits pass
(``asr_inference --all_exits true``) records, per exit k, every utterance's hypothesis
(``text``, ``token``, ``token_int``, ``score``), the :data:`~espnet_early_exit.exit_trace.FEATURES`
of its CTC posteriors there (``features``: the ``entropy`` and ``max_posterior`` confidences
over all frames, the greedy hypothesis's length and its edit distance to the previous exit's...)
and the confidences of the pass's own ``--exit_policy`` (``confidence``). So the decode of
``entropy``, ``max_posterior``, ``agreement`` and ``learned`` at any threshold follows without
decoding again (:func:`policy_decisions`; a policy whose number is not in the features, such as
``nbest_posterior``, needs a pass run with it); only the recorded numbers' 6 significant digits
can put an utterance on the other side of a threshold it lies within 1e-6 of.

:func:`write_policy_dir` writes the decode in the decoding CLI's format (the ``1best_recog/``
layout of ``asr_inference`` or the flat one of stage 12's merged dirs, as the input has it),
with a ``timing.json`` that is *derived*, not measured (:func:`derived_timing`): the mean time
of stopping at exit k, from the all-exits pass's per-exit timings, summed over the exits the
utterances took.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from espnet_early_exit.exit_trace import ExitView, parse_features
from espnet_early_exit.fileio import atomic_directory, read_table, write_table
from espnet_early_exit.policies import POLICIES, ExitPolicy, first_accepted_exit

FILES = ("text", "token", "token_int", "score")
Decisions = Dict[str, Tuple[int, Dict[int, float]]]  # utt -> (exit, {exit: confidence})


def parse_confidences(value: str) -> Dict[int, float]:
    """``"2:0.5 4:0.9"`` -> ``{2: 0.5, 4: 0.9}`` (the ``confidence`` file's format)."""
    out = {}
    for item in value.split():
        k, c = item.split(":")
        out[int(k)] = float(c)
    return out


@dataclass
class AllExits:
    """The outputs of one all-exits pass: ``tables[k][file][utt]`` for every exit k."""

    root: Path
    exits: List[int]
    tables: Dict[int, Dict[str, Dict[str, str]]]
    policy: Optional[str] = None  # whose confidences the pass recorded
    flat: bool = False  # exit<k>/<file> (stage 12) rather than exit<k>/1best_recog/<file>
    timings: Dict[int, dict] = field(default_factory=dict)  # exit<k>/timing.json

    @property
    def utts(self) -> List[str]:
        return sorted(self.tables[self.exits[-1]]["text"])

    def has_features(self) -> bool:
        return all(self.tables[k]["features"] for k in self.exits)

    def trace(self, utt: str) -> List[ExitView]:
        """The utterance's views of every exit, rebuilt from the ``features`` files."""
        return [ExitView.from_features(k, parse_features(self.tables[k]["features"][utt]))
                for k in self.exits]


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def load_all_exits(root: Union[str, Path]) -> AllExits:
    """Read an all-exits pass: ``<root>/exit<k>/`` in either layout."""
    root = Path(root)
    exits = sorted(
        int(m.group(1))
        for p in root.iterdir()
        if p.is_dir() and (m := re.fullmatch(r"exit(\d+)", p.name))
    )
    if not exits:
        raise ValueError(f"{root}: no exit<k>/ dirs (decode with --all_exits true)")
    flat = not (root / f"exit{exits[-1]}" / "1best_recog").is_dir()

    def table(k: int, name: str) -> Dict[str, str]:
        where = root / f"exit{k}" if flat else root / f"exit{k}" / "1best_recog"
        return read_table(where / name, duplicates="last", missing_ok=True)

    tables = {k: {f: table(k, f) for f in FILES + ("confidence", "features")} for k in exits}
    timings = {k: t for k in exits if (t := _read_json(root / f"exit{k}" / "timing.json"))}
    top = _read_json(root / "timing.json") or {}
    policy = top.get("policy") or next((t.get("policy") for t in timings.values()), None)
    return AllExits(root, exits, tables, policy, flat, timings)


def utterance_confidences(data: AllExits, policy: ExitPolicy, utt: str) -> Dict[int, float]:
    """The policy's number at every exit for one utterance: from the recorded features where
    the policy reads them (``confidence_from_trace``), else the pass's recorded confidences
    when the pass ran this policy."""
    if data.has_features():
        trace = data.trace(utt)
        try:
            return {v.exit: policy.confidence_from_trace(trace[: i + 1])
                    for i, v in enumerate(trace)}
        except NotImplementedError:
            pass
    if data.policy != policy.name:
        raise ValueError(
            f"{data.root}: {policy.name!r} is not derivable from the recorded features and the "
            f"pass recorded {data.policy!r} confidences (run the all-exits pass with "
            f"--exit_policy {policy.name})"
        )
    return parse_confidences(data.tables[data.exits[-1]]["confidence"].get(utt, ""))


def choose(policy_name: str, threshold: float, exits: Sequence[int], confs: Dict[int, float]):
    """(exit, {exit: confidence} evaluated) of the policy at ``threshold`` from recorded
    confidences: the decoder's rule (:func:`policies.first_accepted_exit`)."""

    def confidence_at(k: int) -> float:
        if k not in confs:
            raise ValueError(f"no confidence at exit {k}")
        return confs[k]

    return first_accepted_exit(POLICIES[policy_name](threshold), exits, confidence_at)


def policy_decisions(
    data: AllExits, policy: ExitPolicy, thresholds: Sequence[float]
) -> Dict[float, Decisions]:
    """``{threshold: {utt: (exit, confidences evaluated)}}`` for ``policy`` (its options as
    built; its own threshold is not used)."""
    for t in thresholds:
        policy.check_threshold(t)
    confs = {u: utterance_confidences(data, policy, u) for u in data.utts}
    return {t: {u: choose(policy.name, t, data.exits, confs[u]) for u in data.utts}
            for t in thresholds}


def derived_timing(data: AllExits, decisions: Decisions) -> dict:
    """timing.json of a derived decode: for each utterance the mean seconds of stopping at
    the exit it took (``exit<k>/timing.json`` of the pass: wall seconds over its utterances),
    summed; None where the pass has no per-exit timing."""
    method = ("derived from the all-exits pass: sum over utterances of the mean time of "
              "stopping at the exit taken (front-end + blocks + search); the policy's "
              "evaluation at the exits before it is not included")
    info = {"derived_from_all_exits_pass": str(data.root), "timing_method": method,
            "n_utt": len(decisions), "rtf": None, "wall_seconds": None, "audio_seconds": None}
    per_utt = {k: t["wall_seconds"] / t["n_utt"] for k, t in data.timings.items()
               if t.get("wall_seconds") is not None and t.get("n_utt")}
    if decisions and all(k in per_utt for k, _ in decisions.values()):
        wall = sum(per_utt[k] for k, _ in decisions.values())
        audio = next(iter(data.timings.values())).get("audio_seconds")
        info.update(wall_seconds=wall, audio_seconds=audio, rtf=wall / audio if audio else None)
    return info


def write_policy_dir(data: AllExits, decisions: Decisions, out_dir: Union[str, Path],
                     info: Optional[dict] = None) -> Path:
    """Write the decode of ``decisions`` to ``out_dir`` (atomically, with a ``.done``
    marker) in the pass's layout: text, token, token_int, score, exit, confidence,
    timing.json (:func:`derived_timing`, updated with ``info``)."""
    from espnet_early_exit.stages.markers import write_done_marker

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        best = tmp if data.flat else tmp / "1best_recog"
        for f in FILES:
            write_table(best / f, {u: data.tables[k][f][u] for u, (k, _) in decisions.items()
                                   if u in data.tables[k][f]})
        write_table(best / "exit", {u: str(k) for u, (k, _) in decisions.items()})
        write_table(best / "confidence", {
            u: " ".join(f"{j}:{c:.6g}" for j, c in cs.items()) for u, (_, cs) in decisions.items()
        })
        timing = dict(derived_timing(data, decisions), **(info or {}))
        (tmp / "timing.json").write_text(json.dumps(timing, indent=1) + "\n", encoding="utf-8")
        write_done_marker(tmp, {"derived_from": str(data.root), **(info or {})})
    return out_dir
