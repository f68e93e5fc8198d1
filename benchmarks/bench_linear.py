"""One decode step's linear layers: vibekit's prepacked AVX512 kernel vs the cheap alternatives
torch offers (eager F.linear, MKL packed sgemm, oneDNN linear on a prepacked weight), with the
read bandwidth measured in the same run.

Each matrix is its own tensor (30 layers' worth plus the head), so nothing stays in cache,
as in a real step. Prints ms per step, effective GB/s (weight bytes / time) and the fraction of
the measured read bandwidth. Median of --repeats passes, alternatives interleaved.

    python benchmarks/bench_linear.py                 # SmolLM-135M shape, M = 1 and 16
    python benchmarks/bench_linear.py --quick         # a few small matrices (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vibekit.ops.linear import cpu_kernel_available, linear_cpu, pack_linear
from vibekit.roofline import measure_read_bandwidth

# (out, in) of one SmolLM-135M layer's fused projections: qkv, o, gate_up, down; then the head.
SMOLLM = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]
QUICK = [(96, 64), (64, 64), (256, 64), (64, 128)] * 2 + [(512, 64)]


def candidates(ws: list[torch.Tensor], m: int, quant: str | None) -> dict:
    dtype = ws[0].dtype
    xs = {k: torch.randn(m, k).to(dtype) for k in {w.shape[1] for w in ws}}
    out = {}
    if cpu_kernel_available():
        ps = [pack_linear(w, quantization=quant, keep_weight=False) for w in ws]
        out["vibekit kernel" + (f" {quant}" if quant else "")] = (
            lambda: [linear_cpu(xs[p.in_features], p) for p in ps], sum(p.nbytes for p in ps))
    if quant:
        return out
    nbytes = sum(w.numel() * w.element_size() for w in ws)
    out["F.linear"] = (lambda: [F.linear(xs[w.shape[1]], w) for w in ws], nbytes)
    if dtype == torch.float32 and torch.backends.mkl.is_available():
        mk = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in ws]
        out["MKL packed"] = (lambda: [torch.ops.mkl._mkl_linear(xs[w.shape[1]], p, w, None, m)
                                      for p, w in zip(mk, ws)], nbytes)
    if torch.backends.mkldnn.is_available():
        try:
            dn = [torch.ops.mkldnn._reorder_linear_weight(w, m) for w in ws]
        except RuntimeError as exc:  # e.g. bf16 on a CPU without AVX512 / AVX-NE-CONVERT
            print(f"  (no oneDNN packed {dtype}: {str(exc).splitlines()[0]})")
        else:
            out["oneDNN packed"] = (lambda: [torch.ops.mkldnn._linear_pointwise(
                xs[w.shape[1]], p, None, "none", [], "") for p, w in zip(dn, ws)], nbytes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", default="1,16")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    shapes = QUICK if args.quick else SMOLLM
    repeats = 2 if args.quick else args.repeats
    bw = measure_read_bandwidth(1 << 26 if args.quick else 1 << 30)
    print(f"threads={args.threads} read bandwidth {bw / 1e9:.1f} GB/s; {len(shapes)} matrices "
          f"(shared machine)")
    results = []
    for dtype, quant in [(torch.float32, None), (torch.bfloat16, None), (torch.float32, "int8"),
                         (torch.bfloat16, "int8"), (torch.float32, "w8a8"),
                         (torch.bfloat16, "w8a8")]:
        ws = [(torch.randn(n, k) / k**0.5).to(dtype) for n, k in shapes]
        for m in [int(r) for r in args.rows.split(",")]:
            cands = candidates(ws, m, quant)
            times: dict[str, list[float]] = {name: [] for name in cands}
            for fn, _ in cands.values():
                fn()  # warm-up
            for _ in range(repeats):
                for name, (fn, _) in cands.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            for name, (_, nbytes) in cands.items():
                t = statistics.median(times[name])
                row = dict(dtype=str(dtype).removeprefix("torch."), rows=m, impl=name,
                           ms=t * 1e3, gb_s=nbytes / t / 1e9, roofline=nbytes / t / bw)
                results.append(row)
                print(f"{row['dtype']:9} M={m:2} {name:20} {row['ms']:8.2f} ms "
                      f"{row['gb_s']:6.1f} GB/s {row['roofline']:5.0%} of bandwidth", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
