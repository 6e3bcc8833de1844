#!/usr/bin/env python3
"""Early-exit inference benchmark (a script, not a test): prints its tables per model variant.

    python benchmarks/bench_inference.py --threads 2 --repeats 5 --runs 3 \
        --results docs/results/bench/inference.json
    python benchmarks/bench_inference.py --variants conv2d_rank64 --runs 1   # one model, one run
    python benchmarks/bench_inference.py --device cuda --repeats 20   # on a GPU

(with the repository root on PYTHONPATH: `. tools/activate.sh`). One invocation measures every
variant of --variants (default: rank-64 heads, full heads, rank-64 heads with the light conv1d4
front, and full heads at the paper's 256-token vocabulary), --runs times each; the README's
inference tables are rendered from its --results file by tools/render_docs.py (a range over the
runs where there are several). `--quick` (tiny models, one short run) only checks the script.

A variant is `<front>[_rank<R>][_vocab<V>]`: front conv2d or conv1d4, `exit_head_rank: R`
(factorised CTC heads at the exits before the last; default full heads), vocabulary V (default
5000). Model: the LibriSpeech-100 Conformer of conf/tuning/train_ee_conformer_ls100_conv1d4.yaml
(12 blocks, d 256, FFN 1024, exits after every second block, 6-layer transformer decoder) with
the variant's subsampling front, RANDOM weights; one decoder shared by
every exit (exit_decoders: shared) so that joint CTC/attention decoding is possible at exit 6.
Input: 10 s of noise at 16 kHz, batch 1, CPU. Every measurement runs once per repeat,
interleaved with the others, after one warm-up; medians are reported. The policy overheads
(3.) are timed apart, as pairs: policy and fixed decode back to back, --overhead_rounds times,
and the median and quartiles of their ratio are reported (the machine's speed drifts by more
than the few percent being measured; within a pair it does not).

What is measured:
1. FLOPs share of front-end + subsampling (``encode_begin``), from costs.exit_costs.
2. Per exit k: encoder time to k (``encode_begin`` + ``encode_to(k)``) / full-encoder time,
   next to the FLOPs share of k; ok when time share <= 1.1 * FLOPs share + 0.05.
3. Policy overhead at exit 6: end-to-end greedy-CTC decode with ``entropy`` /
   ``max_posterior`` (and ``nbest_posterior``, ``agreement``, ``learned``) accepting at exit 6
   vs ``fixed`` exit 6.
   With random weights every exit is equally unsure, so these runs use a copy of the model
   whose exit-6 CTC head weights are scaled by --peaky (x8) to make its posteriors peakier
   than exits 2 and 4 (the fixed-exit baseline of this comparison uses the same copy); each
   policy's threshold is set half-way between exit 6's confidence and the best of exits 2/4:
   the policy then really evaluates exits 2, 4, 6 and accepts at 6 (checked). The overhead is
   the CTC head + confidence at exits 2 and 4 (a 256x5000 projection each, 0.64 GFLOPs, about
   3/4 of a block; with rank-R heads a 256xR + Rx5000 one); the table gives that FLOPs
   floor next to the measured overhead, the same decodes with the per-frame statistics
   computed by torch ops instead of the C kernel (frame_stats.py; when the kernel is built),
   and the same policies with --frame_stride 4
   (confidence from every 4th frame, see
   policies.py), which cuts that head cost at the evaluated exits.
   ``agreement`` and ``learned`` read the trace of the exits evaluated so far (exit_trace.py:
   per exit the frame statistics, the greedy CTC hypothesis and its token edit distance to the
   previous exit's). With random weights nearly every frame carries a token, and the edit
   distances of such hypotheses (as long as the input) would cost far more than on real
   speech; so these two run on another copy of the model whose CTC heads get a blank bias
   leaving --trace_rate of the frames non-blank (hypotheses of a plausible length), with a
   fixed exit 6 on that copy as their baseline. ``agreement``: patience 2 (the exits before
   6), max_edits the larger edit distance of exits 4 and 6 to the exit before (the cost of an
   evaluated exit does not depend on either); ``learned``: an ``exit_policy.json`` beside
   that copy's model file, loaded by name as the decoder loads it, whose per-exit logistic
   models give 0.02 at exits 2 and 4 and 0.98 from exit 6 on, threshold 0.5. Every policy
   row is checked to evaluate exits 2, 4, 6 and accept at 6.
4. Exit 6 vs ESPnet's stock ``Speech2Text`` on the same weights (the stock model: ESPnet's
   ``conformer`` encoder + ``espnet`` model for conv2d; for conv1d4, which stock ESPnet lacks,
   the single-exit ee model, i.e. the same blocks run without any exit): stock runs the full
   encoder, then its search; both use the same feature extraction.
   - greedy CTC: ours (argmax at exit 6) vs stock ``Speech2Text(beam_size=1, ctc_weight=1)``,
     which runs ESPnet's label-synchronous CTC prefix search, and vs a stock-encoder + argmax
     reference (full encoder, same greedy decode) that isolates the early-exit gain;
     target speed-up vs the reference >= 0.9 / FLOPs share(6).
   - joint CTC/attention, beam 10, ctc_weight 0.3: reported ratio. With random weights the
     decoder never emits <eos>, so hypotheses run to the length limit; both searches are
     capped at the same constant length (--maxlen tokens, ESPnet's maxlenratio = -maxlen),
     and the CTC-only stock search likewise.
"""

