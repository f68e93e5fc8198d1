"""EncoderDecoderCache: the cache protocol over an encoder-decoder model's two paged KV pools.

The decoder's self-attention KV lives in one PagedKVCache (per-token pages, as for a dense
model); the cross-attention KV of the encoder outputs lives in a second pool, one slot per
encoder output. Cross K/V are written once, when an encoder output is final, and read by every
decoder step of every hypothesis of that stream; `rollback` only ever trims self-attention KV.
A streaming request re-decodes its hypothesis when more audio is encoded: `restart_decoder`
drops its self-attention KV and keeps the cross KV.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vibekit.core.cache import CacheMatch
from vibekit.core.request import Request
from vibekit.kvcache.cache import PagedKVCache
from vibekit.kvcache.page_table import PageTable
from vibekit.kvcache.spec import KVCacheSpec


class EncoderDecoderCache:
    """Self-attention pages (`self.decoder`) and cross-attention pages (`self.cross`).

    Example::

        cache = EncoderDecoderCache(spec, num_pages=64, num_cross_pages=64, page_size=16)
        if cache.can_append_encoder(req, n):
            slots = cache.append_encoder(req, n)   # write the cross K/V of n outputs there
    """

    def __init__(self, spec: KVCacheSpec, num_pages: int, num_cross_pages: int, page_size: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.page_size = page_size
        self.num_pages = num_pages + num_cross_pages
        self.decoder = PagedKVCache(spec, num_pages, page_size, enable_prefix_caching=False,
                                    dtype=dtype, device=device)
        self.cross = PagedKVCache(spec, num_cross_pages, page_size, enable_prefix_caching=False,
                                  dtype=dtype, device=device)

    # -- cross-attention part ------------------------------------------------------------------

    def cross_table(self, req: Request) -> PageTable:
        return self.cross.table(req)

    def num_encoder_outputs(self, req: Request) -> int:
        return self.cross.table(req).num_tokens

    def can_append_encoder(self, req: Request, num_new: int) -> bool:
        return self.cross.manager.can_allocate(self.cross.table(req), num_new)

    def append_encoder(self, req: Request, num_new: int) -> torch.Tensor:
        """Reserve cross slots for num_new more encoder outputs; their flat slots [num_new]."""
        table = self.cross.table(req)
        start = table.num_tokens
        self.cross.allocate(req, num_new)
        return torch.tensor(table.slots(start, start + num_new), dtype=torch.int64,
                            device=self.cross.device)

    def restart_decoder(self, req: Request) -> None:
        """Drop the self-attention KV of the current hypothesis (cross KV stays)."""
        self.decoder.free(req, finished=False)
        req.num_computed_tokens = 0

    # -- the protocol (self-attention part; the cross part is released at free) ---------------

    def add(self, req: Request) -> None:
        self.decoder.add(req)

    def match(self, req: Request) -> CacheMatch:
        return CacheMatch(0, reason="miss: encoder-decoder requests share no prefix")

    def chunk_limit(self, req: Request, start: int, num_new: int) -> int:
        return num_new

    def can_admit(self, req: Request, match: CacheMatch, num_new: int) -> bool:
        return self.decoder.can_admit(req, CacheMatch(data=([], [])), num_new)

    def admit(self, req: Request, match: CacheMatch, num_new: int, num_draft: int = 0) -> None:
        self.decoder.admit(req, CacheMatch(data=([], [])), num_new, num_draft)

    def can_allocate(self, req: Request, num_new: int) -> bool:
        return self.decoder.can_allocate(req, num_new)

    def allocate(self, req: Request, num_new: int, num_draft: int = 0) -> None:
        self.decoder.allocate(req, num_new, num_draft)

    def rollback(self, req: Request, num_new: int, num_rejected: int) -> int:
        return self.decoder.rollback(req, num_new, num_rejected)

    def abort_step(self, req: Request, num_new: int) -> bool:
        return self.decoder.abort_step(req, num_new)

    def commit(self, req: Request) -> None:
        pass  # no prefix caching: nothing to register

    def free(self, req: Request, finished: bool) -> None:
        self.decoder.free(req, finished)
        self.cross.free(req, finished)

    def page_ids(self, req: Request) -> list[int]:
        return self.decoder.page_ids(req)

    def forward_args(self, requests: Sequence[Request], device: torch.device) -> dict[str, Any]:
        return {"kv_caches": self.decoder.kv_caches, "cross_kv_caches": self.cross.kv_caches}

    def usage(self) -> float:
        return max(self.decoder.usage(), self.cross.usage())

    def stats(self) -> dict[str, Any]:
        return {"kv_usage": self.decoder.usage(), "cross_kv_usage": self.cross.usage(),
                "num_pages": self.decoder.num_pages, "num_cross_pages": self.cross.num_pages,
                "num_free_pages": self.decoder.manager.num_free_pages,
                "num_free_cross_pages": self.cross.manager.num_free_pages}
