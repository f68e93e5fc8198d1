"""HybridCache: the cache protocol (vibekit.core.cache) for a hybrid model: paged KV for the
attention layers plus recurrent-state slots, prefix snapshots and verify-block rollback for the
Mamba2 / gated-delta layers, kept in step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vibekit.core.cache import CacheMatch
from vibekit.core.request import Request
from vibekit.kvcache import PagedKVCache, hash_full_pages
from vibekit.ssm.pool import StatePool, StateSnapshot
from vibekit.ssm.prefix_cache import HybridPrefixCache, PrefixMatch, SnapshotPolicy
from vibekit.ssm.snapshots import SnapshotStore
from vibekit.ssm.spec import StateSpec

DEFAULT_SNAPSHOT_BYTES = 512 << 20


class HybridCache:
    """KV pages (a PagedKVCache) and one recurrent-state slot per running request.

    A slot holds the state after the last computed token only, so:
      - a prefix is reused only up to the last page boundary with a state snapshot (`match`);
        prompts leave snapshots at the points `policy` plans (`chunk_limit` ends prefill chunks
        there, `commit` takes them);
      - a verify block snapshots its slot first (`allocate` / `admit` with num_draft > 0) and a
        rejection restores it and drops the whole block (`rollback` returns num_new), so the
        accepted tokens are recomputed next step.

    Example::

        cache = HybridCache(kv, StatePool(model_spec, max_num_seqs, dtype), policy, store)
        m = cache.match(req)        # KV match cut back to the last snapshot
    """

    def __init__(self, kv: PagedKVCache, pool: StatePool, policy: SnapshotPolicy,
                 store: SnapshotStore | None) -> None:
        self.kv = kv
        self.manager = kv.manager
        self.page_size = kv.page_size
        self.num_pages = kv.num_pages
        self.pool = pool
        self.policy = policy
        self.prefix = HybridPrefixCache(store, self.page_size, policy)
        self._points: dict[str, list[int]] = {}
        self._verify: dict[str, StateSnapshot] = {}
        self._slots: dict[str, int] = {}
        self._running: dict[str, Request] = {}

    @classmethod
    def create(cls, kv: PagedKVCache, spec: StateSpec, num_slots: int, dtype: torch.dtype,
               policy: SnapshotPolicy, snapshot_memory_bytes: int | None) -> HybridCache:
        pool = StatePool(spec, num_slots, dtype, kv.device)
        store = None
        if policy.enabled and kv.manager.enable_prefix_caching:
            budget = DEFAULT_SNAPSHOT_BYTES if snapshot_memory_bytes is None \
                else snapshot_memory_bytes
            store = SnapshotStore(budget, pool.bytes_per_slot)
        return cls(kv, pool, policy, store)

    # -- admission ----------------------------------------------------------------------------

    def _prompt_hashes(self, req: Request) -> list[int]:
        return hash_full_pages(req.prompt_token_ids, self.page_size)

    def add(self, req: Request) -> None:
        """Track a queued prompt's page hashes: where it diverges from the other prompts in
        flight is where it should snapshot."""
        if self.prefix.store is not None:
            self.prefix.track(req.request_id, self._prompt_hashes(req))

    def match(self, req: Request) -> CacheMatch:
        """The KV match cut back to the longest prefix that has a state snapshot; plans where
        this prompt will snapshot; asks to wait when a running prefill is about to snapshot a
        longer shared prefix."""
        store = self.prefix.store
        pages, hashes = self.kv.match(req).data
        m = self.prefix.match(pages, hashes)
        if not self.manager.enable_prefix_caching:
            m.reason = "miss: prefix caching is off"
        num_cached = len(m.pages) * self.page_size
        if store is not None:
            divergence = [self.prefix.shared_pages(req.request_id, self._prompt_hashes(req)),
                          m.num_kv_pages]
            self._points[req.request_id] = self.policy.points(
                len(req.prompt_token_ids), self.page_size, num_cached, divergence)
        return CacheMatch(num_cached, self._should_wait(req, num_cached), m.reason, m)

    def _should_wait(self, req: Request, num_cached: int) -> bool:
        chain = self.prefix.chain(req.request_id)
        if not chain:
            return False
        for other in self._running.values():
            points = self._points.get(other.request_id)
            if not points:
                continue
            shared = _common_prefix(chain, self.prefix.chain(other.request_id)) * self.page_size
            if any(num_cached < p <= shared for p in points):
                return True
        return False

    def chunk_limit(self, req: Request, start: int, num_new: int) -> int:
        for point in self._points.get(req.request_id, ()):
            if start < point < start + num_new:
                return point - start
        return num_new

    def can_admit(self, req: Request, match: CacheMatch, num_new: int) -> bool:
        m: PrefixMatch = match.data
        return self.pool.can_allocate() and self.manager.can_allocate(
            self.kv.table(req), num_new, m.pages)

    def admit(self, req: Request, match: CacheMatch, num_new: int, num_draft: int = 0) -> None:
        """Adopt the matched pages, give `req` a slot holding the state after them."""
        m: PrefixMatch = match.data
        self.kv.copy_pages(self.manager.allocate(self.kv.table(req), num_new, m.pages, m.hashes))
        slot = self.pool.allocate()
        self._slots[req.request_id] = slot
        self._running[req.request_id] = req
        if m.pages:
            assert m.snapshot is not None, "a matched prefix always ends at a snapshot"
            self.pool.restore(slot, m.snapshot)
        self.prefix.record(m, len(req.token_ids))
        req.prefix_cache_reason = m.reason
        if num_draft:
            self._verify[req.request_id] = self.pool.snapshot(slot)

    def can_allocate(self, req: Request, num_new: int) -> bool:
        return self.kv.can_allocate(req, num_new)

    def allocate(self, req: Request, num_new: int, num_draft: int = 0) -> None:
        self.kv.allocate(req, num_new)
        if num_draft:  # the block may be rejected: keep the state from before it
            self._verify[req.request_id] = self.pool.snapshot(self._slots[req.request_id])

    # -- after the forward --------------------------------------------------------------------

    def rollback(self, req: Request, num_new: int, num_rejected: int) -> int:
        """Recurrent state cannot be trimmed: restore the state from before the verify block and
        drop the whole block; the accepted tokens are recomputed next step."""
        if not num_rejected:
            return 0
        self.pool.restore(self._slots[req.request_id], self._verify.pop(req.request_id))
        self.kv.rollback(req, num_new, num_new)
        return num_new

    def abort_step(self, req: Request, num_new: int) -> bool:
        """A failed forward may have advanced the state in some layers: exact only when the step
        verified a block (its snapshot is restored); otherwise the request is recomputed."""
        self.kv.abort_step(req, num_new)
        snapshot = self._verify.pop(req.request_id, None)
        if snapshot is None:
            return False
        self.pool.restore(self._slots[req.request_id], snapshot)
        return True

    def commit(self, req: Request) -> None:
        """Register full KV pages; snapshot the state if the request stands at a planned point."""
        self.kv.commit(req)
        self._verify.pop(req.request_id, None)
        points = self._points.get(req.request_id)
        store = self.prefix.store
        if not points or store is None:
            return
        pos = req.num_computed_tokens
        while points and points[0] < pos:
            points.pop(0)
        if points and points[0] == pos:
            points.pop(0)
            hashes = self.kv.table(req).page_hashes
            if len(hashes) >= pos // self.page_size:
                store.put(hashes[pos // self.page_size - 1],
                          self.pool.snapshot(self._slots[req.request_id]))

    def free(self, req: Request, finished: bool) -> None:
        self.kv.free(req, finished)
        slot = self._slots.pop(req.request_id, None)
        if slot is not None:
            self.pool.free(slot)
        self._verify.pop(req.request_id, None)
        self._running.pop(req.request_id, None)
        self._points.pop(req.request_id, None)
        if finished:
            self.prefix.untrack(req.request_id)

    # -- the runner's view --------------------------------------------------------------------

    def page_ids(self, req: Request) -> list[int]:
        return self.kv.page_ids(req)

    def forward_args(self, requests: Sequence[Request], device: torch.device) -> dict[str, Any]:
        return {"kv_caches": self.kv.kv_caches, "state_caches": self.pool.caches,
                "state_slots": [self._slots[r.request_id] for r in requests]}

    def usage(self) -> float:
        return self.kv.usage()

    def stats(self) -> dict[str, Any]:
        """KV stats plus hit rate, snapshot memory and why prefixes missed."""
        s = self.prefix.stats
        store = self.prefix.store
        return {
            **self.kv.stats(),
            "hybrid_prefix_hit_rate": s.hit_rate,
            "hybrid_prefix_hit_tokens": s.num_hit_tokens,
            "hybrid_prefix_queries": s.num_queries,
            "snapshot_bytes": store.nbytes if store else 0,
            "num_snapshots": len(store) if store else 0,
            "snapshot_evictions": store.stats.num_evicted if store else 0,
            "state_slot_bytes": self.pool.bytes_per_slot,
        }

    def diagnostics(self) -> dict[str, int]:
        """How admissions went: counts of "hit", "partial hit" and "miss" (the full reason of a
        request's match is in `req.prefix_cache_reason`)."""
        return dict(self.prefix.stats.miss_reasons)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Leading entries two hash chains share (equal chained hashes mean equal prefixes)."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    lo, hi = 1, n  # a[:lo] == b[:lo]; binary search works because the hashes are chained
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            lo = mid
        else:
            hi = mid - 1
    return lo
