"""Two gloo processes training tiny early-exit models the way ESPnet's trainer does under DDP.

``run(out_dir, token_list, cases)`` spawns 2 CPU processes; each, for every case, builds the
same model (EarlyExitASRTask.build_model, dropout off so that runs are deterministic), wraps it
in DistributedDataParallel exactly as ``espnet2.train.trainer.Trainer.run`` does
(``find_unused_parameters`` = what ``task.set_unused_parameters`` would set), takes its shard
``batch[rank::2]`` of a 5-utterance batch (ESPnet's sharding; shards of 3 and 2), and
applies the trainer's loss arithmetic (weighted by utterances, x world size). Beside it, a
deep copy trains in the same process on the whole batch: the reference of one process.
Each rank writes ``rank<r>.json``: per case, the loss/stat and gradient mismatches against
the reference at every step, the parameters (and buffers) that differ from rank 0's after
the steps, and the parameters seen without a gradient.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist

WORLD = 2
STEPS = 3

TRANSFORMER = dict(
    output_size=16, attention_heads=2, linear_units=32, num_blocks=3, input_layer="conv2d",
    dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
)
CONFORMER = dict(
    TRANSFORMER, macaron_style=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
    selfattention_layer_type="rel_selfattn", cnn_module_kernel=3,
)


def case_config(encoder: str = "ee_transformer", layer_drop_rate: float = 0.0,
                **model_conf) -> dict:
    enc = dict(CONFORMER if encoder == "ee_conformer" else TRANSFORMER)
    return {
        "encoder": encoder,
        "encoder_conf": dict(enc, exit_layers=[1, 2, 3], layer_drop_rate=layer_drop_rate),
        "decoder": "transformer",
        "decoder_conf": dict(attention_heads=2, linear_units=32, num_blocks=1, dropout_rate=0.0,
                             positional_dropout_rate=0.0, self_attention_dropout_rate=0.0,
                             src_attention_dropout_rate=0.0),
        "model": "ee_espnet",
        "model_conf": dict(dict(ctc_weight=0.5, lsm_weight=0.1, length_normalized_loss=False),
                           **model_conf),
        "input_size": 20,  # features in, no front-end
        "normalize": None,
        "specaug": None,
    }


def batch(vocab: int):
    """5 utterances of 20-dim features (32..48 frames) and 2..5 tokens, ESPnet-padded."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([48, 44, 40, 36, 32])
    feats = torch.randn(5, 48, 20, generator=g)
    for b, n in enumerate(lengths):
        feats[b, n:] = 0.0
    text_lengths = torch.tensor([5, 4, 3, 4, 2])
    text = torch.randint(2, vocab - 1, (5, 5), generator=g)
    for b, n in enumerate(text_lengths):
        text[b, n:] = -1
    return dict(speech=feats, speech_lengths=lengths, text=text, text_lengths=text_lengths)


def _build(config: dict, token_list: str, tmp: Path):
    from conftest import build_args

    from espnet_early_exit.task import EarlyExitASRTask

    tmp.mkdir(parents=True, exist_ok=True)
    args = build_args(config, Path(token_list), tmp)
    torch.manual_seed(1234)  # the same initial model and layer-drop draws on every rank
    return EarlyExitASRTask.build_model(args)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # float noise of a different summation order, grown over a few SGD steps; a gradient that
    # missed the all-reduce or the eager head's part would be off by tens of percent
    return torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def _ddp_step(ddp, shard: dict):
    """One step of espnet2's train_one_epoch under DDP: forward, weighting, backward."""
    from espnet2.torch_utils.recursive_op import recursive_average

    loss, stats, weight = ddp(**{k: v.clone() for k, v in shard.items()})
    stats = {k: v for k, v in stats.items() if v is not None}
    loss = (loss * weight.type(loss.dtype)).sum()
    stats, weight = recursive_average(stats, weight, True)
    loss = loss / weight * dist.get_world_size()
    loss.backward()
    return stats


def _mismatches(model, ref, stats: dict, ref_stats: dict) -> List[str]:
    # losses, not accuracies: ESPnet averages a shard's token accuracy by utterances
    bad = [f"stat {k}" for k, v in ref_stats.items()
           if v is not None and k.startswith("loss") and not _close(stats[k], v)]
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        if (p.grad is None) != (q.grad is None):
            bad.append(f"grad {name}: None on one side only")
        elif p.grad is not None and not _close(p.grad, q.grad):
            bad.append(f"grad {name}: max diff {float((p.grad - q.grad).abs().max()):.3g}")
    return bad


def _differs_from_rank0(model) -> List[str]:
    names = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        mine = t.detach().clone()
        rank0 = mine.clone()
        dist.broadcast(rank0, 0)
        if not torch.equal(mine, rank0):
            names.append(name)
    return names


def run_case(name: str, spec: dict, token_list: str, tmp: Path, rank: int) -> Dict:
    from torch.nn.parallel import DistributedDataParallel

    start = time.time()
    spec = dict(spec)
    find_unused = spec.pop("find_unused_parameters", None)
    model = _build(case_config(**spec), token_list, tmp / name)
    ref = copy.deepcopy(model)
    model.train(), ref.train()
    reasons = model.unused_parameter_reasons()
    if find_unused is None:
        find_unused = bool(reasons)  # what task.set_unused_parameters sets
    # as Trainer.run on CPU (ngpu 0): no device_ids, ESPnet's gradient_as_bucket_view default
    ddp = DistributedDataParallel(model, find_unused_parameters=find_unused,
                                  gradient_as_bucket_view=True)
    # SGD: Adam would blow float noise in gradients that are 0 in exact arithmetic (the
    # attention key biases) up to full steps, so the reference could not be compared
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    whole = batch(model.vocab_size)
    shard = {k: v[rank::WORLD] for k, v in whole.items()}
    out = {"reasons": reasons, "find_unused": find_unused, "mismatch": [], "unused": [],
           "error": None}
    try:
        for step in range(STEPS if spec.get("layer_drop_rate", 0) == 0 else STEPS + 1):
            stats = _ddp_step(ddp, shard)
            loss_ref, ref_stats, _ = ref(**{k: v.clone() for k, v in whole.items()})
            loss_ref.backward()
            out["mismatch"] += [f"step {step}: {m}"
                                for m in _mismatches(model, ref, stats, ref_stats)]
            out["unused"] += [n for n, p in model.named_parameters() if p.grad is None]
            opt.step(), opt_ref.step()
            opt.zero_grad(), opt_ref.zero_grad()
    except RuntimeError as e:  # DDP's own checks (unused parameters)
        out["error"] = str(e).splitlines()[0]
        return out
    out["rank_diff"] = _differs_from_rank0(model)
    out["ref_param_mismatch"] = [
        n for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters())
        if not torch.allclose(p, q, rtol=1e-3, atol=1e-5)
    ]
    out["unused"] = sorted(set(out["unused"]))
    out["seconds"] = round(time.time() - start, 2)
    return out


def _worker(rank: int, port: int, out_dir: str, token_list: str, cases: Dict[str, dict]):
    torch.set_num_threads(1)
    # a collective that one rank never joins fails after 5 minutes instead of hanging
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(minutes=5))
    results = {}
    try:
        for name, spec in cases.items():
            results[name] = run_case(name, spec, token_list, Path(out_dir) / f"r{rank}", rank)
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results, indent=1))
        dist.destroy_process_group()


def run(out_dir: Path, token_list: Path, cases: Dict[str, dict]) -> List[Dict]:
    """Spawn the 2 gloo workers; return each rank's results."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(port, str(out_dir), str(token_list), cases), nprocs=WORLD)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(WORLD)]
