"""RMSNorm."""

from __future__ import annotations

import torch

from vibekit.ops.cpu_extension import DECODE
from vibekit.ops.registry import register, resolve, set_auto_order


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference implementation of RMSNorm, computed in float32 like HF transformers.

    x: [..., D], weight: [D] -> [..., D] in x.dtype.
    """
    dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """C++ RMSNorm (vibekit/ops/csrc/decode_cpu.cpp): the math of `rms_norm_ref` (float32
    inside, the normalized row cast to x's dtype before the scale) with one fixed summation order
    per row, so a row's bits never depend on the other rows. Not torch's bits: the reference
    sums in another order (they agree to float32 rounding). Other dtypes, or a weight of another
    dtype than x (the reference then promotes), take the reference."""
    module = DECODE.get()
    if (module is None or x.dtype not in (torch.float32, torch.bfloat16)
            or weight.dtype != x.dtype or x.device.type != "cpu" or x.dim() == 0):
        return rms_norm_ref(x, weight, eps)
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return module.rms_norm(x2, weight.contiguous(), float(eps)).view(x.shape)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str = "auto"
) -> torch.Tensor:
    """RMSNorm over the last dim. x: [..., D], weight: [D]. Backends: ref, cpu (C++; the CPU
    default where it builds), triton."""
    return resolve("rms_norm", backend, x.device)(x, weight, eps)



register("rms_norm", "ref", rms_norm_ref)
register("rms_norm", "cpu", rms_norm_cpu, available=DECODE.available)
set_auto_order("rms_norm", "cpu", ("cpu", "ref"))
register("rms_norm", "triton", "vibekit.ops.triton.norm:rms_norm_triton")
