"""Triton RMSNorm: one program per row, float32 statistics like the reference."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, stride_x, stride_out, dim, eps,
                     BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < dim
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    xf = x.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / dim + eps)
    # Like the reference (and HF): normalize in float32, round to x's dtype, then scale.
    y = (xf * inv).to(x.dtype)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + row * stride_out + offs, (w.to(tl.float32) * y.to(tl.float32)).to(
        out_ptr.dtype.element_ty), mask=mask)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Triton version of `rms_norm_ref`: x [..., D], weight [D] -> [..., D]."""
    dim = x.shape[-1]
    assert weight.shape == (dim,), f"weight {tuple(weight.shape)} != ({dim},)"
    assert weight.is_contiguous(), "weight must be contiguous"
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    x2 = x.reshape(-1, dim)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](x2, weight, out, x2.stride(0), out.stride(0), dim,
                                         float(eps), BLOCK_D=triton.next_power_of_2(dim))
    return out.view(x.shape)
