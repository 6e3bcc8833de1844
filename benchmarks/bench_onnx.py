#!/usr/bin/env python3
"""ONNX deployment benchmark (a script, not a test): onnxruntime vs the torch decoder per exit.

    python benchmarks/bench_onnx.py --threads 2 --repeats 5 --results docs/results/bench/onnx.json
    python benchmarks/bench_onnx.py --fsdd_exp egs2/fsdd_digits/asr1/exp/asr_train_asr_char \
        --fsdd_test egs2/fsdd_digits/asr1/dump/raw/test    # + WER per exit on FSDD
    python benchmarks/bench_onnx.py --quick   # narrow model, one repeat: checks the script

(repository root on PYTHONPATH: `. tools/activate.sh`). Speed: the LibriSpeech-100 Conformer of
conf/tuning/train_ee_conformer_ls100.yaml (12 blocks, exits every 2), RANDOM weights, 5000
tokens, 10 s of noise, batch 1, CPU, --threads for torch and onnxruntime alike; greedy CTC at a
fixed exit. Per exit k, side by side in one run (medians after one warm-up, interleaved): the
torch decoder (EarlyExitSpeech2Text), onnxruntime float32 and int8 (dynamic quantisation).
Targets: float32 <= 0.6 x torch at every exit; time share of exit k (vs the last exit, float32)
<= 1.1 x its FLOPs share + 0.05. With --fsdd_exp/--fsdd_test (a trained model's exp dir with
config.yaml and --fsdd_model, and a Kaldi test dir), every exit is decoded on the test set by
torch, float32 and int8 (decode_all_exits): WER and decoding seconds per exit, and whether the
float32 hypotheses equal torch's.
"""

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "conf" / "tuning" / "train_ee_conformer_ls100.yaml"
QUICK_SIZES = {"output_size": 32, "attention_heads": 2, "linear_units": 64}
# idle onnxruntime threads sleep: spinning ones would steal the cores from the torch runs
# interleaved with them
NO_SPIN = {"session.intra_op.allow_spinning": "0"}


def build_model(work: Path, vocab: int, quick: bool):
    """config.yaml + model.pth of the LS100 Conformer with random weights."""
    from espnet_early_exit.task import EarlyExitASRTask

    conf = yaml.safe_load(CONFIG.read_text())
    conf.pop("specaug", None), conf.pop("specaug_conf", None)
    if quick:
        conf["encoder_conf"].update(QUICK_SIZES)
    (work / "train.yaml").write_text(yaml.safe_dump(conf))
    args = EarlyExitASRTask.get_parser().parse_args(
        ["--config", str(work / "train.yaml"), "--output_dir", str(work / "x"),
         "--token_type", "word"])
    args.token_list = ["<blank>", "<unk>"] + [f"t{i}" for i in range(vocab - 3)] + ["<sos/eos>"]
    torch.manual_seed(0)
    model = EarlyExitASRTask.build_model(args)
    (work / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), work / "model.pth")
    return work / "config.yaml", work / "model.pth"


