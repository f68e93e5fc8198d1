"""Time paged attention: a helper script, not a test (pytest does not collect it).

    python -m tests.ops.time_paged_attention                  # CPU: torch path vs the reference
    python -m tests.ops.time_paged_attention --kv-len 1024 --dtype bfloat16   # GPU: + triton
    python -m tests.ops.time_paged_attention --batch 1 --q-len 2048 --kv-len 2048  # prefill

Fixed seed; prints the settings, each backend's best time per call and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import time

import torch

from vibekit.ops import paged_attention

from .paged_batch import make_paged_batch


def _time(fn, iters: int) -> float:
    """Fastest seconds per call after warm-up (the minimum resists a shared, noisy machine)."""
    cuda = torch.cuda.is_available()
    for _ in range(3):
        fn()
    samples = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--kv-len", type=int, default=512)
    parser.add_argument("--q-len", type=int, default=1, help="new tokens per sequence (1: decode)")
    parser.add_argument("--num-qo-heads", type=int, default=9)
    parser.add_argument("--num-kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    group = args.num_qo_heads // args.num_kv_heads
    batch = make_paged_batch([args.q_len] * args.batch, [args.kv_len - args.q_len] * args.batch,
                             num_kv_heads=args.num_kv_heads, group=group,
                             head_dim=args.head_dim, page_size=args.page_size, dtype=dtype)
    device = batch.q.device.type
    print(f"B={args.batch} q_len={args.q_len} kv_len={args.kv_len} Hq={args.num_qo_heads} "
          f"Hk={args.num_kv_heads} D={args.head_dim} page_size={args.page_size} {args.dtype} "
          f"on {device} ({torch.get_num_threads()} threads)")
    backends = ["ref", "torch"] + (["triton"] if device == "cuda" else [])
    times = {}
    for backend in backends:
        fn = lambda b=backend: paged_attention(*batch.args(), args.head_dim**-0.5,
                                               max_q_len=args.q_len,
                                               max_kv_len=args.kv_len, backend=b)
        times[backend] = _time(fn, args.iters if backend != "ref" else max(3, args.iters // 5))
    baseline = "ref" if device == "cpu" else "torch"
    kv_bytes = 2 * args.batch * args.kv_len * args.num_kv_heads * args.head_dim * dtype.itemsize
    for backend, t in times.items():
        print(f"{backend:>7}: {t * 1e3:8.3f} ms   {times[baseline] / t:6.2f}x vs {baseline}   "
              f"{kv_bytes / t / 1e9:7.1f} GB/s of K/V read")


if __name__ == "__main__":
    main()
