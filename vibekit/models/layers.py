"""Building blocks shared by the model files: RMSNorm and the RoPE cos/sin table."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vibekit.ops import rms_norm, rope_cos_sin_cache, rope_inv_freq


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned scale (computed in float32, like HF)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class RopeTable:
    """float32 cos/sin tables [N, head_dim] for positions 0..N-1, built on first use.

    NOTE: a plain object, not a buffer, so `model.to(bfloat16)` cannot round the table and
    meta-device construction cannot leave it empty. It covers `max_positions` up front and grows
    (to the next power of two) only when a batch reaches past it.
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None,
                 max_positions: int) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self.scaling = dict(scaling) if scaling else None
        self.max_positions = max_positions
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None

    def get(self, num_positions: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables covering at least positions 0..num_positions-1, on `device` (host-side check)."""
        if self.cos is None or self.cos.device != device or num_positions > self.cos.shape[0]:
            size = max(self.max_positions, 1 << max(num_positions - 1, 0).bit_length())
            if self.cos is not None:
                size = max(size, self.cos.shape[0])
            inv_freq = rope_inv_freq(self.head_dim, self.theta, self.scaling)
            cos, sin = rope_cos_sin_cache(inv_freq, size)
            self.cos, self.sin = cos.to(device), sin.to(device)
        return self.cos, self.sin
