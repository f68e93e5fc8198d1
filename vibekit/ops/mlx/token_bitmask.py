"""Token bitmask on MLX logits: what `apply_token_bitmask_ref` does in place, as a new array."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def apply_token_bitmask_mlx(logits: mx.array, bitmask: np.ndarray,
                            rows: list[int] | None = None) -> mx.array:
    """logits [S, V] float, bitmask [R, ceil(V / 32)] int32 (bit j of word w allows token
    32 * w + j, xgrammar's / llguidance's layout), rows: the logits row of each bitmask row (None:
    row i for bitmask row i, R == S). Returns logits with forbidden tokens at -inf (mx arrays are
    immutable, so unlike the torch op this returns the result).

    Example::

        logits = apply_token_bitmask_mlx(logits, bitmask.numpy(), rows=[0, 2])
    """
    num_rows, vocab = logits.shape
    words = np.ascontiguousarray(bitmask, dtype=np.int32).view(np.uint32)
    if rows is None:
        if words.shape[0] != num_rows:
            raise ValueError(f"bitmask has {words.shape[0]} rows for {num_rows} logits rows; "
                             "pass rows= to name the logits row of each")
        rows = list(range(num_rows))
    if words.shape[1] * 32 < vocab:
        raise ValueError(f"bitmask covers {words.shape[1] * 32} tokens; logits have {vocab}")
    # Unpack on the host side of the graph: [R, W] words -> [R, W * 32] allowed bits.
    shifts = mx.arange(32, dtype=mx.uint32)
    bits = (mx.array(words)[:, :, None] >> shifts) & 1  # [R, W, 32]
    allowed = bits.reshape(len(rows), -1)[:, :vocab].astype(mx.bool_)  # [R, V]
    full = mx.ones((num_rows, vocab), dtype=mx.bool_)
    full[mx.array(rows, dtype=mx.int32)] = allowed
    return mx.where(full, logits, mx.array(-mx.inf, dtype=logits.dtype))
