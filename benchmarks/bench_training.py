#!/usr/bin/env python
"""Training overhead of exits: the LibriSpeech-100 EE Conformer (6 CTC exits) vs the same
architecture with one exit (ESPnet's model), on the same batch, side by side in one run.

Prints, for the single-exit model and each EE variant (`--variants`), at each vocabulary size
(`--vocab`, default 5000 = the LibriSpeech-100 BPE and 256 = the paper's): the median training-step
wall time and process CPU time (forward + backward + Adam step, interleaved repeats), the FLOPs
of a step (`torch.utils.flop_counter`: deterministic, immune to a busy machine), the training
memory, and the ratios to the single-exit model. Target: time and memory ratios <= 1.10.

Variants: "single" (exits [12]: ESPnet's model), "ee" (exits [2,4,...,12], full CTC heads),
with suffixes "_rank<R>" (`exit_head_rank: R`: factorised earlier-exit heads) and "_eager" or
"_recompute" (`exit_head_memory`), e.g. "ee_rank64_eager".

Memory on CPU (PyTorch keeps no allocator statistics there): parameters + gradients + Adam
state + the tensors autograd saves for backward at the end of the forward pass (unique
storages, counted with `torch.autograd.graph.saved_tensors_hooks`), which is where a training
step peaks. The process's peak RSS is printed next to it for reference (coarse: the allocator
keeps freed memory). On a GPU: `torch.cuda.max_memory_allocated` over a step.

    python benchmarks/bench_training.py [--batch 4 --seconds 8 --repeats 5 --threads 2]
    python benchmarks/bench_training.py --device cuda   # on a GPU: peak from torch.cuda

`--results FILE` also writes every measured row to FILE (JSON, with the command line, the git
commit, the machine and the date: espnet_early_exit.provenance); the README's "Cost of exits"
numbers are rendered from docs/results/bench/training.json by tools/render_docs.py.
`--quick` (tiny sizes, one repeat) only checks that the script and its results file work.
Run with the repository root on PYTHONPATH (`. tools/activate.sh`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "conf" / "tuning" / "train_ee_conformer_ls100.yaml"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


DEFAULT_VARIANTS = ["single", "ee", "ee_eager", "ee_rank64", "ee_rank64_eager"]
DEFAULT_VOCABS = [5000, 256]


def variant_conf(variant: str) -> dict:
    """model_conf/encoder_conf changes of a variant name (see the module docstring)."""
    import re

    if variant == "single":
        return {"exit_layers": [12], "exit_weights": [1.0], "exit_head_rank": None}
    m = re.fullmatch(r"ee(?:_rank(\d+))?(?:_(eager|recompute))?", variant)
    if m is None:
        raise SystemExit(f"--variants: {variant!r} is not single, ee, ee_rank<R>[_eager|_recompute]")
    return {"exit_head_rank": int(m.group(1)) if m.group(1) else None,
            "exit_head_memory": m.group(2) or "keep"}


def describe(variant: str) -> str:
    conf = variant_conf(variant)
    if variant == "single":
        return "[12]"
    extra = [f"rank {conf['exit_head_rank']} heads"] if conf["exit_head_rank"] else []
    extra += [f"{conf['exit_head_memory']} heads"] if conf["exit_head_memory"] != "keep" else []
    return "[2,4,...,12]" + "".join(", " + e for e in extra)


# --quick: the same blocks and exits, narrow (checks the script, not the numbers)
QUICK_SIZES = {"encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64},
               "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1}}


def build(variant: str, vocab: int, device: str, quick: bool = False):
    import argparse as ap

    import yaml

    from espnet_early_exit.task import EarlyExitASRTask

    config = yaml.safe_load(CONFIG.read_text())
    for key, value in variant_conf(variant).items():
        section = "encoder_conf" if key == "exit_layers" else "model_conf"
        config[section][key] = value
    for section, values in (QUICK_SIZES.items() if quick else ()):
        config[section].update(values)
    parser = EarlyExitASRTask.get_parser()
    args = parser.parse_args(["--token_list", "none", "--output_dir", "/tmp/unused"])
    for key in ("encoder", "encoder_conf", "decoder", "decoder_conf", "model", "model_conf",
                "frontend_conf", "specaug", "specaug_conf"):
        setattr(args, key, config[key])
    args.token_list = ["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)] + ["<sos/eos>"]
    args.normalize = None
    model = EarlyExitASRTask.build_model(ap.Namespace(**vars(args))).to(device)
    model.train()
    return model


def make_batch(batch: int, seconds: float, vocab: int, device: str):
    import torch

    g = torch.Generator().manual_seed(0)
    n = int(seconds * 16000)
    lengths = torch.tensor([n - i * 8000 for i in range(batch)])
    speech = torch.randn(batch, n, generator=g) * 0.1
    text_len = torch.tensor([int(seconds * 3) - i for i in range(batch)])
    text = torch.randint(2, vocab - 1, (batch, int(text_len.max())), generator=g)
    for b in range(batch):
        text[b, text_len[b]:] = -1
    return [t.to(device) for t in (speech, lengths, text, text_len)]


def step(model, optim, batch):
    speech, lengths, text, text_len = batch
    loss, _, _ = model(speech, lengths, text.clone(), text_len)
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)
    return float(loss.detach())


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_memory(variant: str, vocab: int, a) -> dict:
    """Runs in a fresh process: peak memory of `a.memory_steps` training steps."""
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    import espnet_early_exit.task  # noqa: F401  (imports before the baseline)

    base = rss_mb()
    model = build(variant, vocab, a.device, a.quick)
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = make_batch(a.batch, a.seconds, vocab, a.device)
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    for _ in range(a.memory_steps):
        step(model, optim, batch)
    sync(a.device)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # kB -> MB
    if a.device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base_cuda + 0.0) / 2**20
        return {"peak_mb": peak, "rss_mb": peak_rss, "what": "torch.cuda.max_memory_allocated"}
    # parameters, gradients and Adam's two moments are all param-sized after a step
    state = sum(p.numel() * p.element_size() for p in model.parameters()) * 4
    storages = {}

    def pack(t):
        if t.device.type == "cpu":
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        return t

    speech, lengths, text, text_len = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _, _ = model(speech, lengths, text.clone(), text_len)
    saved = sum(storages.values())
    loss.backward()
    return {"peak_mb": (state + saved) / 2**20, "rss_mb": peak_rss,
            "saved_mb": saved / 2**20, "state_mb": state / 2**20,
            "what": "params+grads+Adam state+saved activations"}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0, help="longest utterance (s)")
    p.add_argument("--vocab", type=int, nargs="+", default=DEFAULT_VOCABS,
                   help="vocabulary sizes, one table each (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory_steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                   help="single first, then EE variants (default: %(default)s)")
    p.add_argument("--results", type=Path, default=None,
                   help="also write the measured rows to this JSON file (docs/results/bench/...)")
    p.add_argument("--quick", action="store_true",
                   help="narrow model, batch 1, 1 s, vocab 64, one repeat: checks the script only")
    p.add_argument("--memory_only", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    a = get_parser().parse_args(argv)
    if a.quick and not a.memory_only:
        a.batch, a.seconds, a.vocab, a.repeats, a.memory_steps = 1, 1.0, [64], 1, 1
    if a.variants[0] != "single":
        a.variants.insert(0, "single")
    for v in a.variants:
        variant_conf(v)  # bad names fail before any work
    return a


def count_flops(models: dict, batch) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    speech, lengths, text, text_len = batch
    for v, m in models.items():
        # eager heads do the same arithmetic as "keep" (a gradient pass inside the forward),
        # but the counter's module hooks cannot follow a nested autograd.grad: count as "keep"
        memory_mode, m.exit_head_memory = m.exit_head_memory, "keep"
        with FlopCounterMode(display=False) as counter:
            loss, _, _ = m(speech, lengths, text.clone(), text_len)
            loss.backward()
        m.zero_grad(set_to_none=True)
        m.exit_head_memory = memory_mode
        flops[v] = counter.get_total_flops()
    return flops


def time_steps(models: dict, batch, a):
    """Median wall and process-CPU seconds of a training step per model, interleaved."""
    import torch

    optims = {v: torch.optim.Adam(m.parameters(), lr=1e-4) for v, m in models.items()}
    times = {v: [] for v in models}
    cpu_times = {v: [] for v in models}
    for v in models:  # warm-up
        step(models[v], optims[v], batch)
    names = list(models)
    for r in range(a.repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for v in order:
            sync(a.device)
            t, c = time.perf_counter(), time.process_time()
            step(models[v], optims[v], batch)
            sync(a.device)
            times[v].append(time.perf_counter() - t)
            cpu_times[v].append(time.process_time() - c)
    return ({v: statistics.median(t) for v, t in times.items()},
            {v: statistics.median(t) for v, t in cpu_times.items()})


def memory_in_subprocess(variant: str, vocab: int, a) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory_only", variant, "--batch", str(a.batch),
         "--seconds", str(a.seconds), "--vocab", str(vocab), "--threads", str(a.threads),
         "--memory_steps", str(a.memory_steps), "--device", a.device]
        + (["--quick"] if a.quick else []),
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(vocab: int, a) -> dict:
    """One table: every variant at this vocabulary size."""
    import torch

    torch.manual_seed(0)
    models = {v: build(v, vocab, a.device, a.quick) for v in a.variants}
    for v in a.variants[1:]:  # identical weights where the architectures overlap
        models[v].load_state_dict(models["single"].state_dict(), strict=False)
    batch = make_batch(a.batch, a.seconds, vocab, a.device)
    params = {v: sum(p.numel() for p in m.parameters()) for v, m in models.items()}
    flops = count_flops(models, batch)
    wall, cpu = time_steps(models, batch, a)
    del models
    rows = []
    for v in a.variants:
        mem = memory_in_subprocess(v, vocab, a)
        rows.append({"variant": v, "exits": describe(v), **variant_conf(v), "params": params[v],
                     "flops": flops[v], "wall_s": wall[v], "cpu_s": cpu[v],
                     "memory_mb": mem["peak_mb"], "saved_mb": mem.get("saved_mb"),
                     "rss_mb": mem["rss_mb"], "memory_what": mem["what"]})
    return {"vocab": vocab, "rows": rows}


def print_table(table: dict, a, device_name: str) -> None:
    rows = {r["variant"]: r for r in table["rows"]}
    single = rows["single"]
    print(f"# Training-step overhead of exits ({device_name}; batch {a.batch}, "
          f"longest {a.seconds:g} s, vocab {table['vocab']}, {a.repeats} interleaved repeats)")
    print(f"# config: {CONFIG.relative_to(REPO)}; memory: {single['memory_what']}")
    print("| model | exits | params (M) | GFLOPs/step | wall s/step (median) | CPU s/step "
          "| training memory (MB) | saved activations (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v, r in rows.items():
        saved = float("nan") if r["saved_mb"] is None else r["saved_mb"]
        print(f"| {v} | {r['exits']} | {r['params'] / 1e6:.1f} | {r['flops'] / 1e9:.1f} | "
              f"{r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['memory_mb']:.0f} | {saved:.0f} | "
              f"{r['rss_mb']:.0f} |")
    for v, r in list(rows.items())[1:]:
        ratios = {"FLOPs": r["flops"] / single["flops"], "wall time": r["wall_s"] / single["wall_s"],
                  "CPU time": r["cpu_s"] / single["cpu_s"],
                  "memory": r["memory_mb"] / single["memory_mb"]}
        print(f"{v} / single: " + ", ".join(
            f"{k} {x:.3f}" + ("" if k == "FLOPs" else f" ({'met' if x <= 1.10 else 'NOT met'})")
            for k, x in ratios.items()) + "   (target <= 1.10)")
    print()


def main(argv=None):
    a = parse_args(argv)
    if a.memory_only:
        print(json.dumps(measure_memory(a.memory_only, a.vocab[0], a)))
        return
    import torch

    from espnet_early_exit import provenance

    torch.set_num_threads(a.threads)
    head = provenance.record("bench_training", None if argv is None else [__file__, *argv],
                             a.threads, a.device)
    tables = []
    for vocab in a.vocab:
        tables.append(measure(vocab, a))
        print_table(tables[-1], a, head["machine"]["device_name"])
    if a.results:
        options = {k: getattr(a, k) for k in ("batch", "seconds", "repeats", "threads",
                                              "memory_steps", "device", "variants", "quick")}
        provenance.write_results(a.results, {
            **head, "config": str(CONFIG.relative_to(REPO)), "options": options, "tables": tables})
        print(f"results: {a.results}")


if __name__ == "__main__":
    main()