import argparse
import atexit
import copy
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "conf" / "tuning" / "train_ee_conformer_ls100_conv1d4.yaml"
EE_ONLY_KEYS = ("encoder.exit_norms.", "exit_ctc_heads.", "exit_att_decoders.")
DEFAULT_VARIANTS = ["conv2d_rank64", "conv2d", "conv1d4_rank64", "conv2d_vocab256"]
VARIANT = re.compile(r"(conv2d|conv1d4)(?:_rank(\d+))?(?:_vocab(\d+))?")
K = 6  # the exit the policies accept at and the fixed decode stops at
LEARNED_P = (0.02, 0.98)  # the learned policy's probability before exit K, from K on
# --quick: the same blocks and exits, narrow (checks the script, not the numbers)
QUICK_SIZES = {"encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64},
               "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1}}


def parse_variant(spec: str) -> dict:
    m = VARIANT.fullmatch(spec)
    if m is None:
        raise SystemExit(f"--variants: {spec!r} is not <conv2d|conv1d4>[_rank<R>][_vocab<V>]")
    return {"name": spec, "front": m.group(1),
            "exit_head_rank": int(m.group(2)) if m.group(2) else None,
            "vocab": int(m.group(3)) if m.group(3) else 5000}


def build_args(variant: dict, ee: bool, workdir: Path, quick: bool = False):
    from espnet_early_exit.task import EarlyExitASRTask

    conf = yaml.safe_load(CONFIG.read_text())
    front = variant["front"]
    conf["encoder_conf"]["input_layer"] = front
    conf["model_conf"]["exit_decoders"] = "shared"
    if ee and variant["exit_head_rank"]:
        conf["model_conf"]["exit_head_rank"] = variant["exit_head_rank"]
    for section, values in (QUICK_SIZES.items() if quick else ()):
        conf[section].update(values)
    conf.pop("specaug", None)
    conf.pop("specaug_conf", None)
    if not ee:
        if front == "conv2d":  # truly stock ESPnet
            conf["encoder"] = "conformer"
            conf["model"] = "espnet"
            for key in ("exit_layers", "exit_norm"):
                conf["encoder_conf"].pop(key)
            for key in ("share_exit_heads", "exit_decoders", "exit_weights", "exit_head_memory",
                        "exit_head_rank"):
                conf["model_conf"].pop(key, None)
        else:  # stock ESPnet has no conv1d4 front: the single-exit ee model
            conf["encoder_conf"]["exit_layers"] = [12]
            conf["model_conf"]["exit_weights"] = [1.0]
    cfg = workdir / ("ee.yaml" if ee else "stock.yaml")
    cfg.write_text(yaml.safe_dump(conf))
    vocab = variant["vocab"]
    tokens = ["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)] + ["<sos/eos>"]
    parser = EarlyExitASRTask.get_parser()
    args = parser.parse_args(
        ["--config", str(cfg), "--output_dir", str(workdir / "unused"), "--token_type", "word"]
    )
    args.token_list = tokens
    return args


def save(model, args, workdir: Path, name: str):
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), d / "model.pth")
    return str(d / "config.yaml"), str(d / "model.pth")


