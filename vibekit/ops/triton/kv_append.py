"""Triton KV append: scatter each new token's K/V rows into its page slot."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_append_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cp, stride_cs, stride_ch,
    num_kv_heads, head_dim,
    PAGE_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per new token: a plain copy (k, v and the caches share one dtype); the last
    # dim of every tensor is contiguous.
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot < 0:  # padding: nothing is read or written
        return
    page = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h[:, None] < num_kv_heads) & (offs_d[None, :] < head_dim)
    k = tl.load(k_ptr + token * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :],
                mask=mask)
    v = tl.load(v_ptr + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :],
                mask=mask)
    dst = page * stride_cp + offset * stride_cs + offs_h[:, None] * stride_ch + offs_d[None, :]
    tl.store(k_cache_ptr + dst, k, mask=mask)
    tl.store(v_cache_ptr + dst, v, mask=mask)


def kv_append_triton(
    k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
) -> None:
    """Triton version of `kv_append_ref`: k, v [T, Hk, D] -> cache slots; negative slots skipped."""
    num_tokens, num_kv_heads, head_dim = k.shape
    assert v.shape == k.shape, f"v {tuple(v.shape)} != k {tuple(k.shape)}"
    assert k_cache.shape == v_cache.shape, "k_cache and v_cache must have the same shape"
    assert k_cache.shape[2:] == (num_kv_heads, head_dim), (
        f"cache {tuple(k_cache.shape)} does not hold [*, *, {num_kv_heads}, {head_dim}]"
    )
    assert k_cache.stride() == v_cache.stride(), "k_cache and v_cache must share strides"
    assert slot_mapping.shape == (num_tokens,), f"slot_mapping {tuple(slot_mapping.shape)}"
    assert slot_mapping.dtype in (torch.int32, torch.int64), "slot_mapping must be int32/int64"
    assert slot_mapping.is_contiguous(), "slot_mapping must be contiguous"
    assert k.stride(2) == 1 and v.stride(2) == 1 and k_cache.stride(3) == 1, (
        "the head_dim of k, v and the caches must be contiguous"
    )
    if num_tokens == 0:
        return
    if k.dtype != k_cache.dtype:
        # Cast in torch: round-to-nearest-even like the reference (the interpreter truncates).
        k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)
    _kv_append_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        num_kv_heads, head_dim,
        PAGE_SIZE=k_cache.shape[1],
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
    )
