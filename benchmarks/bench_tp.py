"""Decode throughput: tensor parallelism (TP=2 over gloo, 1 thread per rank) vs TP=1 (the same
cores as threads, and 1 thread) on the CPU, the same weights, side by side and interleaved.

    python benchmarks/bench_tp.py              # a ~107M-parameter llama shape, batch 1 and 8
    python benchmarks/bench_tp.py --quick      # tiny model, seconds (CI)

Every engine's greedy tokens are checked against TP=1's. On a CPU, TP pays only when a decode
step is bound by one core's memory bandwidth or compute and the ranks get their own cores; each
step costs two all_reduces per layer plus a gather of the logits over loopback TCP (gloo), so on
a small or shared machine expect it not to pay.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

import torch

from vibekit import Engine, SamplingParams
from vibekit.config import ModelConfig
from vibekit.models.dummy import save_dummy_checkpoint

FULL = ModelConfig(model_type="llama", vocab_size=8192, hidden_size=1024, intermediate_size=2816,
                   num_layers=8, num_qo_heads=16, num_kv_heads=4, head_dim=64,
                   max_position_embeddings=2048, eos_token_ids=(256,))


def run(engine: Engine, threads: int, prompts, out_len: int) -> tuple[float, list[list[int]]]:
    torch.set_num_threads(threads)  # rank 0's threads (process-wide); workers keep their own
    params = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    engine.generate(prompts[:1], SamplingParams(max_tokens=2, ignore_eos=True))  # warm
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    return len(prompts) * out_len / dt, [o.token_ids for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model, few tokens (CI)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--out-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="cores TP=1 may use as threads")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    out_len = 4 if args.quick else args.out_len
    repeats = 1 if args.quick else args.repeats
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        source = "dummy:tiny-llama" if args.quick else str(
            save_dummy_checkpoint(FULL, os.path.join(tmp, "ckpt")))
        name = "dummy:tiny-llama" if args.quick else (
            f"llama {FULL.num_params() / 1e6:.0f}M (h={FULL.hidden_size}, "
            f"{FULL.num_layers} layers, {FULL.num_qo_heads}/{FULL.num_kv_heads} heads)")
        opts = dict(max_model_len=512, page_size=16, max_num_seqs=max(batches))
        engines = {
            f"TP=1, {args.threads} threads": (Engine.from_pretrained(source, **opts),
                                              args.threads),
            "TP=1, 1 thread": (None, 1),  # the same engine with 1 thread
            "TP=2, 1 thread/rank": (Engine.from_pretrained(source, tensor_parallel_size=2,
                                                          num_threads=1, **opts), 1),
        }
        base = next(iter(engines.values()))[0]
        engines["TP=1, 1 thread"] = (base, 1)
        rng = random.Random(0)
        results = []
        print(f"model={name} out_len={out_len} repeats={repeats} cpus={os.cpu_count()}")
        for batch in batches:
            prompts = [[rng.randrange(FULL.vocab_size if not args.quick else 256)
                        for _ in range(32)] for _ in range(batch)]
            samples: dict[str, list[float]] = {k: [] for k in engines}
            ref = None
            for _ in range(repeats):
                for label, (engine, threads) in engines.items():  # interleaved
                    tps, tokens = run(engine, threads, prompts, out_len)
                    if ref is None:
                        ref = tokens
                    assert tokens == ref, f"{label}: greedy tokens differ from TP=1"
                    samples[label].append(tps)
            row = {"batch": batch, **{k: statistics.median(v) for k, v in samples.items()}}
            results.append(row)
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in row.items()
                                                 if k != "batch"))
        engines["TP=2, 1 thread/rank"][0].close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": name, "out_len": out_len, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
