"""Token bitmask on MLX logits: what `apply_token_bitmask_ref` does in place, as a new array."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def apply_token_bitmask_mlx(logits: mx.array, bitmask: np.ndarray,
                            indices: list[int] | None = None) -> mx.array:
    """`apply_token_bitmask_ref` on MLX: logits [S, V] float, bitmask [S, ceil(V / 32)] int32
    (bit j % 32 of word j // 32 allows token j: xgrammar's / llguidance's layout), indices: the
    rows to mask (None: every row). Returns the logits with forbidden tokens at -inf (MLX arrays
    are immutable, so unlike the torch op this returns the result).

    Example::

        logits = apply_token_bitmask_mlx(logits, bitmask.numpy(), indices=[0, 2])
    """
    num_rows, vocab = logits.shape
    words = np.ascontiguousarray(bitmask, dtype="<i4")  # little-endian: byte k holds bits 8k..
    if words.shape != (num_rows, -(-vocab // 32)):
        raise ValueError(f"bitmask {words.shape} does not match logits {(num_rows, vocab)}: "
                         f"it needs one row per logits row and ceil({vocab} / 32) words")
    # Unpacked on the host (a few microseconds): one bool array crosses, one `where` on MLX.
    allowed = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[:, :vocab]
    allowed = allowed.astype(bool)  # [S, V]
    if indices is not None:
        untouched = np.ones(num_rows, dtype=bool)
        untouched[list(indices)] = False
        allowed[untouched] = True  # rows not listed stay as they are
    return mx.where(mx.array(allowed), logits, mx.array(-mx.inf, dtype=logits.dtype))
