"""SiLU-and-mul, the gated MLP activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """Reference implementation of SiLU-and-mul.

    x: [..., 2*I] = [gate | up] -> silu(gate) * up: [..., I].
    """
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """silu(gate) * up for x = [gate | up] along the last dim. Backends: auto, ref."""
    if backend not in ("auto", "ref", "torch", "triton"):
        raise ValueError(f"unknown backend {backend!r} for silu_and_mul")
    return silu_and_mul_ref(x)
