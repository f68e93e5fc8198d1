"""RoPE on MLX (rotate-half / NeoX layout, as HF llama), from the same tables as the torch op."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from vibekit.ops.rope import rope_cos_sin_cache, rope_inv_freq


def rope_tables_mlx(head_dim: int, theta: float, scaling: dict[str, Any] | None,
                    max_positions: int) -> tuple[mx.array, mx.array]:
    """float32 cos / sin [max_positions, head_dim]: `rope_cos_sin_cache` (llama3 and linear
    scaling included), computed once by the torch reference and handed to MLX."""
    cos, sin = rope_cos_sin_cache(rope_inv_freq(head_dim, theta, scaling), max_positions)
    return mx.array(np.asarray(cos.numpy())), mx.array(np.asarray(sin.numpy()))


def _rotate_half(x: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    return mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope_mlx(q: mx.array, k: mx.array, cos: mx.array,
                   sin: mx.array) -> tuple[mx.array, mx.array]:
    """`apply_rope_ref` on MLX: q [T, Hq, D], k [T, Hk, D]; cos / sin [T, D], the table rows of
    each token's position (gathered once per step). Returns rotated (q, k) in their dtype."""
    cos = cos.astype(q.dtype)[:, None, :]  # [T, 1, D]
    sin = sin.astype(q.dtype)[:, None, :]
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
