"""RoPE on MLX (rotate-half / NeoX layout, as HF llama), with the torch op's frequencies."""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from vibekit.ops.rope import rope_inv_freq


def rope_freqs_mlx(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> mx.array:
    """The wavelengths [head_dim / 2] (1 / inv_freq, llama3 and linear scaling included) that
    `mx.fast.rope(..., base=None, freqs=...)` takes: the same frequencies as the torch op."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling).double()
    return mx.array((1.0 / inv_freq).float().numpy())


def rope_fast_mlx(x: mx.array, positions: mx.array, freqs: mx.array) -> mx.array:
    """RoPE of x [T, H, D] at `positions` [T] int32 with `mx.fast.rope` (one fused kernel; each
    token is its own batch row so every token has its own offset)."""
    num_tokens, num_heads, head_dim = x.shape
    out = mx.fast.rope(x.reshape(num_tokens, num_heads, 1, head_dim), head_dim,
                       traditional=False, base=None, scale=1.0, offset=positions, freqs=freqs)
    return out.reshape(num_tokens, num_heads, head_dim)