CLOCK = time.perf_counter
DEVICE = "cpu"


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = CLOCK()
    with torch.no_grad():
        fn()
    sync()
    return CLOCK() - t0


def run_interleaved(items, repeats):
    """items: {name: fn}. One warm-up each, then `repeats` rounds; median seconds."""
    for fn in items.values():
        timed(fn)
    times = {name: [] for name in items}
    for _ in range(repeats):
        for name, fn in items.items():
            times[name].append(timed(fn))
    return {name: statistics.median(v) for name, v in times.items()}


def paired_overhead(pairs, rounds):
    """pairs: {name: (base_fn, fn)}. Each round times every pair back to back, the order
    alternating from round to round (neither side always runs first); the machine's drift
    over a run cancels in each ratio. Returns per name: the median, first and third quartile
    of t(fn) / t(base) - 1 over the rounds, and the median t(fn) in ms."""
    for base, fn in pairs.values():
        timed(base)
        timed(fn)
    ratios = {name: [] for name in pairs}
    times = {name: [] for name in pairs}
    for r in range(rounds):
        for name, (base, fn) in pairs.items():
            if r % 2:
                tb = timed(base)
                tf = timed(fn)
            else:
                tf = timed(fn)
                tb = timed(base)
            ratios[name].append(tf / tb - 1)
            times[name].append(tf)
    out = {}
    for name, v in ratios.items():
        q1, _, q3 = statistics.quantiles(v, n=4)
        out[name] = {"median": statistics.median(v), "q1": q1, "q3": q3,
                     "time_ms": statistics.median(times[name]) * 1000}
    return out


def torch_stats(fn):
    """The same call with the frame statistics from torch ops instead of the C kernel."""
    def run():
        os.environ["EEE_FRAME_STATS"] = "torch"
        try:
            return fn()
        finally:
            del os.environ["EEE_FRAME_STATS"]
    return run


def head_output_layer(model, k: int) -> torch.nn.Linear:
    """The vocabulary projection of exit k's CTC head (the last layer of a rank-R head)."""
    lo = model.ctc_at(k).ctc_lo
    return lo[-1] if isinstance(lo, torch.nn.Sequential) else lo


@torch.no_grad()
def blank_biased(model, wave: np.ndarray, rate: float):
    """A copy of ``model`` whose CTC heads get a blank bias (blank = 0) that leaves about
    ``rate`` of the frames of ``wave`` non-blank at every exit."""
    out = copy.deepcopy(model)
    state = out.encode_begin(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
    for k in out.exit_layers:
        state, enc, olens = out.encode_to(state, k)
        z = out.ctc_at(k).ctc_lo(enc)[0, : int(olens[0])]
        gap = z[:, 1:].max(-1).values - z[:, 0]  # best token's logit over blank's, per frame
        head_output_layer(out, k).bias[0] += torch.quantile(gap, 1 - rate)
    return out


def build_models(variant: dict, opts, work: Path, wave: np.ndarray):
    """The EE model, its copy with a peaky exit-6 head, its copy with blank-biased heads
    (blank_biased) and the stock model on the same weights, saved for the decoders.
    Returns (model, stock_model, {name: (config, weights)})."""
    from espnet_early_exit.task import EarlyExitASRTask

    ee_args = build_args(variant, True, work, opts.quick)
    model = EarlyExitASRTask.build_model(ee_args).eval()
    files = {"ee": save(model, ee_args, work, "ee")}
    peaky = copy.deepcopy(model)
    with torch.no_grad():
        head_output_layer(peaky, K).weight.mul_(opts.peaky)
    files["peaky"] = save(peaky, ee_args, work, "ee_peaky")
    del peaky
    files["trace"] = save(blank_biased(model, wave, opts.trace_rate), ee_args, work, "ee_trace")
    stock_args = build_args(variant, False, work, opts.quick)
    stock_model = EarlyExitASRTask.build_model(stock_args).eval()
    stock_state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(EE_ONLY_KEYS)
    }
    stock_model.load_state_dict(stock_state, strict=True)  # same weights, nothing missing
    files["stock"] = save(stock_model, stock_args, work, "stock")
    return model, stock_model, files


