"""RMSNorm."""

from __future__ import annotations

import torch

from vibekit.ops.registry import register, resolve


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference implementation of RMSNorm, computed in float32 like HF transformers.

    x: [..., D], weight: [D] -> [..., D] in x.dtype.
    """
    dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str = "auto"
) -> torch.Tensor:
    """RMSNorm over the last dim. x: [..., D], weight: [D]. Backends: ref, triton."""
    return resolve("rms_norm", backend, x.device)(x, weight, eps)


register("rms_norm", "ref", rms_norm_ref)
register("rms_norm", "triton", "vibekit.ops.triton.norm:rms_norm_triton")
