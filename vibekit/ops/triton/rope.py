"""Triton RoPE (rotate-half layout): one program per token, all heads of q and k."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_kernel(x_ptr, out_ptr, pos_ptr, cos_ptr, sin_ptr, stride_xt, stride_xh,
                 stride_ot, stride_oh, stride_c, num_heads,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask = (offs_h[:, None] < num_heads) & (offs_d[None, :] < HALF)
    base = x_ptr + token * stride_xt + offs_h[:, None] * stride_xh + offs_d[None, :]
    x1 = tl.load(base, mask=mask, other=0.0)
    x2 = tl.load(base + HALF, mask=mask, other=0.0)
    dmask = offs_d < HALF
    # The reference casts the float32 tables to x's dtype and computes in it.
    cos1 = tl.load(cos_ptr + pos * stride_c + offs_d, mask=dmask, other=0.0).to(x1.dtype)
    cos2 = tl.load(cos_ptr + pos * stride_c + HALF + offs_d, mask=dmask, other=0.0).to(x1.dtype)
    sin1 = tl.load(sin_ptr + pos * stride_c + offs_d, mask=dmask, other=0.0).to(x1.dtype)
    sin2 = tl.load(sin_ptr + pos * stride_c + HALF + offs_d, mask=dmask, other=0.0).to(x1.dtype)
    out1 = x1 * cos1[None, :] - x2 * sin1[None, :]
    out2 = x2 * cos2[None, :] + x1 * sin2[None, :]
    obase = out_ptr + token * stride_ot + offs_h[:, None] * stride_oh + offs_d[None, :]
    tl.store(obase, out1, mask=mask)
    tl.store(obase + HALF, out2, mask=mask)


def _rope_one(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
              sin: torch.Tensor) -> torch.Tensor:
    num_tokens, num_heads, head_dim = x.shape
    assert head_dim % 2 == 0, f"head_dim {head_dim} must be even"
    assert x.stride(2) == 1, "head_dim must be contiguous"
    out = torch.empty_like(x)
    if num_tokens:
        _rope_kernel[(num_tokens,)](
            x, out, positions, cos, sin, x.stride(0), x.stride(1), out.stride(0),
            out.stride(1), cos.stride(0), num_heads, HALF=head_dim // 2,
            BLOCK_H=triton.next_power_of_2(num_heads),
            BLOCK_HALF=triton.next_power_of_2(head_dim // 2))
    return out


def apply_rope_triton(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
                      cos_cache: torch.Tensor, sin_cache: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `apply_rope_ref`: q [T, Hq, D], k [T, Hk, D] at positions [T]."""
    assert cos_cache.shape == sin_cache.shape and cos_cache.shape[1] == q.shape[2], (
        f"tables {tuple(cos_cache.shape)} do not match head_dim {q.shape[2]}")
    assert cos_cache.stride(1) == 1 and sin_cache.stride() == cos_cache.stride(), \
        "cos/sin tables must be row-major with equal strides"
    positions = positions.contiguous()
    return (_rope_one(q, positions, cos_cache, sin_cache),
            _rope_one(k, positions, cos_cache, sin_cache))