def half_way_threshold(probe, wave, exits):
    """The threshold half-way between exit K's confidence and the best of the exits before
    it (None when exit K is not the most confident), and the confidences per exit."""
    confs = probe.decode_all_exits(wave)[K][0].confidences
    before = [confs[k] for k in exits if k < K]
    if probe.policy.higher_is_confident:
        th = (confs[K] + max(before)) / 2 if confs[K] > max(before) else None
    else:
        th = (confs[K] + min(before)) / 2 if confs[K] < min(before) else None
    return th, {str(k): float(c) for k, c in confs.items()}


def build_policies(peaky_files, exits, wave, opts, greedy):
    """Each policy (and its frame-stride version) at the threshold that accepts at exit K.
    Returns ({label: decoder}, {label: what it is, its threshold and confidences})."""
    from espnet_early_exit.frame_stats import kernel_loaded
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    decoders, info = {}, {}
    strides = [1] + ([opts.frame_stride] if opts.frame_stride > 1 else [])
    for name in ("entropy", "max_posterior", "nbest_posterior"):
        for stride in strides if name != "nbest_posterior" else [1]:
            label = name if stride == 1 else f"{name} stride {stride}"
            kw = dict(greedy, exit_policy=name, exit_policy_frame_stride=stride)
            th, confs = half_way_threshold(EarlyExitSpeech2Text(*peaky_files, **kw), wave, exits)
            info[label] = {"policy": name, "stride": stride, "frame_stats": "default",
                           "threshold": th, "confidences": confs}
            if th is None:
                continue
            decoders[label] = EarlyExitSpeech2Text(*peaky_files, exit_threshold=th, **kw)
            info[label].update(check_accepts_at_k(label, decoders[label], wave, exits))
            if stride == 1 and name != "nbest_posterior" and kernel_loaded():
                info[f"{name}, torch ops"] = dict(info[label], frame_stats="torch")
                decoders[f"{name}, torch ops"] = decoders[label]
    return decoders, info


def check_accepts_at_k(label, decoder, wave, exits) -> dict:
    """AssertionError unless ``decoder`` evaluates exactly the exits up to K and accepts at K;
    returns what it did (the results' "evaluated" exits and the "accepted" one)."""
    result = decoder(wave)[0]
    evaluated = sorted(result.confidences)
    expected = [k for k in exits if k <= K]
    assert result.exit_layer == K and evaluated == expected, (
        f"{label} evaluated exits {evaluated} and accepted at {result.exit_layer}, "
        f"not {expected} and {K}")
    return {"evaluated": evaluated, "accepted": result.exit_layer}


