"""Paged attention alone on the CPU: the AVX512 kernel (backend "cpu", batch-invariant) vs the
torch SDPA path it replaced, on the SmolLM-135M attention shape (Hq 9, Hk 3, D 64, pages of 16).

    python benchmarks/bench_attention.py              # decode b1 / b16, prefill 128, verify 65
    python benchmarks/bench_attention.py --threads 2
    python benchmarks/bench_attention.py --quick      # tiny, seconds (CI)
    python benchmarks/bench_attention.py --decode-step --dtypes bfloat16   # a decode step's worth

--decode-step times the AVX512 kernel over one decode step's attention instead: --layers
layers, each with its own KV cache (so they do not all sit in cache, as in a real step),
--batch sequences at each KV length of --kv-lens, with the pages handed out in order
("contiguous", a fresh pool) and shuffled ("scattered", a pool that has served other requests).

Backends interleaved per repeat; each cell is the median of the per-repeat best call times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ops.paged_batch import make_paged_batch  # noqa: E402
from vibekit.ops import paged_attention  # noqa: E402
from vibekit.ops.attention_cpu import attention_kernel_available  # noqa: E402

# (name, sequences, q_len per sequence, kv_len per sequence)
SHAPES = [("decode b1", 1, 1, 256), ("decode b16", 16, 1, 256), ("prefill 128", 1, 128, 128),
          ("verify 65", 1, 65, 321)]


def best_call(fn, iters: int) -> float:
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples)


def decode_step(args) -> None:
    """ms per decode step: args.layers layers' attention, each on its own cache."""
    if not attention_kernel_available():
        raise SystemExit("the AVX512 attention kernel is unavailable here")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    page_size, hk, group, d = 16, 3, 3, 64
    print(f"Hq=9 Hk=3 D=64 page_size=16 threads={args.threads} layers={args.layers} "
          f"batch={args.batch} repeats={args.repeats}; shared machine")
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for kv_len in [int(n) for n in args.kv_lens.split(",")]:
            per_seq = -(-kv_len // page_size)
            num_pages = args.batch * per_seq + 1  # page 0: padding
            layouts = {"contiguous": torch.arange(1, num_pages, dtype=torch.int32),
                       "scattered": (torch.randperm(num_pages - 1, generator=gen) + 1).int()}
            caches = [(torch.randn(num_pages, page_size, hk, d, generator=gen).to(dtype),
                       torch.randn(num_pages, page_size, hk, d, generator=gen).to(dtype))
                      for _ in range(args.layers)]
            q = torch.randn(args.batch, hk * group, d, generator=gen).to(dtype)
            qo = torch.arange(args.batch + 1, dtype=torch.int32)
            lens = torch.full((args.batch,), kv_len, dtype=torch.int32)
            for layout, order in layouts.items():
                table = order.view(args.batch, per_seq).contiguous()

                def step(table=table):
                    for k, v in caches:
                        paged_attention(q, k, v, qo, table, lens, 0.125, max_q_len=1,
                                        max_kv_len=kv_len, backend="cpu")

                step()
                ms = statistics.median(best_call(step, args.iters) for _ in range(args.repeats))
                row = {"dtype": dtype_name, "kv_len": kv_len, "pages": layout,
                       "ms_per_step": round(ms * 1e3, 3)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--decode-step", action="store_true",
                    help="one decode step's attention over --layers caches (see above)")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--kv-lens", default="256,1024,4096")
    args = ap.parse_args()
    if args.decode_step:
        return decode_step(args)
    shapes = SHAPES
    if args.quick:
        shapes, args.repeats, args.iters = [("decode b2", 2, 1, 40), ("prefill 9", 1, 9, 20)], 2, 2
    torch.set_num_threads(args.threads)
    backends = ["torch"] + (["cpu"] if attention_kernel_available() else [])
    if "cpu" not in backends:
        print("the AVX512 attention kernel is unavailable here: timing the torch path only")
    print(f"Hq=9 Hk=3 D=64 page_size=16 threads={args.threads} repeats={args.repeats}; "
          "shared machine: compare within a row")
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for name, num_seqs, q_len, kv_len in shapes:
            b = make_paged_batch([q_len] * num_seqs, [kv_len - q_len] * num_seqs,
                                 num_kv_heads=3, group=3, head_dim=64, page_size=16,
                                 dtype=dtype, device="cpu")
            samples = {be: [] for be in backends}
            for r in range(args.repeats):
                for be in backends[r % len(backends):] + backends[:r % len(backends)]:
                    fn = lambda be=be, b=b, q_len=q_len, kv_len=kv_len: paged_attention(
                        *b.args(), 0.125, max_q_len=q_len, max_kv_len=kv_len, backend=be)
                    fn()
                    samples[be].append(best_call(fn, args.iters))
            row = {"dtype": dtype_name, "shape": name,
                   **{f"{be}_us": round(statistics.median(s) * 1e6, 1)
                      for be, s in samples.items()}}
            if "cpu" in samples:
                row["speedup"] = round(row["torch_us"] / row["cpu_us"], 2)
            rows.append(row)
            print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
