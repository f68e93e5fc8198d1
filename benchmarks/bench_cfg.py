"""CFG cache: images/s and latency of naive CFG vs batched CFG vs the CFG-cache variants, side by
side in one run, on the digits-flow zoo model (torch, and MLX when installed). Every variant's
images are checked against full CFG (PSNR >= 35 dB and SSIM >= 0.98, scikit-image), and the
compute ceiling (the variant's FLOPs at the matmul peak measured in the same run) is printed.

    python benchmarks/bench_cfg.py                    # 50 steps, 32 requests, batch 1 and 8
    python benchmarks/bench_cfg.py --quick            # seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import vibekit.zoo
from vibekit.cfg import CFGCachePolicy, FlowCFGSampler
from vibekit_agents.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "unified-image"


def _scenario_module(name: str):
    """Import one of the scenario's files (see Scenario.module)."""
    return load_scenario(SCENARIO).module(name)


check = _scenario_module("checker").check
make_requests = _scenario_module("workload").make_requests


def variants(num_steps: int) -> list[tuple[str, dict, CFGCachePolicy]]:
    """(name, sampler flags, policy). The cache knobs scale with the step count."""
    warm = max(1, num_steps // 10)
    k = max(2, num_steps // 12)
    every = CFGCachePolicy.every(max(2, num_steps // 6), warm, extrapolate=True)
    plain = CFGCachePolicy.every(k, warm)
    gate = CFGCachePolicy.gate(gate_step=max(1, num_steps * 4 // 5), after_gate="reuse")
    naive, batched = dict(batch_cfg=False, reuse_prompt_kv=False), dict(reuse_prompt_kv=False)
    kv = dict(reuse_prompt_kv=True)
    full = CFGCachePolicy.full()
    return [
        ("naive CFG (2 forwards/step)", naive, full),
        ("batched CFG", batched, full),
        ("batched CFG + prompt KV", kv, full),
        ("CFG cache", batched, every),
        ("CFG cache + prompt KV", kv, every),
        (f"every-{k} plain reuse + prompt KV", kv, plain),
        (f"FasterCache every-{k} + prompt KV", kv,
         CFGCachePolicy.fastercache(k, warm)),
        ("gate (reuse after) + prompt KV", kv, gate),
        ("Adaptive Guidance (drop after gate) + prompt KV", kv,
         CFGCachePolicy.gate(gate_step=max(1, num_steps * 9 // 10), after_gate="drop")),
    ]


def describe(policy: CFGCachePolicy) -> str:
    if policy.is_full:
        return "full"
    if policy.gate_step is not None:
        return f"gate_step={policy.gate_step},after={policy.after_gate}"
    extra = ",extrapolate" if policy.extrapolate else ""
    extra += f",alpha={policy.alpha_low}/{policy.alpha_high}" if policy.reweights else ""
    return f"interval={policy.interval},warmup={policy.warmup_steps}{extra}"


def forward_flops(config, num_rows: int, text_tokens: int) -> float:
    """FLOPs of a forward over `num_rows` images, each with `text_tokens` prompt tokens computed
    in the same sequence (0 when the prompt K/V are reused)."""
    h, inter, n, lp = config.hidden_size, config.intermediate_size, config.num_patches, \
        config.max_prompt_len
    per_token = 2 * (4 * h * h + 2 * h * inter)  # qkv, proj, fc1, fc2
    attn = 4 * h * (n * (lp + n) + text_tokens * lp)
    layers = config.num_layers * ((n + text_tokens) * per_token + attn)
    io = 4 * n * config.patch_dim * h + 2 * (256 * h + h * h + 6 * h * h)
    return num_rows * (layers + io)


def variant_flops(config, cond_rows: int, uncond_rows: int, flags: dict, num_requests: int,
                  num_batches: int) -> float:
    """FLOPs of a whole run: every forward row, plus with prompt K/V reuse the prompt encodes
    (at most one per request, and one of the empty negative prompt per batch)."""
    rows = cond_rows + uncond_rows
    if not flags.get("reuse_prompt_kv", True):
        return forward_flops(config, rows, config.max_prompt_len)
    h = config.hidden_size
    per_token = 2 * (4 * h * h + 2 * h * config.intermediate_size)
    encode = (num_requests + num_batches) * config.num_layers * config.max_prompt_len * per_token
    return forward_flops(config, rows, 0) + encode


def matmul_peak(size: int = 512, repeats: int = 5) -> float:
    """Best float32 matmul FLOP/s on this thread count (the kernel-perfect ceiling)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def generate(make_sampler, chunk: list[dict]):
    """One batch: (seconds, output)."""
    t0 = time.perf_counter()
    out = make_sampler().generate([r["prompt"] for r in chunk], [r["seed"] for r in chunk],
                                  [r["negative_prompt"] for r in chunk])
    return time.perf_counter() - t0, out


def bench_backend(backend: str, model, requests, args, peak: float | None) -> list[dict]:
    batch_sizes, repeats = args.batch_sizes, args.repeats
    if backend == "mlx":
        from vibekit.cfg.mlx import MLXFlowCFGSampler as Sampler

        # NOTE: mlx[cpu] on Linux links the reference BLAS (a few GFLOP/s): fewer images.
        requests = requests[:args.mlx_num_requests]
        batch_sizes, repeats = [min(max(batch_sizes), len(requests))], 1
    else:
        Sampler = FlowCFGSampler
    rows = []
    for batch in batch_sizes:
        table = variants(args.steps)
        samplers = [(lambda f=flags, p=pol: Sampler(model, args.steps, args.guidance_scale, p,
                                                    **f)) for _, flags, pol in table]
        chunks = [requests[i:i + batch] for i in range(0, len(requests), batch)]
        generate(samplers[0], chunks[0])  # warm up
        # NOTE: the machine is shared: every batch runs under every variant back to back
        # (round-robin), and each batch keeps its best time over the repeats.
        best = [[float("inf")] * len(chunks) for _ in table]
        outs = [[None] * len(chunks) for _ in table]
        for _ in range(repeats):
            for c, chunk in enumerate(chunks):
                for j, make in enumerate(samplers):
                    seconds, outs[j][c] = generate(make, chunk)
                    best[j][c] = min(best[j][c], seconds)
        images = [[np.asarray(im) for out in per for im in out.images] for per in outs]
        base, batched = sum(best[0]), sum(best[1])
        for (name, flags, pol), times, imgs, per in zip(table, best, images, outs):
            seconds = sum(times)
            verdict = check(imgs, images[0], args.min_psnr, args.min_ssim)
            cond = sum(o.num_cond_rows for o in per)
            uncond = sum(o.num_uncond_rows for o in per)
            row = dict(backend=backend, batch=batch, variant=name, policy=describe(pol),
                       images_per_s=round(len(requests) / seconds, 2),
                       latency_ms=round(1000 * seconds / len(chunks), 1),
                       speedup_vs_naive=round(base / seconds, 2),
                       speedup_vs_batched=round(batched / seconds, 2),
                       uncond_fraction=round(uncond / cond, 2),
                       min_psnr_db=round(verdict["min_psnr_db"], 1),
                       min_ssim=round(verdict["min_ssim"], 4), passed=verdict["passed"])
            if peak is not None:
                flops = variant_flops(model.config, cond, uncond, flags, len(requests),
                                      len(chunks))
                ceiling = peak / flops * len(requests)  # images/s at the matmul peak
                row["ceiling_images_per_s"] = round(ceiling, 1)
                row["fraction_of_ceiling"] = round(row["images_per_s"] / ceiling, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few requests and steps (CI)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance-scale", type=float, default=4.0)
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default="torch,mlx")
    ap.add_argument("--mlx-num-requests", type=int, default=8,
                    help="MLX runs these many of the requests, at the largest batch, once")
    ap.add_argument("--min-psnr", type=float, default=35.0)
    ap.add_argument("--min-ssim", type=float, default=0.98)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.num_requests, args.batch_sizes, args.repeats = 10, 4, "4", 1
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    requests = make_requests(args.seed, args.num_requests, num_steps=args.steps,
                             guidance_scale=args.guidance_scale)
    peak = matmul_peak(256 if args.quick else 512)
    print(f"model=digits-flow steps={args.steps} guidance_scale={args.guidance_scale} "
          f"requests={args.num_requests} batch_sizes={args.batch_sizes} repeats={args.repeats} "
          f"threads={torch.get_num_threads()} seed={args.seed} "
          f"mlx_requests={args.mlx_num_requests} "
          f"checker: psnr>={args.min_psnr} ssim>={args.min_ssim} vs naive full CFG")
    print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    rows = []
    for backend in args.backends.split(","):
        if backend == "mlx":
            try:
                import mlx.core  # noqa: F401
            except ImportError:
                print("mlx not installed; skipping the MLX rows")
                continue
        model = vibekit.zoo.load("digits-flow", backend=backend)
        rows += bench_backend(backend, model, requests, args, peak if backend == "torch" else None)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(peak_gflops=peak / 1e9, rows=rows), indent=2))


if __name__ == "__main__":
    main()
