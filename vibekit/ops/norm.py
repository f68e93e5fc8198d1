"""RMSNorm."""

from __future__ import annotations

import torch


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
    """RMSNorm over the last dim. x: [..., D], weight: [D]. Backends: auto, ref."""
    if backend not in ("auto", "ref", "torch", "triton"):
        raise ValueError(f"unknown backend {backend!r} for rms_norm")
    return rms_norm_ref(x, weight, eps)
