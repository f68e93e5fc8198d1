"""Where one decode step's time goes: linear layers (GEMV) vs attention vs the model's other ops
vs everything outside the model forward (scheduling, batch metadata, sampling, detokenizing).

Wraps the model's layers with wall-clock timers (a few hundred ns each), runs one request
through `Engine.step()` and reports per-step medians over its decode steps, for each linear
backend, and for the one-call C++ forward of the llama family ("fused", what the engine runs by
default on AVX512 CPUs; it times its own ops in C++, in the same buckets; its "other model ops"
are the embedding, the residual adds and the logits' cast). The machine is shared: read the
shares, not the absolute times.

    python benchmarks/profile_decode.py                               # SmolLM-135M shape
    python benchmarks/profile_decode.py --model zoo:code-edit-tiny
    python benchmarks/profile_decode.py --quick                       # tiny model (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

import vibekit.models.layers as layers_mod
from vibekit import Engine, SamplingParams
from vibekit.models.layers import RMSNorm
from vibekit.models.linear import PackedLinearLayer

# (owner, attribute, bucket): callables on the decode path, timed where the model calls them.
# NOTE: on the torch path a tied head is a bare F.linear in the model's forward: it lands in
# "other model ops" there (with the packed backend it is a PackedLinearLayer, in "linear").
_TIMED = [
    (PackedLinearLayer, "forward", "linear"),
    (torch.nn.Linear, "forward", "linear"),
    (layers_mod, "paged_attention", "attention"),
    (layers_mod, "kv_append", "attention"),
    (RMSNorm, "forward", "norm"),
    (layers_mod, "apply_rope", "rope+act"),
    (layers_mod, "silu_and_mul", "rope+act"),
]


@contextmanager
def timers(acc: dict[str, float]):
    saved = []

    def wrap(fn, bucket):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[bucket] += time.perf_counter() - t0
        return timed

    for owner, name, bucket in _TIMED:
        fn = getattr(owner, name)
        saved.append((owner, name, fn))
        setattr(owner, name, wrap(fn, bucket))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def profile(model: str, dtype: str, backend: str, threads: int, steps: int,
            batch: int = 1) -> dict:
    engine = Engine.from_pretrained(model, dtype=dtype, num_threads=threads, max_model_len=1024,
                                    linear_backend="auto" if backend == "fused" else backend)
    if hasattr(engine.model, "use_fused_cpu"):  # "fused": the one-call C++ forward, as served
        engine.model.use_fused_cpu = backend == "fused"
    prompt = list(range(1, 33))
    params = SamplingParams(max_tokens=steps + 1, temperature=0.0, ignore_eos=True)
    engine.generate([prompt], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    forward = engine.runner.model.forward
    per_step: list[dict[str, float]] = []
    acc: dict[str, float] = defaultdict(float)

    def timed_forward(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            acc["forward"] += time.perf_counter() - t0

    # the one-call forward times its own ops (in C++: Python timers cannot see inside it)
    fused = engine.model._fused_forward() if backend == "fused" else None
    if fused is not None:
        fused.impl.set_profile(True)
    engine.runner.model.forward = timed_forward
    try:
        with timers(acc):
            for i in range(batch):  # mixed prompt lengths, all decoding together
                engine.add_request(list(range(1, 17 + 8 * i)), params)
            while any(r.num_computed_tokens < len(r.prompt_token_ids)
                      for r in engine.requests.values()):
                engine.step()  # prefill (chunks)
            while engine.has_unfinished_requests():
                acc.clear()
                t0 = time.perf_counter()
                if fused is not None:
                    fused.impl.take_profile()
                engine.step()
                step = {**acc, "step": time.perf_counter() - t0}
                if fused is not None:
                    ops = fused.impl.take_profile()
                    step["linear"] = ops["linear"] + ops["head"]
                    step["attention"] = ops["attention"]  # with the KV append, as per-op
                    step["norm"] = ops["norm"]
                    step["rope+act"] = ops["rope"] + ops["activation"]
                per_step.append(step)
    finally:
        del engine.runner.model.forward
        if fused is not None:
            fused.impl.set_profile(False)
    med = {k: statistics.median(s.get(k, 0.0) for s in per_step) * 1e3
           for k in ("step", "forward", "linear", "attention", "norm", "rope+act")}
    med["other model ops"] = med["forward"] - sum(med[k] for k in ("linear", "attention", "norm",
                                                                   "rope+act"))
    med["outside forward"] = med["step"] - med["forward"]
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="dummy:smollm-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--backends", default="fused,auto,torch",
                    help="fused (the one-call C++ forward, timed inside), "
                         "auto / torch / cpu (linear backend of the per-op forward)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1, help="requests decoding together")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.model, args.steps = "dummy:tiny-llama", 8
    print(f"model={args.model} dtype={args.dtype} threads={args.threads}; median ms per decode "
          f"step over {args.steps} steps, batch {args.batch} (shared machine)")
    keys = ["step", "linear", "attention", "norm", "rope+act", "other model ops",
            "outside forward"]
    print(f"{'linear backend':16}" + "".join(f"{k:>17}" for k in keys))
    out = {}
    for backend in args.backends.split(","):
        med = profile(args.model, args.dtype, backend, args.threads, args.steps, args.batch)
        out[backend] = med
        cells = [f"{med['step']:.2f}"] + [f"{med[k]:.2f} ({med[k] / med['step']:.0%})"
                                          for k in keys[1:]]
        print(f"{backend:16}" + "".join(f"{c:>17}" for c in cells), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