def build_trace_policies(trace_files, exits, wave, greedy):
    """``agreement`` and ``learned`` on the blank-biased copy, set so that they accept at
    exit K (see the module docstring); the learned policy's ``exit_policy.json`` is written
    beside that copy's model file. Returns ({label: decoder}, {label: what it is})."""
    from espnet_early_exit.exit_classifier import DEFAULT_NAME, INPUTS, ExitClassifier, \
        LogisticModel
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    def constant(p):  # P = p whatever the inputs (INPUTS and the agrees-with-previous flag)
        n = len(INPUTS) + 1
        return LogisticModel(np.zeros(n), np.ones(n), np.zeros(n), math.log(p / (1 - p)))

    models = {k: constant(LEARNED_P[1] if k >= K else LEARNED_P[0]) for k in exits[:-1]}
    ExitClassifier(models, {"fitted_on": "bench_inference.py: constant per exit"}).save(
        Path(trace_files[1]).parent / DEFAULT_NAME)
    probe = EarlyExitSpeech2Text(*trace_files, exit_policy="agreement", **greedy)
    by_exit = probe.decode_all_exits(wave)
    views = {k: by_exit[k][0].features for k in exits if k <= K}
    # patience: the exits before K; max_edits: the larger distance of those after the first
    settings = {
        "agreement": dict(exit_threshold=float(len(views) - 1), exit_policy_conf={
            "max_edits": max(int(views[k]["edits_prev"]) for k in list(views)[1:])}),
        "learned": dict(exit_threshold=0.5),
    }
    decoders, info = {}, {}
    for name, kw in settings.items():
        decoders[name] = EarlyExitSpeech2Text(*trace_files, exit_policy=name, **kw, **greedy)
        confs = decoders[name].decode_all_exits(wave)[K][0].confidences
        info[name] = {"policy": name, "stride": 1, "frame_stats": "default", "model": "trace",
                      "threshold": kw["exit_threshold"], **kw.get("exit_policy_conf", {}),
                      "confidences": {str(k): float(c) for k, c in confs.items()},
                      "hyp_len": {str(k): int(v["hyp_len"]) for k, v in views.items()},
                      **check_accepts_at_k(name, decoders[name], wave, exits)}
    return decoders, info


def build_bench(variant: dict, opts, work: Path) -> SimpleNamespace:
    """Every model and decoder one variant's measurements need, and its FLOPs counts."""
    from espnet2.bin.asr_inference import Speech2Text
    from espnet_early_exit.costs import exit_costs
    from espnet_early_exit.inference import EarlyExitSpeech2Text

    torch.manual_seed(opts.seed)
    n = int(opts.seconds * 16000)
    wave = (0.1 * np.random.default_rng(opts.seed).standard_normal(n)).astype(np.float32)
    model, stock_model, files = build_models(variant, opts, work, wave)
    costs = exit_costs(model, seconds=opts.seconds)  # FLOPs counted on the CPU
    exits = model.exit_layers
    model.to(DEVICE)
    stock_model.to(DEVICE)
    common = dict(device=DEVICE, nbest=1)
    greedy = dict(common, beam_size=1, ctc_weight=1.0)
    att = dict(common, beam_size=10, ctc_weight=0.3, maxlenratio=-float(opts.maxlen))
    policies, thresholds = build_policies(files["peaky"], exits, wave, opts, greedy)
    trace_policies, trace_info = build_trace_policies(files["trace"], exits, wave, greedy)
    policies.update(trace_policies)
    thresholds.update(trace_info)
    logging.getLogger().setLevel(logging.ERROR)
    return SimpleNamespace(
        variant=variant, model=model, stock_model=stock_model, wave=wave, costs=costs,
        exits=exits, speech=torch.from_numpy(wave)[None].to(DEVICE),
        lengths=torch.tensor([n], device=DEVICE), policies=policies, thresholds=thresholds,
        fixed=EarlyExitSpeech2Text(*files["ee"], exit_layer=K, **greedy),
        fixed_pk=EarlyExitSpeech2Text(*files["peaky"], exit_layer=K, **greedy),
        fixed_tr=EarlyExitSpeech2Text(*files["trace"], exit_layer=K, **greedy),
        ours_att=EarlyExitSpeech2Text(*files["ee"], exit_layer=K, **att),
        stock_greedy=Speech2Text(*files["stock"], maxlenratio=-float(opts.maxlen), **greedy),
        stock_att=Speech2Text(*files["stock"], **att),
    )


