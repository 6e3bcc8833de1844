#!/usr/bin/env python3
"""The Python side of benchmarks/gpu_check.sh (see there for the whole check).

    python benchmarks/gpu_check.py steps --device cuda --steps 300 --out steps.json
        training steps of the LibriSpeech-100 config (single exit, then the EE model) on
        random-length synthetic batches with AMP: step time and peak memory, EE / single ratios
    python benchmarks/gpu_check.py wheels --imports importtime.log
        the distributions (name==version) the check imported (``-X importtime`` log) that a
        machine with only torch, torchaudio, transformers, onnxruntime and sentencepiece lacks
    python benchmarks/gpu_check.py collect --out docs/results/bench/gpu_check.json \
        --part steps=steps.json --part training=training.json --part inference=inference.json
        one results file (provenance: command, commit, machine with the GPU's name, date)

Run with the repository root on PYTHONPATH (`. tools/activate.sh`, or gpu_check.sh sets it).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
PREINSTALLED = ("torch", "torchaudio", "transformers", "onnxruntime", "sentencepiece")


# ------------------------------------------------------------------------------ AMP steps
def random_batch(rng, batch: int, min_s: float, max_s: float, vocab: int, device: str):
    """A batch of random lengths in [min_s, max_s] seconds (noise) and random token ids."""
    import torch

    secs = [rng.uniform(min_s, max_s) for _ in range(batch)]
    lengths = torch.tensor([int(s * 16000) for s in secs])
    speech = torch.randn(batch, int(lengths.max())) * 0.1
    text_len = torch.tensor([max(1, int(s * 3)) for s in secs])
    text = torch.randint(2, vocab - 1, (batch, int(text_len.max())))
    for b in range(batch):
        speech[b, lengths[b]:] = 0.0
        text[b, text_len[b]:] = -1
    return [t.to(device) for t in (speech, lengths, text, text_len)]


def run_steps(variant: str, a) -> dict:
    """``a.steps`` AMP training steps of one variant: times (after warm-up), peak memory, losses."""
    import random

    import torch

    from bench_training import build, sync

    torch.manual_seed(0)
    rng = random.Random(0)  # the same batches for every variant
    model = build(variant, a.vocab, a.device, a.quick)
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    cuda = a.device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(a.steps):
        batch = random_batch(rng, a.batch, a.min_seconds, a.max_seconds, a.vocab, a.device)
        sync(a.device)
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype):
            loss, _, _ = model(batch[0], batch[1], batch[2].clone(), batch[3])
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
        optim.zero_grad(set_to_none=True)
        sync(a.device)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    finite = [x for x in losses if x == x and abs(x) != float("inf")]
    return {"variant": variant, "params": sum(p.numel() for p in model.parameters()),
            "steps": a.steps, "timed_steps": len(times),
            "step_s_median": statistics.median(times) if times else None,
            "step_s_mean": statistics.fmean(times) if times else None,
            "peak_memory_mb": peak, "loss_first": losses[0], "loss_last": losses[-1],
            "nonfinite_losses": len(losses) - len(finite)}


def steps_main(a) -> int:
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    rows = [run_steps(v, a) for v in ("single", a.ee_variant)]
    single, ee = rows
    ratios = {"step_time": (ee["step_s_median"] / single["step_s_median"]
                            if single["step_s_median"] else None),
              "peak_memory": (ee["peak_memory_mb"] / single["peak_memory_mb"]
                              if single["peak_memory_mb"] else None)}
    out = {"options": {k: getattr(a, k) for k in ("steps", "warmup", "batch", "min_seconds",
                                                  "max_seconds", "vocab", "device", "quick",
                                                  "ee_variant")},
           "amp": "float16 + GradScaler" if a.device.startswith("cuda") else "bfloat16 (CPU)",
           "rows": rows, "ratios": ratios}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    for r in rows:
        print(f"{r['variant']}: {r['timed_steps']} steps, median {r['step_s_median']} s/step, "
              f"peak {r['peak_memory_mb']} MB, loss {r['loss_first']:.1f} -> {r['loss_last']:.1f}")
    print(f"EE / single: {ratios}")
    return 1 if any(r["nonfinite_losses"] for r in rows) else 0


# ------------------------------------------------------------------------------ wheels
# imported but not needed: wandb (ESPnet imports it only if it is there); numba and llvmlite
# (most of the 64 MiB) are replaced by benchmarks/shims/numba where absent
OPTIONAL = {"wandb"}
SHIMMED = {"numba", "llvmlite"}


def closure(specs: Iterable[str], skip: Set[str] = frozenset()) -> Set[str]:
    """The installed distributions that requirement strings ``specs`` need, themselves and
    their extras included (normalised names); names in ``skip`` are not followed."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: Dict[str, Set[str]] = {}
    todo = [Requirement(spec) for spec in specs]
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), set(req.extras)
        if name in skip or (name in seen and extras <= seen[name]):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.setdefault(name, set()).update(extras)
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e})
                                         for e in {""} | seen[name]):
                todo.append(sub)
    return set(seen)


