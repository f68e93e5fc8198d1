"""Write new K/V into the paged cache."""

from __future__ import annotations

import torch

from vibekit.ops.cpu_extension import DECODE
from vibekit.ops.registry import register, resolve, set_auto_order


def kv_append_ref(
    k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
) -> None:
    """Reference implementation of KV append: scatter new tokens' K/V into their page slots.

    k, v: [T, Hk, D]; k_cache, v_cache: [num_pages, page_size, Hk, D];
    slot_mapping: [T] int64, flat slot page_id * page_size + offset. Negative slots are skipped
    (padding). Writes in place.
    """
    num_pages, page_size, hk, d = k_cache.shape
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(num_pages * page_size, hk, d)[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(num_pages * page_size, hk, d)[slots] = v[keep].to(v_cache.dtype)


def kv_append_cpu(
    k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
) -> None:
    """C++ scatter (vibekit/ops/csrc/decode_cpu.cpp): one memcpy per token and cache, no mask,
    no temporaries; other layouts or a cache dtype that differs from k's take the reference."""
    module = DECODE.get()
    if (module is None or k.dtype != k_cache.dtype or v.dtype != v_cache.dtype
            or k.dim() != 3 or k.stride(-1) != 1 or k.stride(1) != k.shape[2]
            or v.stride(-1) != 1 or v.stride(1) != v.shape[2]
            or not (k_cache.is_contiguous() and v_cache.is_contiguous())):
        kv_append_ref(k, v, k_cache, v_cache, slot_mapping)
        return
    sm = slot_mapping if slot_mapping.dtype == torch.int64 else slot_mapping.long()
    module.kv_append(k, v, k_cache, v_cache, sm.contiguous())



def kv_append(
    k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    backend: str = "auto",
) -> None:
    """Scatter k, v [T, Hk, D] into k_cache, v_cache [num_pages, page_size, Hk, D] at
    slot_mapping [T].

    Backends: "ref" (one index_put), "cpu" (C++ copies), "triton".
    """
    resolve("kv_append", backend, k.device)(k, v, k_cache, v_cache, slot_mapping)


register("kv_append", "ref", kv_append_ref)
register("kv_append", "cpu", kv_append_cpu, available=DECODE.available)
set_auto_order("kv_append", "cpu", ("cpu", "ref"))
register("kv_append", "triton", "vibekit.ops.triton.kv_append:kv_append_triton")