def describe_bench(b) -> dict:
    """What a variant is: its FLOPs per exit, the policies' thresholds (no timings)."""
    from espnet_early_exit.frame_stats import kernel_loaded, kernel_path

    rows = b.costs["exits"]
    share = {e["exit"]: e["share"] for e in rows}
    head = {e["exit"]: e["head_gflops"] for e in rows}
    full_gflops = rows[-1]["gflops"]
    floor = sum(head[k] for k in b.exits if k < K) / (share[K] * full_gflops + head[K])
    return {
        **b.variant, "exit": K, "exits": list(b.exits),
        "encoder_params": b.costs["encoder_params"], "full_gflops": full_gflops,
        "front_share": b.costs["front_share"],
        "flops": [{k: e[k] for k in ("exit", "share", "gflops", "head_gflops")} for e in rows],
        "flops_floor": floor, "flops_bound": 1 / share[K], "target_speedup": 0.9 / share[K],
        "frame_stats": f"C kernel {kernel_path()}" if kernel_loaded() else "torch ops",
        "thresholds": b.thresholds, "runs": [],
    }


def measure(b, opts) -> dict:
    """One run: the interleaved timings and the paired policy overheads."""
    wave = b.wave

    def enc_to(k):
        def fn():
            state = b.model.encode_begin(b.speech, b.lengths)
            if k:
                b.model.encode_to(state, k)
        return fn

    def stock_enc_argmax():
        enc, olens = b.stock_model.encode(b.speech, b.lengths)
        ids = torch.unique_consecutive(b.stock_model.ctc.argmax(enc)[0, : int(olens[0])])
        return [int(t) for t in ids if int(t) != 0]

    items = {f"enc{k}": enc_to(k) for k in [0] + b.exits}
    items.update(fixed=lambda: b.fixed(wave), fixed_peaky=lambda: b.fixed_pk(wave),
                 fixed_trace=lambda: b.fixed_tr(wave),
                 stock_enc_argmax=stock_enc_argmax, stock_greedy=lambda: b.stock_greedy(wave),
                 ours_att=lambda: b.ours_att(wave), stock_att=lambda: b.stock_att(wave))
    pairs = {}
    for label, s2t in b.policies.items():
        fn = (lambda s: (lambda: s(wave)))(s2t)
        base = items["fixed_trace" if b.thresholds[label].get("model") == "trace" else
                     "fixed_peaky"]
        pairs[label] = (torch_stats(base), torch_stats(fn)) if "torch ops" in label else (base, fn)
    load_before = os.getloadavg()[0]
    med = run_interleaved(items, opts.repeats)
    overhead = paired_overhead(pairs, opts.overhead_rounds)
    full = med[f"enc{b.exits[-1]}"]
    return {
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "front_ms": med["enc0"] * 1000, "front_time_share": med["enc0"] / full,
        "encoder": [{"exit": k, "time_ms": med[f"enc{k}"] * 1000,
                     "time_share": med[f"enc{k}"] / full} for k in b.exits],
        **{f"{name}_ms": med[name] * 1000 for name in
           ("fixed", "fixed_peaky", "fixed_trace", "stock_enc_argmax", "stock_greedy",
            "ours_att", "stock_att")},
        "speedup_vs_stock_encoder": med["stock_enc_argmax"] / med["fixed"],
        "speedup_vs_stock_search": med["stock_greedy"] / med["fixed"],
        "speedup_att": med["stock_att"] / med["ours_att"],
        "att_lengths": [len(b.ours_att(wave)[0].token_int), len(b.stock_att(wave)[0][2])],
        "overhead": overhead,
    }