def medians(fns: dict, repeats: int) -> dict:
    """{name: median seconds of fn()}, one warm-up each, the repeats interleaved."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def at_exit(dec, k: int, wav):
    def run():
        dec.exit_layer = k  # both decoders read it per call (fixed policy)
        return dec(wav)
    return run


def speed_rows(s2t, decs: dict, wav, repeats: int) -> list:
    shares = {e["exit"]: e["share"] for e in decs["float32"].manifest["exits"]}
    fns = {(name, k): at_exit(d, k, wav) for k in shares for name, d in
           [("torch", s2t), *decs.items()]}
    t = medians(fns, repeats)
    last = max(shares)
    rows = []
    for k, share in shares.items():
        row = {"exit": k, "flops_share": share, **{f"{n}_s": t[(n, k)] for n in
                                                   ("torch", *decs)}}
        row["onnx_vs_torch"] = row["float32_s"] / row["torch_s"]
        row["time_share"] = row["float32_s"] / t[("float32", last)]
        row["ok_speed"] = row["onnx_vs_torch"] <= 0.6
        row["ok_share"] = row["time_share"] <= 1.1 * share + 0.05
        rows.append(row)
    return rows


def fsdd_rows(s2t, decs: dict, test_dir: Path) -> list:
    import soundfile

    from espnet_early_exit.fileio import read_table
    from espnet_early_exit.scoring import score_utterances

    refs = read_table(test_dir / "text")
    hyps = {name: {} for name in ("torch", *decs)}
    secs = {name: {} for name in hyps}
    for utt, path in read_table(test_dir / "wav.scp").items():
        wav, fs = soundfile.read(path, dtype="float32")
        for name, d in [("torch", s2t), *decs.items()]:
            out = d.decode_all_exits(wav, fs=fs, timings=secs[name])
            for k, r in out.items():
                best = r[0] if isinstance(r, list) else r
                hyps[name].setdefault(k, {})[utt] = best.text or ""
    rows = []
    for k in sorted(hyps["torch"]):
        row = {"exit": k, "same_hyps_float32": hyps["float32"][k] == hyps["torch"][k]}
        for name in hyps:
            res = score_utterances(refs, hyps[name][k])
            row[f"{name}_wer"], row[f"{name}_s"] = res["wer"], secs[name][k]
        rows.append(row)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="narrow model, 1 repeat, 2 s")
    ap.add_argument("--fsdd_exp", type=Path, default=None, help="trained FSDD exp dir")
    ap.add_argument("--fsdd_model", default="valid.loss.ave.pth")
    ap.add_argument("--fsdd_test", type=Path, default=None, help="Kaldi dir (wav.scp, text)")
    ap.add_argument("--results", type=Path, default=None, help="JSON results file")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.repeats, opts.seconds, opts.vocab = 1, 2.0, 50
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    from espnet_early_exit import provenance
    from espnet_early_exit.inference import EarlyExitSpeech2Text
    from espnet_early_exit.onnx_export import export_onnx
    from espnet_early_exit.onnx_runtime import OnnxEarlyExitSpeech2Text

    head = provenance.record("bench_onnx", None if argv is None else [__file__, *argv],
                             opts.threads)
    greedy = dict(beam_size=1, ctc_weight=1.0, nbest=1)

    def decoders(config, model, work: Path):
        s2t = EarlyExitSpeech2Text(str(config), str(model), **greedy)
        decs = {}
        for name, quant in (("float32", None), ("int8", "int8")):
            export_onnx(work / name, config, model, quantize=quant, cost_seconds=opts.seconds)
            decs[name] = OnnxEarlyExitSpeech2Text(work / name, num_threads=opts.threads,
                                                  session_config=NO_SPIN)
        return s2t, decs

    payload = {**head, "config": str(CONFIG.relative_to(REPO)),
               "options": {k: getattr(opts, k) for k in ("threads", "repeats", "seconds",
                                                          "vocab", "quick")}}
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        work = Path(tmp)
        s2t, decs = decoders(*build_model(work, opts.vocab, opts.quick), work)
        wav = (0.1 * np.random.default_rng(0).standard_normal(int(opts.seconds * 16000)))
        payload["speed"] = speed_rows(s2t, decs, wav.astype(np.float32), opts.repeats)
        print("exit flops_share torch_s float32_s int8_s onnx/torch time_share ok")
        for r in payload["speed"]:
            print(f"{r['exit']:4d} {r['flops_share']:.3f} {r['torch_s']:.4f} {r['float32_s']:.4f} "
                  f"{r['int8_s']:.4f} {r['onnx_vs_torch']:.2f} {r['time_share']:.3f} "
                  f"{r['ok_speed'] and r['ok_share']}")
        if opts.fsdd_exp and opts.fsdd_test:
            fsdd = work / "fsdd"
            fsdd.mkdir()
            s2t, decs = decoders(opts.fsdd_exp / "config.yaml",
                                 opts.fsdd_exp / opts.fsdd_model, fsdd)
            payload["fsdd"] = fsdd_rows(s2t, decs, opts.fsdd_test)
            for r in payload["fsdd"]:
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in r.items()))
    if opts.results:
        provenance.write_results(opts.results, payload)
        print(f"results: {opts.results}")


if __name__ == "__main__":
    main()
