"""HybridStateManager: what the engine calls, at fixed points, to keep recurrent-state slots and
snapshots in step with the paged KV cache of a hybrid model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from vibekit.kvcache import KVCacheManager, hash_full_pages
from vibekit.ssm.pool import StatePool, StateSnapshot
from vibekit.ssm.prefix_cache import HybridPrefixCache, PrefixMatch, SnapshotPolicy
from vibekit.ssm.snapshots import SnapshotStore
from vibekit.ssm.spec import StateSpec

if TYPE_CHECKING:
    from vibekit.config import EngineConfig
    from vibekit.runtime.request import Request
    from vibekit.runtime.scheduler import ScheduledBatch

_DEFAULT_SNAPSHOT_BYTES = 512 << 20


def state_pool_bytes(model: torch.nn.Module, config: EngineConfig) -> int:
    """Bytes the state slots of `model` take (one per max_num_seqs); 0 for dense models."""
    spec = model_state_spec(model)
    if spec is None:
        return 0
    return spec.bytes_per_slot(config.dtype) * config.scheduler.max_num_seqs


def make_state_manager(model: torch.nn.Module, config: EngineConfig,
                       kv: KVCacheManager) -> HybridStateManager | None:
    """The state manager of a hybrid model, None for a dense one. Refuses settings the model's
    caches cannot honour, naming why."""
    spec = model_state_spec(model)
    cache = config.cache
    if spec is None:
        if (cache.snapshot_every_pages or cache.snapshot_memory_bytes is not None
                or cache.snapshot_policy != "last_page,divergence"):
            raise ValueError(
                f"snapshot_policy / snapshot_every_pages / snapshot_memory_bytes configure "
                f"recurrent-state snapshots, but {type(model).__name__} has no recurrent layers "
                "(its KV cache is trimmed and shared by pages alone); drop these options"
            )
        return None
    policy = SnapshotPolicy.parse(cache.snapshot_policy, cache.snapshot_every_pages)
    if policy.enabled and not config.scheduler.enable_chunked_prefill and (
            policy.divergence or policy.every_n_pages):
        raise ValueError(
            "snapshot_policy 'divergence' and snapshot_every_pages stop a prompt's prefill at "
            "page boundaries inside it to snapshot the recurrent state, which needs chunked "
            "prefill; enable_chunked_prefill=True, or snapshot_policy='last_page' / 'none'"
        )
    return HybridStateManager(spec, config, kv)


def model_state_spec(model: torch.nn.Module) -> StateSpec | None:
    fn = getattr(model, "state_spec", None)
    return fn() if fn is not None else None


class HybridStateManager:
    """Recurrent-state slots, prefix snapshots and verify-block rollback for one engine.

    Engine hooks, in step order:
      on_add(req)                         a request is queued (tracks its prompt's page hashes)
      match(req, pages, hashes)           admission: cut the KV prefix match back to a snapshot,
                                          plan the request's snapshot points
      cap_chunk(req, start, num_new)      end prefill chunks at snapshot points
      admit(req, num_cached)              give the request a slot; restore the matched snapshot
      before_forward(sched)               snapshot slots that are about to verify a draft block
      rollback(req)                       some drafts were rejected: back to the block start
      after_commit(req)                   snapshot at page boundaries the policy asked for
      release(req, finished)              free the slot (finish or preemption)

    Example::

        manager = HybridStateManager(model.state_spec(), engine_config, kv_manager)
        batch.state_caches, batch.state_slots = manager.pool.caches, slots
    """

    def __init__(self, spec: StateSpec, config: EngineConfig, kv: KVCacheManager) -> None:
        cache = config.cache
        self.kv = kv
        self.page_size = kv.page_size
        self.pool = StatePool(spec, config.scheduler.max_num_seqs, config.dtype, config.device)
        self.policy = SnapshotPolicy.parse(cache.snapshot_policy, cache.snapshot_every_pages)
        store = None
        if self.policy.enabled and kv.enable_prefix_caching:
            budget = cache.snapshot_memory_bytes
            store = SnapshotStore(_DEFAULT_SNAPSHOT_BYTES if budget is None else budget,
                                  self.pool.bytes_per_slot)
        self.cache = HybridPrefixCache(store, self.page_size, self.policy)
        self._matches: dict[str, PrefixMatch] = {}
        self._points: dict[str, list[int]] = {}
        self._verify: dict[str, StateSnapshot] = {}
        self._running: dict[str, Request] = {}

    # -- admission ----------------------------------------------------------------------------

    def on_add(self, req: Request) -> None:
        if self.cache.store is None:
            return
        hashes = hash_full_pages(req.prompt_token_ids, self.page_size,
                                 req.extra.get("cache_key"))
        self.cache.track(req.request_id, hashes)

    def match(self, req: Request, pages: list[int],
              hashes: list[int]) -> tuple[list[int], list[int]]:
        """The KV match cut back to the longest prefix that has a state snapshot."""
        m = self.cache.match(pages, hashes)
        if not self.kv.enable_prefix_caching:
            m.reason = "miss: prefix caching is off"
        self._matches[req.request_id] = m
        if self.cache.store is not None:
            prompt_hashes = hash_full_pages(req.prompt_token_ids, self.page_size,
                                            req.extra.get("cache_key"))
            divergence = [self.cache.shared_pages(req.request_id, prompt_hashes), m.num_kv_pages]
            self._points[req.request_id] = self.policy.points(
                len(req.prompt_token_ids), self.page_size, len(m.pages) * self.page_size,
                divergence)
        return m.pages, m.hashes

    def should_wait(self, req: Request) -> bool:
        """Whether `req` should wait for a running prefill that is about to snapshot a longer
        shared prefix than the cache has now (instead of recomputing that prefix itself).
        Call after `match`."""
        m = self._matches.get(req.request_id)
        chain = self.cache.chain(req.request_id)
        if m is None or not chain:
            return False
        num_cached = len(m.pages) * self.page_size
        for other in self._running.values():
            points = self._points.get(other.request_id)
            if not points:
                continue
            shared = _common_prefix(chain, self.cache.chain(other.request_id)) * self.page_size
            if any(num_cached < p <= shared for p in points):
                return True
        return False

    def cap_chunk(self, req: Request, start: int, num_new: int) -> int:
        """Shorten a prefill chunk [start, start + num_new) to end at the next snapshot point."""
        for point in self._points.get(req.request_id, ()):
            if start < point < start + num_new:
                return point - start
        return num_new

    def admit(self, req: Request, num_cached: int) -> None:
        """Give `req` a slot holding the state after its first `num_cached` tokens."""
        assert self.pool.can_allocate(), "more running requests than state slots (max_num_seqs)"
        m = self._matches.pop(req.request_id, None)
        slot = self.pool.allocate()
        req.state_slot = slot
        self._running[req.request_id] = req
        if num_cached:
            assert m is not None and m.snapshot is not None and (
                len(m.pages) * self.page_size == num_cached), "admit() must follow match()"
            self.pool.restore(slot, m.snapshot)
        if m is not None:
            self.cache.record(m, len(req.token_ids))
            req.extra["prefix_cache"] = m.reason

    # -- around the forward -------------------------------------------------------------------

    def before_forward(self, sched: ScheduledBatch) -> None:
        """Snapshot the slots of requests whose step ends in a verify block."""
        for req, draft in zip(sched.requests, sched.drafts):
            if draft:
                self._verify[req.request_id] = self.pool.snapshot(req.state_slot)

    def rollback(self, req: Request) -> None:
        """Restore the state from before the verify block (recurrent state cannot be trimmed);
        the engine then recomputes the accepted tokens."""
        self.pool.restore(req.state_slot, self._verify.pop(req.request_id))

    def after_commit(self, req: Request) -> None:
        """Drop the verify snapshot; snapshot the state if the request stands at a point."""
        self._verify.pop(req.request_id, None)
        points = self._points.get(req.request_id)
        if not points or self.cache.store is None:
            return
        pos = req.num_computed_tokens
        while points and points[0] < pos:
            points.pop(0)
        if points and points[0] == pos:
            points.pop(0)
            hashes = req.page_table.page_hashes
            if len(hashes) >= pos // self.page_size:
                self.cache.store.put(hashes[pos // self.page_size - 1],
                                     self.pool.snapshot(req.state_slot))

    def release(self, req: Request, finished: bool) -> None:
        if req.state_slot >= 0:
            self.pool.free(req.state_slot)
            req.state_slot = -1
        self._verify.pop(req.request_id, None)
        self._running.pop(req.request_id, None)
        self._points.pop(req.request_id, None)
        self._matches.pop(req.request_id, None)
        if finished:
            self.cache.untrack(req.request_id)

    # -- the runner's view --------------------------------------------------------------------

    def slots(self, requests: Sequence[Request], device: torch.device) -> torch.Tensor:
        return torch.tensor([r.state_slot for r in requests], dtype=torch.int64).to(device)

    def stats(self) -> dict[str, Any]:
        """Hit rate, snapshot memory and why prefixes missed, for logs and benchmarks."""
        s = self.cache.stats
        store = self.cache.store
        return {
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
        request's match is in `req.extra["prefix_cache"]`)."""
        return dict(self.cache.stats.miss_reasons)


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