def report(v: dict, run: dict, opts) -> list:
    """One run of one variant as the text tables this script has always printed."""
    exits, flops = v["exits"], {e["exit"]: e for e in v["flops"]}
    out = [f"# bench_inference: variant {v['name']} (front={v['front']} exit_head_rank="
           f"{v['exit_head_rank']} vocab={v['vocab']}), run {len(v['runs'])} of {opts.runs}; "
           f"threads={opts.threads} repeats={opts.repeats} audio={opts.seconds:g}s "
           f"timer={opts.timer} (random weights, {DEVICE}, batch 1; medians)",
           f"load average before/after {run['load_before']:.1f}/{run['load_after']:.1f} "
           "(other processes skew wall times)",
           f"encoder params {v['encoder_params'] / 1e6:.1f} M; full encoder "
           f"{v['full_gflops']:.2f} GFLOPs, {run['encoder'][-1]['time_ms']:.0f} ms; CTC head "
           "GFLOPs per exit " + ", ".join(f"{k}: {flops[k]['head_gflops']:.3f}" for k in exits),
           "", f"front-end + subsampling: FLOPs share {v['front_share']:.3f}, time share "
           f"{run['front_time_share']:.3f} ({run['front_ms']:.0f} ms)", "",
           "| exit | FLOPs share | time share | time ms | time <= 1.1*FLOPs+0.05 |",
           "|---|---|---|---|---|"]
    for e in run["encoder"]:
        ok = e["time_share"] <= 1.1 * flops[e["exit"]]["share"] + 0.05
        out.append(f"| {e['exit']} | {flops[e['exit']]['share']:.3f} | {e['time_share']:.3f} | "
                   f"{e['time_ms']:.0f} | {'yes' if ok else 'NO'} |")
    out += ["", f"Policy overhead, greedy CTC, accepting at exit {K} vs fixed exit {K} "
            f"({run['fixed_peaky_ms']:.0f} ms); target <= 5%; FLOPs floor (the earlier exits' "
            f"CTC heads): {v['flops_floor'] * 100:.1f}%; median over {opts.overhead_rounds} "
            "rounds of policy/fixed timed back to back, with the quartiles of that ratio",
            "| policy | threshold | confidences at exits <= 6 | time ms | overhead | quartiles |",
            "|---|---|---|---|---|---|"]
    for label, t in v["thresholds"].items():
        cs = "/".join(f"{t['confidences'][str(k)]:.3f}" for k in exits if k <= K)
        o = run["overhead"].get(label)
        if o is None:
            out.append(f"| {label} | - | {cs} | - | no threshold accepts exactly at {K} | |")
            continue
        th = f"{t['threshold']:.4f}" + (f", max_edits {t['max_edits']}" if "max_edits" in t else "")
        out.append(f"| {label} | {th} | {cs} | {o['time_ms']:.0f} | "
                   f"{o['median'] * 100:+.1f}% | {o['q1'] * 100:+.1f} / {o['q3'] * 100:+.1f}% |")
    checked = [lab for lab, t in v["thresholds"].items() if t.get("accepted") == K]
    out.append(f"checked: {', '.join(checked)} evaluated exits "
               f"{', '.join(str(k) for k in exits if k <= K)} and accepted at {K}")
    trace = [lab for lab, t in v["thresholds"].items() if t.get("model") == "trace"]
    if trace:
        lens = v["thresholds"][trace[0]]["hyp_len"]
        lens = "/".join(str(lens[str(k)]) for k in exits if k <= K)
        out.append(f"{', '.join(trace)}: on the blank-biased copy (greedy hypotheses of {lens} "
                   f"tokens at exits <= {K}), against its fixed exit {K} "
                   f"({run['fixed_trace_ms']:.0f} ms)")
    out += [f"frame statistics: {v['frame_stats']} ('torch ops' rows: the same decodes without "
            "the kernel)", "", f"Exit {K} of {exits[-1]} vs stock ESPnet on the same weights "
            f"(FLOPs share {flops[K]['share']:.3f}, 1/share {v['flops_bound']:.2f}):",
            "| decode | ours @exit6 ms | stock ms | speed-up | target |", "|---|---|---|---|---|"]
    target = v["target_speedup"]
    for what, ours, stock, sp in (
            ("greedy CTC vs stock encoder + argmax", "fixed", "stock_enc_argmax",
             "speedup_vs_stock_encoder"),
            (f"greedy CTC vs stock Speech2Text beam 1 (CTC prefix search, <= {opts.maxlen} "
             "tokens)", "fixed", "stock_greedy", "speedup_vs_stock_search"),
            (f"joint CTC/att beam 10 (ctc 0.3, <= {opts.maxlen} tokens)", "ours_att",
             "stock_att", "speedup_att")):
        goal = ("report" if sp == "speedup_att" else
                f">= {target:.2f}x {'ok' if run[sp] >= target else 'MISSED'}")
        out.append(f"| {what} | {run[ours + '_ms']:.0f} | {run[stock + '_ms']:.0f} | "
                   f"{run[sp]:.2f}x | {goal} |")
    out.append(f"(best hypothesis lengths of the joint search: ours {run['att_lengths'][0]}, "
               f"stock {run['att_lengths'][1]} tokens)")
    return out


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                    help="models: <conv2d|conv1d4>[_rank<R>][_vocab<V>] (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=3,
                    help="measure every variant this many times (the docs give the range)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--overhead_rounds", type=int, default=40,
                    help="rounds of the paired policy-vs-fixed timings")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--maxlen", type=int, default=30, help="token cap of every beam search")
    ap.add_argument("--peaky", type=float, default=8.0, help="scale of exit 6's CTC head")
    ap.add_argument("--trace_rate", type=float, default=0.14,
                    help="share of non-blank frames of the agreement/learned runs' model "
                         "(0.14: 3.5 tokens a second at 4x subsampling)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frame_stride", type=int, default=4,
                    help="also time entropy/max_posterior estimated from every n-th frame")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the card is named in the output)")
    ap.add_argument("--timer", choices=["wall", "cpu"], default="wall",
                    help="wall clock, or this process's CPU time (steadier on a busy machine)")
    ap.add_argument("--results", type=Path, default=None,
                    help="also write every measured row to this JSON file (docs/results/bench/...)")
    ap.add_argument("--quick", action="store_true",
                    help="narrow models, 1 s of audio, one short run: checks the script only")
    return ap


