"""What bounds a step: weight reads against the measured bandwidth roofline, compute against
measured matmul throughput, or Python / framework overhead (from a torch.profiler trace).

Measured in the evaluator's process, on the candidate's stack, right after its benchmark:

  bandwidth       best of a few full reads of a 256 MiB buffer (bytes / s; larger than the
                  caches, so it is DRAM bandwidth)
  matmul          best of a few 384^3 float32 matmuls (flop / s)
  decode step     per-step time of plain decoding (no prediction), 24 steps
  verify step     per-step time when the request's own plain output is the prediction, so
                  every step verifies a full block: the price of a k-token step
  overhead        1 - (time inside aten ops / wall time) over 8 decode steps

bound: python-overhead (most of the step outside aten ops), memory-bandwidth (the step is
within 2x of the weight-read roofline), compute (flops at the measured matmul rate fill half
the step), else op-overhead: the time is inside aten ops yet far above both rooflines, i.e. many
small kernels each paying dispatch and launch costs (fewer, larger steps and fusion help).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any


def _matmul_flops(n: int = 384) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _step_times(engine: Any, prompt: Any, n: int, prediction: Any = None) -> tuple:
    """(per-step seconds, tokens per step) of one request run alone."""
    from vibekit import SamplingParams

    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
    kwargs = {} if prediction is None else {"prediction": prediction}
    rid = engine.add_request(prompt, params, **kwargs)
    times, tokens, ids = [], [], []
    prefill_done = False
    while engine.has_unfinished_requests():
        t0 = time.perf_counter()
        outs = engine.step()
        dt = time.perf_counter() - t0
        for out in outs:
            if out.request_id == rid:
                if prefill_done:
                    times.append(dt)
                    tokens.append(len(out.delta_token_ids))
                prefill_done = True
                ids = list(out.token_ids)
    return times, tokens, ids


def profile_stack(stack: Any, request: dict) -> dict[str, Any]:
    import torch

    stack.activate()
    engine = stack.engine
    prompt, _, _ = stack.engine_args(request)
    params = list(engine.model.parameters()) if hasattr(engine.model, "parameters") else []
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    num_params = sum(p.numel() for p in params)
    from vibekit.roofline import measure_read_bandwidth

    bw = measure_read_bandwidth(256 << 20, repeats=4)
    flops = _matmul_flops()
    dec_times, _, plain_ids = _step_times(engine, prompt, 32)
    decode_s = statistics.median(dec_times) if dec_times else 0.0
    ver_times, ver_tokens, _ = _step_times(engine, prompt, 32, prediction=plain_ids)
    verify_s = statistics.median(ver_times) if ver_times else 0.0
    tokens_per_verify = statistics.median(ver_tokens) if ver_tokens else 1.0
    overhead = _overhead_share(engine, prompt)
    roofline_s = weight_bytes / bw if bw else 0.0
    compute_s = 2 * num_params / flops if flops else 0.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    prof = {
        "weight_bytes": weight_bytes, "num_params": num_params,
        "bandwidth_gb_s": bw / 1e9, "matmul_gflop_s": flops / 1e9,
        "decode_step_ms": decode_s * 1e3, "roofline_step_ms": roofline_s * 1e3,
        "compute_step_ms": compute_s * 1e3,
        "roofline_fraction": roofline_s / decode_s if decode_s else 0.0,
        "verify_step_ms": verify_s * 1e3, "tokens_per_verify_step": tokens_per_verify,
        "verify_cost_ratio": verify_s / decode_s if decode_s else 0.0,
        "python_overhead_share": overhead, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 1, "load_average": load,
    }
    prof["bound"] = classify(prof)
    return prof


def _overhead_share(engine: Any, prompt: Any) -> float:
    """1 - (self time of aten ops / wall) over a few decode steps, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    from vibekit import SamplingParams

    params = SamplingParams(max_tokens=9, temperature=0.0, ignore_eos=True)
    engine.add_request(prompt, params)
    engine.step()  # prefill outside the trace
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        while engine.has_unfinished_requests():
            engine.step()
        wall = time.perf_counter() - t0
    op_us = sum(e.self_cpu_time_total for e in prof.key_averages()
                if e.key.startswith("aten::"))
    return max(0.0, min(1.0, 1.0 - op_us / 1e6 / wall)) if wall else 0.0


def classify(p: dict[str, Any]) -> str:
    """The bound of a decode step, in one word."""
    if p["python_overhead_share"] >= 0.5:
        return "python-overhead"
    if p["roofline_fraction"] >= 0.5:
        return "memory-bandwidth"
    if p["decode_step_ms"] and p["compute_step_ms"] / p["decode_step_ms"] >= 0.5:
        return "compute"
    return "op-overhead"
