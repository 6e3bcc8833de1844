#!/usr/bin/env python3
"""Early-exit inference benchmark (a script, not a test): prints one table.

    PYTHONPATH=. python benchmarks/bench_inference.py --threads 2 --repeats 5 --front conv2d
    PYTHONPATH=. python benchmarks/bench_inference.py --threads 2 --repeats 5 --front conv1d4
    PYTHONPATH=. python benchmarks/bench_inference.py --device cuda --repeats 20   # on a GPU

Model: the LibriSpeech-100 Conformer of conf/tuning/train_ee_conformer_ls100_conv1d4.yaml
(12 blocks, d 256, FFN 1024, exits after every second block, 6-layer transformer decoder) with
the chosen subsampling front, RANDOM weights, a 5000-token vocabulary; one decoder shared by
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
   ``max_posterior`` (and ``nbest_posterior``) accepting at exit 6 vs ``fixed`` exit 6.
   With random weights every exit is equally unsure, so these runs use a copy of the model
   whose exit-6 CTC head weights are scaled by --peaky (x8) to make its posteriors peakier
   than exits 2 and 4 (the fixed-exit baseline of this comparison uses the same copy); each
   policy's threshold is set half-way between exit 6's confidence and the best of exits 2/4:
   the policy then really evaluates exits 2, 4, 6 and accepts at 6 (checked). The overhead is
   the CTC head + confidence at exits 2 and 4 (a 256x5000 projection each, 0.64 GFLOPs, about
   3/4 of a block; with --exit_head_rank R a 256xR + Rx5000 one); the table gives that FLOPs
   floor next to the measured overhead, the same decodes with the per-frame statistics
   computed by torch ops instead of the C kernel (frame_stats.py; when the kernel is built),
   and the same policies with --frame_stride 4
   (confidence from every 4th frame, see
   policies.py), which cuts that head cost at the evaluated exits.
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
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = REPO / "conf" / "tuning" / "train_ee_conformer_ls100_conv1d4.yaml"
EE_ONLY_KEYS = ("encoder.exit_norms.", "exit_ctc_heads.", "exit_att_decoders.")


def build_args(front: str, vocab: int, ee: bool, workdir: Path, rank=None):
    from espnet_early_exit.task import EarlyExitASRTask

    conf = yaml.safe_load(CONFIG.read_text())
    conf["encoder_conf"]["input_layer"] = front
    conf["model_conf"]["exit_decoders"] = "shared"
    if ee and rank:
        conf["model_conf"]["exit_head_rank"] = rank
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
    of t(fn) / t(base) - 1 over the rounds, and the median t(fn)."""
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
        out[name] = (statistics.median(v), q1, q3, statistics.median(times[name]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--overhead_rounds", type=int, default=40,
                    help="rounds of the paired policy-vs-fixed timings")
    ap.add_argument("--front", choices=["conv2d", "conv1d4"], default="conv2d")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--maxlen", type=int, default=30, help="token cap of every beam search")
    ap.add_argument("--peaky", type=float, default=8.0, help="scale of exit 6's CTC head")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exit_head_rank", type=int, default=None,
                    help="factorised CTC heads at the exits before the last (model_conf)")
    ap.add_argument("--frame_stride", type=int, default=4,
                    help="also time entropy/max_posterior estimated from every n-th frame")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the card is named in the output)")
    ap.add_argument("--timer", choices=["wall", "cpu"], default="wall",
                    help="wall clock, or this process's CPU time (steadier on a busy machine)")
    opts = ap.parse_args()
    global CLOCK, DEVICE
    CLOCK = time.perf_counter if opts.timer == "wall" else time.process_time
    DEVICE = opts.device

    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    from espnet2.bin.asr_inference import Speech2Text
    from espnet_early_exit.costs import exit_costs
    from espnet_early_exit.frame_stats import kernel_loaded, kernel_path
    from espnet_early_exit.inference import EarlyExitSpeech2Text
    from espnet_early_exit.task import EarlyExitASRTask

    K = 6
    work = Path(tempfile.mkdtemp(prefix="bench_ee_"))
    atexit.register(shutil.rmtree, work, True)  # the saved models: ~0.4 GB per run
    ee_args = build_args(opts.front, opts.vocab, True, work, opts.exit_head_rank)
    model = EarlyExitASRTask.build_model(ee_args).eval()
    ee_cfg, ee_pth = save(model, ee_args, work, "ee")
    peaky = copy.deepcopy(model)
    with torch.no_grad():
        lo = peaky.ctc_at(K).ctc_lo
        (lo[-1] if isinstance(lo, torch.nn.Sequential) else lo).weight.mul_(opts.peaky)
    pk_cfg, pk_pth = save(peaky, ee_args, work, "ee_peaky")
    del peaky
    stock_args = build_args(opts.front, opts.vocab, False, work)
    stock_model = EarlyExitASRTask.build_model(stock_args).eval()
    stock_state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(EE_ONLY_KEYS)
    }
    stock_model.load_state_dict(stock_state, strict=True)  # same weights, nothing missing
    st_cfg, st_pth = save(stock_model, stock_args, work, "stock")

    n = int(opts.seconds * 16000)
    rng = np.random.default_rng(opts.seed)
    wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
    costs = exit_costs(model, seconds=opts.seconds)  # FLOPs counted on the CPU
    share = {e["exit"]: e["share"] for e in costs["exits"]}
    exits = model.exit_layers
    model.to(DEVICE)
    stock_model.to(DEVICE)
    speech = torch.from_numpy(wave)[None].to(DEVICE)
    lengths = torch.tensor([n], device=DEVICE)

    # --- decoders
    common = dict(device=DEVICE, nbest=1)
    greedy = dict(common, beam_size=1, ctc_weight=1.0)
    att = dict(common, beam_size=10, ctc_weight=0.3, maxlenratio=-float(opts.maxlen))
    fixed = EarlyExitSpeech2Text(ee_cfg, ee_pth, exit_layer=K, **greedy)
    fixed_pk = EarlyExitSpeech2Text(pk_cfg, pk_pth, exit_layer=K, **greedy)
    thresholds = {}
    policies = {}
    for name in ("entropy", "max_posterior", "nbest_posterior"):
        probe = EarlyExitSpeech2Text(pk_cfg, pk_pth, exit_policy=name, **greedy)
        confs = probe.decode_all_exits(wave)[K][0].confidences
        before = [confs[k] for k in exits if k < K]
        c6 = confs[K]
        if probe.policy.higher_is_confident:
            th = (c6 + max(before)) / 2 if c6 > max(before) else None
        else:
            th = (c6 + min(before)) / 2 if c6 < min(before) else None
        thresholds[name] = (th, confs)
        if th is not None:
            policies[name] = EarlyExitSpeech2Text(
                pk_cfg, pk_pth, exit_policy=name, exit_threshold=th, **greedy
            )
            chosen = policies[name](wave)[0].exit_layer
            assert chosen == K, f"{name} accepted at {chosen}, not {K}"
            if name != "nbest_posterior" and opts.frame_stride > 1:
                # the same decision from every n-th frame (its own threshold: same rule)
                sub = EarlyExitSpeech2Text(
                    pk_cfg, pk_pth, exit_policy=name,
                    exit_policy_frame_stride=opts.frame_stride, **greedy,
                )
                sconfs = sub.decode_all_exits(wave)[K][0].confidences
                sb = [sconfs[k] for k in exits if k < K]
                if sub.policy.higher_is_confident:
                    sth = (sconfs[K] + max(sb)) / 2 if sconfs[K] > max(sb) else None
                else:
                    sth = (sconfs[K] + min(sb)) / 2 if sconfs[K] < min(sb) else None
                sname = f"{name} stride {opts.frame_stride}"
                thresholds[sname] = (sth, sconfs)
                if sth is not None:
                    policies[sname] = EarlyExitSpeech2Text(
                        pk_cfg, pk_pth, exit_policy=name, exit_threshold=sth,
                        exit_policy_frame_stride=opts.frame_stride, **greedy,
                    )
                    assert policies[sname](wave)[0].exit_layer == K
    ours_att = EarlyExitSpeech2Text(ee_cfg, ee_pth, exit_layer=K, **att)
    stock_greedy = Speech2Text(st_cfg, st_pth, maxlenratio=-float(opts.maxlen), **greedy)
    stock_att = Speech2Text(st_cfg, st_pth, **att)
    logging.getLogger().setLevel(logging.ERROR)

    def enc_to(k):
        def fn():
            state = model.encode_begin(speech, lengths)
            if k:
                model.encode_to(state, k)
        return fn

    def stock_enc_argmax():
        enc, olens = stock_model.encode(speech, lengths)
        ids = stock_model.ctc.argmax(enc)[0, : int(olens[0])]
        ids = torch.unique_consecutive(ids)
        return [int(t) for t in ids if int(t) != 0]

    items = {f"enc{k}": enc_to(k) for k in [0] + exits}
    items["fixed6"] = lambda: fixed(wave)
    items["fixed6_peaky"] = lambda: fixed_pk(wave)
    pairs = {
        name: (items["fixed6_peaky"], (lambda s: (lambda: s(wave)))(s2t))
        for name, s2t in policies.items()
    }
    if kernel_loaded():
        # the same decodes with the frame statistics from torch ops instead of the C kernel
        def torch_stats(fn):
            def run():
                os.environ["EEE_FRAME_STATS"] = "torch"
                try:
                    return fn()
                finally:
                    del os.environ["EEE_FRAME_STATS"]
            return run

        for name in [n for n in policies if "stride" not in n and n != "nbest_posterior"]:
            base, fn = pairs[name]
            pairs[f"{name}, torch ops"] = (torch_stats(base), torch_stats(fn))
    items["stock_enc_argmax"] = stock_enc_argmax
    items["stock_greedy"] = lambda: stock_greedy(wave)
    items["ours_att6"] = lambda: ours_att(wave)
    items["stock_att"] = lambda: stock_att(wave)
    load_before = os.getloadavg()
    med = run_interleaved(items, opts.repeats)
    overhead = paired_overhead(pairs, opts.overhead_rounds)

    full = med[f"enc{exits[-1]}"]
    head = {e["exit"]: e["head_gflops"] for e in costs["exits"]}
    full_gflops = costs["exits"][-1]["gflops"]
    lengths_att = (len(ours_att(wave)[0].token_int), len(stock_att(wave)[0][2]))
    out = []
    p = out.append
    p(f"# bench_inference: front={opts.front} exit_head_rank={opts.exit_head_rank} "
      f"threads={opts.threads} repeats={opts.repeats} "
      f"audio={opts.seconds:.0f}s vocab={opts.vocab} timer={opts.timer} "
      f"(random weights, {DEVICE}, batch 1; medians)")
    if DEVICE.startswith("cuda"):
        p(f"device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    p(f"machine: {os.cpu_count()} CPUs, load average before/after "
      f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f} (other processes skew wall times)")
    p(f"torch {torch.__version__}; encoder params {costs['encoder_params'] / 1e6:.1f} M; "
      f"full encoder {costs['exits'][-1]['gflops']:.2f} GFLOPs, "
      f"{full * 1000:.0f} ms; CTC head GFLOPs per exit "
      + ", ".join(f"{k}: {head[k]:.3f}" for k in exits))
    p("")
    p(f"front-end + subsampling: FLOPs share {costs['front_share']:.3f}, "
      f"time share {med['enc0'] / full:.3f} ({med['enc0'] * 1000:.0f} ms)")
    p("")
    p("| exit | FLOPs share | time share | time ms | time <= 1.1*FLOPs+0.05 |")
    p("|---|---|---|---|---|")
    for k in exits:
        ts = med[f"enc{k}"] / full
        ok = ts <= 1.1 * share[k] + 0.05
        p(f"| {k} | {share[k]:.3f} | {ts:.3f} | {med[f'enc{k}'] * 1000:.0f} | "
          f"{'yes' if ok else 'NO'} |")
    p("")
    p(f"Policy overhead, greedy CTC, accepting at exit {K} (exits {[k for k in exits if k <= K]} "
      f"evaluated) vs fixed exit {K} ({med['fixed6_peaky'] * 1000:.0f} ms); target <= 5%; "
      f"FLOPs floor (the earlier exits' CTC heads): "
      f"{sum(head[k] for k in exits if k < K) / (share[K] * full_gflops + head[K]) * 100:.1f}%")
    p(f"(each overhead: median over {opts.overhead_rounds} rounds of policy/fixed timed back to "
      f"back, with the quartiles of that ratio)")
    p("| policy | threshold | confidences at 2/4/6 | time ms | overhead | quartiles |")
    p("|---|---|---|---|---|---|")
    for name, (th, confs) in thresholds.items():
        cs = "/".join(f"{confs[k]:.3f}" for k in exits if k <= K)
        if th is None:
            p(f"| {name} | - | {cs} | - | no threshold accepts exactly at {K} | |")
            continue
        for row in [name, f"{name}, torch ops"]:
            if row in overhead:
                ov, q1, q3, t = overhead[row]
                p(f"| {row} | {th:.4f} | {cs} | {t * 1000:.0f} | {ov * 100:+.1f}% | "
                  f"{q1 * 100:+.1f} / {q3 * 100:+.1f}% |")
    p("frame statistics (entropy, max_posterior, greedy): "
      + (f"C kernel {kernel_path()}; 'torch ops' rows: the same decodes without it"
         if kernel_loaded() else "torch ops (kernel not built: "
         "python -m espnet_early_exit.frame_stats build)"))
    p("")
    target = 0.9 / share[K]
    sp_ref = med["stock_enc_argmax"] / med["fixed6"]
    sp_stock = med["stock_greedy"] / med["fixed6"]
    p(f"Exit {K} of {exits[-1]} vs stock ESPnet on the same weights "
      f"(FLOPs share {share[K]:.3f}, 1/share {1 / share[K]:.2f}):")
    p("| decode | ours @exit6 ms | stock ms | speed-up | target |")
    p("|---|---|---|---|---|")
    p(f"| greedy CTC vs stock encoder + argmax | {med['fixed6'] * 1000:.0f} | "
      f"{med['stock_enc_argmax'] * 1000:.0f} | {sp_ref:.2f}x | >= {target:.2f}x "
      f"{'ok' if sp_ref >= target else 'MISSED'} |")
    p(f"| greedy CTC vs stock Speech2Text beam 1 (CTC prefix search, <= {opts.maxlen} tokens) | "
      f"{med['fixed6'] * 1000:.0f} | {med['stock_greedy'] * 1000:.0f} | {sp_stock:.2f}x | "
      f">= {target:.2f}x {'ok' if sp_stock >= target else 'MISSED'} |")
    p(f"| joint CTC/att beam 10 (ctc 0.3, <= {opts.maxlen} tokens) | "
      f"{med['ours_att6'] * 1000:.0f} | {med['stock_att'] * 1000:.0f} | "
      f"{med['stock_att'] / med['ours_att6']:.2f}x | report |")
    p(f"(best hypothesis lengths of the joint search: ours {lengths_att[0]}, "
      f"stock {lengths_att[1]} tokens)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