def main(argv=None):
    opts = get_parser().parse_args(argv)
    if opts.quick:
        opts.seconds, opts.repeats, opts.overhead_rounds, opts.runs, opts.maxlen = 1.0, 1, 2, 1, 3
    variants = [parse_variant(s) for s in opts.variants]  # bad names fail before any work
    global CLOCK, DEVICE
    CLOCK = time.perf_counter if opts.timer == "wall" else time.process_time
    DEVICE = opts.device
    torch.set_num_threads(opts.threads)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from espnet_early_exit import provenance

    head = provenance.record("bench_inference", None if argv is None else [__file__, *argv],
                             opts.threads, DEVICE)
    print(f"# machine: {head['machine']}")
    results = []
    for variant in variants:
        work = Path(tempfile.mkdtemp(prefix="bench_ee_"))
        atexit.register(shutil.rmtree, work, True)  # the saved models: ~0.6 GB per variant
        bench = build_bench(variant, opts, work)
        results.append(describe_bench(bench))
        for _ in range(opts.runs):
            results[-1]["runs"].append(measure(bench, opts))
            print("\n".join(report(results[-1], results[-1]["runs"][-1], opts)) + "\n")
        del bench
        shutil.rmtree(work, ignore_errors=True)
    if opts.results:
        options = {k: getattr(opts, k) for k in (
            "runs", "threads", "repeats", "overhead_rounds", "seconds", "maxlen", "peaky", "seed",
            "trace_rate", "frame_stride", "device", "timer", "quick")}
        provenance.write_results(opts.results, {**head, "config": str(CONFIG.relative_to(REPO)),
                                                "options": options, "variants": results})
        print(f"results: {opts.results}")


if __name__ == "__main__":
    main()
