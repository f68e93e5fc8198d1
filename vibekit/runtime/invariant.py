"""Batch-invariant mode (`batch_invariant=True`): the ops a step runs, each computing a row in
an order that does not depend on the rows sharing the call.

What each op of a llama-family forward runs under it, and why that row is invariant:
- linear layers, lm_head included: the packed CPU kernel (vibekit/ops/linear.py): one fp32
  accumulator per output element, k in order, whatever the number of rows or threads;
- attention: the paged CPU kernel (vibekit/ops/attention_cpu.py): one (token, head) row at
  a time over KV chunks at absolute positions, the same for decode, verify and prefill rows;
- RMSNorm, SiLU * up, RoPE, KV append: the C++ row kernels (vibekit/ops/csrc/decode_cpu.cpp;
  the norm sums each row in one fixed order), or torch's per-row reference where they cannot
  build; residual adds and the embedding gather: torch's elementwise ops;
- the whole forward in one C++ call (vibekit/ops/model_cpu.py) where it builds: the same
  functions in the same order, so the same bits;
- logits processors, greedy argmax, softmax / top-k / top-p sampling: per row in torch.
Both kernels build for AVX512 (BF16 / VNNI native or emulated) or for AVX2 + FMA + F16C; where
neither can build here (an older CPU, no compiler) the engine refuses to start with the reason,
rather than run a path whose rows could change with the batch. Hybrid (recurrent state) models
are refused too: their chunked scans are not covered.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from vibekit.config import EngineConfig


def invariant_config(config: EngineConfig, model: nn.Module) -> EngineConfig:
    """`config` with the invariant CPU kernels chosen (a no-op unless config.batch_invariant).

    Raises ValueError for a model the mode does not cover, RuntimeError (with the reason)
    where a kernel is unavailable on this machine."""
    if not config.batch_invariant:
        return config
    spec = model.cache_spec() if hasattr(model, "cache_spec") else None
    if spec is None or spec.state is not None or not hasattr(model, "packable_linears"):
        raise ValueError(f"batch_invariant=True covers attention-only llama-family models; "
                         f"{type(model).__name__} ({config.model.model_type}) is not one")
    from vibekit.models.linear import resolve_linear_backend
    from vibekit.ops.attention_cpu import attention_kernel_available, attention_kernel_reason

    try:
        resolve_linear_backend("cpu", config.device)
    except RuntimeError as exc:
        raise RuntimeError(f"batch_invariant=True needs the CPU linear kernel: {exc}") from None
    if not attention_kernel_available():
        raise RuntimeError("batch_invariant=True needs the CPU paged attention kernel, which "
                           f"is unavailable: {attention_kernel_reason()}")
    return dataclasses.replace(config, attention_backend="cpu", linear_backend="cpu")
