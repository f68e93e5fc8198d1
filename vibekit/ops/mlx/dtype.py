"""torch dtype -> MLX dtype (the engine's dtype option is a torch dtype)."""

from __future__ import annotations

import mlx.core as mx
import torch

_MX_DTYPES = {torch.float32: mx.float32, torch.float16: mx.float16,
              torch.bfloat16: mx.bfloat16}


def mx_dtype(dtype: torch.dtype | mx.Dtype) -> mx.Dtype:
    """The MLX dtype of a torch dtype (float32, float16, bfloat16); an MLX dtype as it is."""
    if isinstance(dtype, mx.Dtype):
        return dtype
    if dtype not in _MX_DTYPES:
        raise ValueError(f"dtype {dtype} is not supported on MLX; use float32, float16 or "
                         "bfloat16")
    return _MX_DTYPES[dtype]
