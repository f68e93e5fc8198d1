"""KVCacheSpec: what a model declares about its attention layers' KV."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVCacheSpec:
    """Which layers need paged KV, and the shape of one token's K (or V) in each.

    Layers `0 .. num_layers - 1` each need a `(k_cache, v_cache)` pair of shape
    `[num_pages, page_size, num_kv_heads, head_dim]` in `ForwardBatch.kv_caches`.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        """K and V bytes one token occupies across all layers."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * itemsize

    def bytes_per_page(self, page_size: int, dtype: torch.dtype) -> int:
        return self.bytes_per_token(dtype) * page_size

    def allocate(self, num_pages: int, page_size: int, dtype: torch.dtype,
                 device: torch.device | str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zeroed (k_cache, v_cache) per layer."""
        shape = (num_pages, page_size, self.num_kv_heads, self.head_dim)
        return [(torch.zeros(shape, dtype=dtype, device=device),
                 torch.zeros(shape, dtype=dtype, device=device))
                for _ in range(self.num_layers)]
