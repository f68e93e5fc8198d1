"""PagedKVCache: the cache protocol (vibekit.core.cache) over a dense model's paged KV cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vibekit.core.cache import CacheMatch
from vibekit.core.request import Request
from vibekit.kvcache.manager import KVCacheManager
from vibekit.kvcache.page_table import PageTable
from vibekit.kvcache.spec import KVCacheSpec


class PagedKVCache:
    """KV tensors per layer, a page table per request, prefix caching by page hash.

    Rejected drafts are trimmed (`rollback` returns num_rejected); copy-on-write of a shared
    partial page happens inside `admit` / `allocate`, before the forward that writes it.

    Example::

        cache = PagedKVCache(KVCacheSpec(2, 2, 16), num_pages=64, page_size=16)
        m = cache.match(req)
        if cache.can_admit(req, m, n):
            cache.admit(req, m, n)
    """

    def __init__(self, spec: KVCacheSpec, num_pages: int, page_size: int,
                 enable_prefix_caching: bool = True, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.num_pages = num_pages
        self.page_size = page_size
        self.device = torch.device(device)
        self.manager = KVCacheManager(num_pages, page_size, enable_prefix_caching)
        self.kv_caches = spec.allocate(num_pages, page_size, dtype, self.device)
        self.tables: dict[str, PageTable] = {}

    # -- the protocol -------------------------------------------------------------------------

    def table(self, req: Request) -> PageTable:
        table = self.tables.get(req.request_id)
        if table is None:
            table = self.tables[req.request_id] = self.manager.new_table()
        return table

    def add(self, req: Request) -> None:
        pass  # pages are reserved at admission

    def match(self, req: Request) -> CacheMatch:
        pages, hashes = self.manager.match_prefix(req.token_ids)
        # At least one token must be computed so the step yields logits to sample from.
        keep = min(len(pages), (len(req.token_ids) - 1) // self.page_size)
        pages, hashes = pages[:keep], hashes[:keep]
        req.prefix_cache_reason = "hit" if pages else "miss"
        return CacheMatch(len(pages) * self.page_size, reason=req.prefix_cache_reason,
                          data=(pages, hashes))

    def chunk_limit(self, req: Request, start: int, num_new: int) -> int:
        return num_new

    def can_admit(self, req: Request, match: CacheMatch, num_new: int) -> bool:
        pages, _ = match.data
        return self.manager.can_allocate(self.table(req), num_new, pages)

    def admit(self, req: Request, match: CacheMatch, num_new: int, num_draft: int = 0) -> None:
        pages, hashes = match.data
        self.copy_pages(self.manager.allocate(self.table(req), num_new, pages, hashes))

    def can_allocate(self, req: Request, num_new: int) -> bool:
        return self.manager.can_allocate(self.table(req), num_new)

    def allocate(self, req: Request, num_new: int, num_draft: int = 0) -> None:
        self.copy_pages(self.manager.allocate(self.table(req), num_new))

    def rollback(self, req: Request, num_new: int, num_rejected: int) -> int:
        if num_rejected:
            self.manager.trim(self.table(req), num_rejected)  # KV of rejected draft positions
        return num_rejected

    def abort_step(self, req: Request, num_new: int) -> bool:
        self.manager.trim(self.table(req), num_new)  # the KV of unfinished positions is moot
        return True

    def commit(self, req: Request) -> None:
        # A stop inside an accepted block leaves fewer tokens than were computed.
        self.manager.commit(self.table(req), req.token_ids,
                            min(req.num_computed_tokens, len(req.token_ids)))

    def free(self, req: Request, finished: bool) -> None:
        table = self.tables.pop(req.request_id, None)
        if table is not None:
            self.manager.free(table)

    def page_ids(self, req: Request) -> list[int]:
        return self.table(req).pages

    def forward_args(self, requests: Sequence[Request], device: torch.device) -> dict[str, Any]:
        return {"kv_caches": self.kv_caches}

    def usage(self) -> float:
        return self.manager.usage()

    def stats(self) -> dict[str, Any]:
        return {"kv_usage": self.manager.usage(), "num_pages": self.num_pages,
                "prefix_hit_rate": self.manager.stats.hit_rate}

    # -- device work --------------------------------------------------------------------------

    def copy_pages(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate KV pages before a sequence appends into a shared page."""
        if not copies:
            return
        src = torch.tensor([s for s, _ in copies], device=self.device)
        dst = torch.tensor([d for _, d in copies], device=self.device)
        for k_cache, v_cache in self.kv_caches:
            k_cache[dst] = k_cache[src]
            v_cache[dst] = v_cache[src]
