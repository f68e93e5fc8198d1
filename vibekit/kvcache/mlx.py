"""MLXPagedKVCache: the paged KV cache with its pages in MLX arrays.

The same page pool, prefix hashing, page tables, copy-on-write and trimming as PagedKVCache
(it is one: only where the K/V live differs), so the scheduler's prefix reuse and rollback of
rejected drafts work unchanged. Imported lazily (needs mlx).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np
import torch

from vibekit.core.request import Request
from vibekit.kvcache.cache import PagedKVCache
from vibekit.kvcache.manager import KVCacheManager
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.ops.mlx.dtype import mx_dtype


class MLXPagedKVCache(PagedKVCache):
    """K and V per layer as flat MLX arrays [num_pages * page_size, num_kv_heads, head_dim]
    (page p holds slots p * page_size .. (p + 1) * page_size - 1); the model writes them in place
    (mx `__setitem__`) through `forward_args()["kv_caches"]`.

    Example::

        cache = MLXPagedKVCache(KVCacheSpec(2, 2, 16), num_pages=64, page_size=16,
                                dtype=mx.float32)
    """

    def __init__(self, spec: KVCacheSpec, num_pages: int, page_size: int,
                 enable_prefix_caching: bool = True,
                 dtype: torch.dtype | mx.Dtype = mx.float32) -> None:
        dtype = mx_dtype(dtype)
        self.spec = spec
        self.num_pages = num_pages
        self.page_size = page_size
        self.device = torch.device("cpu")  # host side: page tables and bookkeeping
        self.manager = KVCacheManager(num_pages, page_size, enable_prefix_caching)
        shape = (num_pages * page_size, spec.num_kv_heads, spec.head_dim)
        self.kv_caches = [(mx.zeros(shape, dtype=dtype), mx.zeros(shape, dtype=dtype))
                          for _ in range(spec.num_layers)]
        mx.eval(self.kv_caches)
        self.tables = {}

    def forward_args(self, requests: Sequence[Request], device: Any = None) -> dict[str, Any]:
        return {"kv_caches": self.kv_caches}

    def arrays(self) -> list[mx.array]:
        """Every cache array (to evaluate with a step's outputs)."""
        return [a for pair in self.kv_caches for a in pair]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())

    def copy_pages(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate KV pages before a sequence appends into a shared page."""
        if not copies:
            return
        ps = self.page_size
        offsets = np.arange(ps)
        src = mx.array(np.concatenate([s * ps + offsets for s, _ in copies]).astype(np.int32))
        dst = mx.array(np.concatenate([d * ps + offsets for _, d in copies]).astype(np.int32))
        for k_cache, v_cache in self.kv_caches:
            k_cache[dst] = k_cache[src]
            v_cache[dst] = v_cache[src]
        mx.eval(self.arrays())
