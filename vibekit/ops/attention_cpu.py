"""The "cpu" backend of `paged_attention`: an AVX512 (or AVX2) C++ kernel
(ops/csrc/attention_cpu.cpp) that reads K/V straight from the pages, for decode, verify blocks
and ragged prefill alike.

NOTE (batch invariance): each (query token, qo head) row is computed alone, over KV chunks of
`KV_CHUNK` positions at absolute multiples of it, merged by the online softmax in order, so a
row is bit-identical whatever else shares the call (other sequences, more query rows of its own
sequence), the page size, the thread count, or how its prompt was split into prefill chunks.
"""

from __future__ import annotations

import torch

from vibekit.ops.cpu_extension import CpuExtension

# KV positions per online-softmax chunk; must match kChunk in csrc/attention_cpu.cpp.
KV_CHUNK = 32
MAX_HEAD_DIM = 256

_KERNEL = CpuExtension("attention_cpu.cpp", "paged attention kernel")


def attention_kernel_available() -> bool:
    """Whether `paged_attention_cpu` can run here (builds the extension on the first call)."""
    return _KERNEL.get() is not None


def attention_kernel_reason() -> str:
    """Why the kernel is unavailable ("" when it is)."""
    _KERNEL.get()
    return _KERNEL.reason


def paged_attention_cpu(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    qo_indptr: torch.Tensor, page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
    max_q_len: int | None = None, max_kv_len: int | None = None,
) -> torch.Tensor:
    """Paged causal attention (the contract of `paged_attention_ref`) on the CPU kernel.

    q [T, Hq, D] float32/bfloat16/float16 (token and head strides free), k_cache / v_cache
    [num_pages, page_size, Hk, D] float32/bfloat16 (float16 with a float16 q), qo_indptr [B+1],
    page_table [B, P],
    kv_lens [B] (int32). Returns [T, Hq, D] in q's dtype. max_q_len / max_kv_len are unused
    (the kernel reads the lengths itself). Raises RuntimeError where the kernel is unavailable.
    """
    module = _KERNEL.get()
    if module is None:
        raise RuntimeError(f"paged_attention backend 'cpu' is unavailable: {_KERNEL.reason}")
    if q.device.type != "cpu" or k_cache.device.type != "cpu":
        raise ValueError(f"paged_attention backend 'cpu' needs CPU tensors, got q on {q.device}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"paged_attention backend 'cpu' takes float32, bfloat16 or "
                             f"float16; {name} is {t.dtype}")
    if (q.dtype == torch.float16) != (k_cache.dtype == torch.float16):
        raise ValueError(f"paged_attention backend 'cpu': float16 q needs a float16 KV cache "
                         f"(and the reverse); got q {q.dtype}, KV {k_cache.dtype}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    return module.paged_attention(q, k_cache, v_cache, _i32(qo_indptr), _i32(page_table),
                                  _i32(kv_lens), float(scale))


def _i32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.int32 and t.is_contiguous() else t.to(torch.int32).contiguous()