def imported_distributions(log: Path) -> Dict[str, str]:
    """{name: version} of the installed distributions whose top-level modules a
    ``-X importtime`` log shows imported."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    tops = set()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"import time:\s*\d+\s*\|\s*\d+\s*\|\s*(\S+)", line)
        if m:
            tops.add(m.group(1).split(".")[0])
    owners = metadata.packages_distributions()
    found = {}
    for top in tops:
        for name in owners.get(top, []):
            found[canonicalize_name(name)] = metadata.version(name)
    return found


def wheels_main(a) -> int:
    """What the check imported that the project needs (its dependencies' closure, without the
    optional and shimmed ones) and the GPU machine lacks (the preinstalled ones' closure)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    needed = closure(project["dependencies"], skip=OPTIONAL | SHIMMED)
    have = closure(PREINSTALLED) | {"pip", "setuptools", "wheel"}
    for name, version in sorted(imported_distributions(Path(a.imports)).items()):
        if name in needed and name not in have and not name.startswith("nvidia-") \
                and name != "triton" and name != "espnet-early-exit":
            print(f"{name}=={version}")
    return 0


# ------------------------------------------------------------------------------ one results file
def collect_main(a) -> int:
    from espnet_early_exit import provenance

    head = provenance.record("gpu_check", device=a.device)
    head["command"] = a.check_command or head["command"]
    parts = {}
    for spec in a.part:
        name, path = spec.split("=", 1)
        p = Path(path)
        parts[name] = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    data = dict(head, gpu=head["machine"]["device_name"], options={"dry_run": a.dry_run,
                                                                  "quick": a.dry_run},
                seconds=json.loads(a.seconds) if a.seconds else {}, parts=parts)
    provenance.write_results(a.out, data)
    missing = [k for k, v in parts.items() if v is None]
    print(f"results: {a.out}" + (f" (missing parts: {', '.join(missing)})" if missing else ""))
    return 1 if missing else 0


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("steps", help="AMP training steps, single exit vs EE")
    s.add_argument("--device", default="cuda")
    s.add_argument("--steps", type=int, default=300)
    s.add_argument("--warmup", type=int, default=20)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--min_seconds", type=float, default=2.0)
    s.add_argument("--max_seconds", type=float, default=16.0)
    s.add_argument("--vocab", type=int, default=5000)
    s.add_argument("--ee_variant", default="ee")
    s.add_argument("--quick", action="store_true", help="narrow model (checks the script only)")
    s.add_argument("--out", required=True)
    w = sub.add_parser("wheels", help="distributions to bring along (name==version lines)")
    w.add_argument("--imports", required=True, help="a -X importtime log of the check")
    c = sub.add_parser("collect", help="one results file from the parts")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--part", action="append", default=[], help="NAME=FILE (JSON)")
    c.add_argument("--device", default="cuda")
    c.add_argument("--check_command", default="", help="the gpu_check.sh command line")
    c.add_argument("--seconds", default="", help="JSON {part: seconds}")
    c.add_argument("--dry_run", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = get_parser().parse_args(argv)
    return {"steps": steps_main, "wheels": wheels_main, "collect": collect_main}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
