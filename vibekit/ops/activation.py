"""SiLU-and-mul, the gated MLP activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vibekit.ops.registry import register, resolve


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """Reference implementation of SiLU-and-mul.

    x: [..., 2*I] = [gate | up] -> silu(gate) * up: [..., I].
    """
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """silu(gate) * up for x = [gate | up] along the last dim. Backends: ref, triton."""
    return resolve("silu_and_mul", backend, x.device)(x)


register("silu_and_mul", "ref", silu_and_mul_ref)
register("silu_and_mul", "triton", "vibekit.ops.triton.activation:silu_and_mul_triton")
