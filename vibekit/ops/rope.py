"""Rotary position embedding (rotate-half / NeoX layout, as HF llama), with llama3 and linear
scaling."""

from __future__ import annotations

import math
from typing import Any

import torch

from vibekit.ops.cpu_extension import DECODE
from vibekit.ops.registry import register, resolve, set_auto_order


def rope_inv_freq(
    head_dim: int, theta: float, scaling: dict[str, Any] | None = None
) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2] float32, with HF's llama3 or linear scaling applied."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if not scaling:
        return inv_freq
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if rope_type == "linear":
        return inv_freq / factor
    if rope_type == "llama3":
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling.get("original_max_position_embeddings", 8192))
        low_freq_wavelen = old_len / low
        high_freq_wavelen = old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, scaled)
    raise ValueError(
        f"rope_type {rope_type!r} is not supported; supported: default, linear, llama3"
    )


def rope_cos_sin_cache(
    inv_freq: torch.Tensor, max_positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [max_positions, head_dim] float32 (each frequency repeated twice)."""
    t = torch.arange(max_positions, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq.float())  # [N, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [N, D]
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope_ref(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
    cos_cache: torch.Tensor, sin_cache: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation of RoPE (rotate-half layout, computed like HF transformers).

    q: [T, Hq, D], k: [T, Hk, D], positions: [T] int64, cos_cache / sin_cache: [N, D] float32.
    Returns rotated (q, k) in their input dtype.
    """
    cos = cos_cache[positions].to(q.dtype).unsqueeze(1)  # [T, 1, D]
    sin = sin_cache[positions].to(q.dtype).unsqueeze(1)
    q_out = q * cos + _rotate_half(q) * sin
    k_out = k * cos + _rotate_half(k) * sin
    return q_out, k_out


def apply_rope_cpu(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
    cos_cache: torch.Tensor, sin_cache: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """C++ RoPE (vibekit/ops/csrc/decode_cpu.cpp): the same bits as `apply_rope_ref` in one call
    (q, k may be strided views, e.g. of a fused qkv output). Other layouts or dtypes take the
    reference."""
    module = DECODE.get()
    if (module is None or q.dtype not in (torch.float32, torch.bfloat16) or q.dtype != k.dtype
            or q.stride(-1) != 1 or k.stride(-1) != 1 or cos_cache.dtype != torch.float32):
        return apply_rope_ref(q, k, positions, cos_cache, sin_cache)
    pos = positions if positions.dtype == torch.int64 else positions.long()
    q_out, k_out = module.apply_rope(q, k, pos.contiguous(), cos_cache.contiguous(),
                                     sin_cache.contiguous())
    return q_out, k_out


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
    cos_cache: torch.Tensor, sin_cache: torch.Tensor, backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply RoPE to q [T, Hq, D] and k [T, Hk, D] at `positions` [T]. Backends: ref, cpu
    (C++, bit-identical to ref), triton."""
    return resolve("apply_rope", backend, q.device)(q, k, positions, cos_cache, sin_cache)



register("apply_rope", "ref", apply_rope_ref)
register("apply_rope", "cpu", apply_rope_cpu, available=DECODE.available)
register("apply_rope", "triton", "vibekit.ops.triton.rope:apply_rope_triton")
set_auto_order("apply_rope", "cpu", ("cpu", "ref"))
