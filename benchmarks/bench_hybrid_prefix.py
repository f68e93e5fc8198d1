"""Hybrid prefix cache: many requests sharing one long prefix on a hybrid (Mamba2 / gated-delta)
model. vibekit with the hybrid prefix cache vs vibekit without it vs HF transformers generate.

    python benchmarks/bench_hybrid_prefix.py            # 32 x (4096 shared + 128 unique) -> 64
    python benchmarks/bench_hybrid_prefix.py --quick    # CI smoke run, seconds
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from vibekit import Engine, SamplingParams
from vibekit.models.hybrid_dummy import hybrid_dummy_hf_model


def make_prompts(n: int, prefix_len: int, tail_len: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(256) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(256) for _ in range(tail_len)] for _ in range(n)]


def run_vibekit(model: str, prompts, params, **options):
    engine = Engine.from_pretrained(f"dummy:{model}", **options)
    start = time.perf_counter()
    ids = [engine.add_request(p, params) for p in prompts]
    ttft: dict[str, float] = {}
    final = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            ttft.setdefault(out.request_id, time.perf_counter() - start)
            if out.finished:
                final[out.request_id] = out.token_ids
    wall = time.perf_counter() - start
    return [final[i] for i in ids], wall, sorted(ttft.values()), engine.stats()


def run_hf(model: str, prompts, max_tokens: int, seed: int):
    hf = hybrid_dummy_hf_model(model, seed)
    # NOTE: vibekit runs with ignore_eos; min_new_tokens would instead mask EOS out of the argmax.
    hf.generation_config.eos_token_id = None
    outs = []
    start = time.perf_counter()
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                              max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
            outs.append(out[0, len(p):].tolist())
    return outs, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny-bamba", help="tiny-bamba or tiny-qwen3.5")
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--prefix-len", type=int, default=4096)
    ap.add_argument("--tail-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    args = ap.parse_args()
    if args.quick:
        args.num_requests, args.prefix_len, args.tail_len, args.max_tokens = 4, 128, 16, 4
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    prompts = make_prompts(args.num_requests, args.prefix_len, args.tail_len, args.seed)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    max_len = args.prefix_len + args.tail_len + args.max_tokens + 16
    print(f"settings: model=dummy:{args.model} requests={args.num_requests} "
          f"prefix={args.prefix_len} tail={args.tail_len} output={args.max_tokens} "
          f"threads={args.threads} seed={args.seed} device=cpu dtype=float32")
    common = dict(max_model_len=max_len, max_num_seqs=args.num_requests, seed=args.seed,
                  page_size=16)
    cached, t_cache, ttft_cache, stats = run_vibekit(args.model, prompts, params, **common)
    plain, t_plain, ttft_plain, _ = run_vibekit(args.model, prompts, params,
                                                enable_prefix_caching=False, **common)
    n_out = args.num_requests * args.max_tokens
    print(f"vibekit + hybrid prefix cache : {t_cache:8.2f} s  {n_out / t_cache:8.1f} out tok/s  "
          f"TTFT p50 {ttft_cache[len(ttft_cache) // 2]:.2f} s max {ttft_cache[-1]:.2f} s")
    print(f"vibekit, no prefix cache      : {t_plain:8.2f} s  {n_out / t_plain:8.1f} out tok/s  "
          f"TTFT p50 {ttft_plain[len(ttft_plain) // 2]:.2f} s max {ttft_plain[-1]:.2f} s")
    print(f"speedup from the cache: {t_plain / t_cache:.2f}x")
    total_prompt = sum(len(p) for p in prompts)
    hit = stats["hybrid_prefix_hit_tokens"]
    print(f"hit rate {stats['hybrid_prefix_hit_rate']:.3f} ({hit} of {total_prompt} prompt "
          f"tokens reused); snapshots {stats['num_snapshots']} x {stats['state_slot_bytes']} B "
          f"= {stats['snapshot_bytes'] / 2**20:.2f} MiB")
    print(f"limit: prompt tokens computed {total_prompt} -> {total_prompt - hit} "
          f"({total_prompt / max(total_prompt - hit, 1):.1f}x fewer)")
    assert cached == plain, "cached and uncached runs differ"
    distinct = sum(len(set(o)) / max(1, len(o)) for o in cached) / len(cached)
    print(f"outputs identical with and without the cache; distinct-token ratio per request "
          f"{distinct:.2f}")
    if not args.skip_hf:
        ref, t_hf = run_hf(args.model, prompts, args.max_tokens, args.seed)
        print(f"HF transformers generate      : {t_hf:8.2f} s  {n_out / t_hf:8.1f} out tok/s "
              f"(one prompt at a time)")
        print(f"speedup vs HF generate: {t_hf / t_cache:.2f}x; greedy ids equal HF: "
              f"{ref == cached}")


if __name__ == "__main__":
    main()
