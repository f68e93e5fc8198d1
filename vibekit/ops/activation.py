"""SiLU-and-mul, the gated MLP activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vibekit.ops.cpu_extension import DECODE
from vibekit.ops.registry import register, resolve, set_auto_order


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """Reference implementation of SiLU-and-mul.

    x: [..., 2*I] = [gate | up] -> silu(gate) * up: [..., I].
    """
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul_cpu(x: torch.Tensor) -> torch.Tensor:
    """C++ SiLU-and-mul (vibekit/ops/csrc/decode_cpu.cpp): the math of `silu_and_mul_ref`
    (silu in float32, rounded to x's dtype before the product) with its own vectorized exp
    (Cephes' expf, ~1 ulp; the same bits scalar or vectorized), not torch's (they agree to
    float32 rounding). Other dtypes take the reference."""
    module = DECODE.get()
    if (module is None or x.dtype not in (torch.float32, torch.bfloat16)
            or x.device.type != "cpu" or x.dim() == 0 or x.shape[-1] % 2):
        return silu_and_mul_ref(x)
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return module.silu_and_mul(x2).view(*x.shape[:-1], x.shape[-1] // 2)


def silu_and_mul(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """silu(gate) * up for x = [gate | up] along the last dim. Backends: ref, cpu (C++; the CPU
    default where it builds), triton."""
    return resolve("silu_and_mul", backend, x.device)(x)



register("silu_and_mul", "ref", silu_and_mul_ref)
register("silu_and_mul", "cpu", silu_and_mul_cpu, available=DECODE.available)
set_auto_order("silu_and_mul", "cpu", ("cpu", "ref"))
register("silu_and_mul", "triton", "vibekit.ops.triton.activation:silu_and_mul_triton")
