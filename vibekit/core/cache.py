"""The cache protocol: what the scheduler and the runner ask of a model's caches.

One object per engine implements it: `vibekit.kvcache.PagedKVCache` (the paged KV cache of a
dense model) or `vibekit.ssm.HybridCache` (KV pages plus recurrent-state slots and prefix
snapshots). The scheduler uses only these calls, in this order for one request:

    cache.add(req)                                  # queued
    m = cache.match(req)                            # prefix reuse
    n = cache.chunk_limit(req, m.num_cached_tokens, n)
    if not m.wait and cache.can_admit(req, m, n):
        cache.admit(req, m, n, num_draft)           # adopt the prefix, reserve n slots
    ... later steps: cache.can_allocate(req, n) / cache.allocate(req, n, num_draft)
    ... after each forward: n_drop = cache.rollback(req, n, num_rejected); cache.commit(req)
    cache.free(req, finished)                       # finish, abort or preemption

`can_*` checks never change state; the action after one asserts it is legal.

Other caches fit the same calls: an encoder-decoder's cross-attention KV is computed at `admit`
(once per audio segment), never rolled back (`rollback` returns what the self-attention part
drops) and released at `free`; an MLX backend keeps its own tensors behind `forward_args`. A
cache holding several kinds composes them, as HybridCache composes a PagedKVCache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vibekit.core.request import Request


@dataclass(slots=True)
class CacheMatch:
    """The reusable prefix of a waiting request's tokens: `num_cached_tokens` (a multiple of the
    page size, below the last prompt token); `wait` asks the scheduler to retry later (a running
    prefill is about to cache a longer shared prefix); `reason` says why the match is not longer.
    `data` belongs to the cache that made the match."""

    num_cached_tokens: int = 0
    wait: bool = False
    reason: str = ""
    data: Any = None


class Cache(Protocol):
    """Per-request cache state for one engine (see the module docstring for the call order)."""

    page_size: int
    num_pages: int

    def add(self, req: Request) -> None:
        """A request was queued (a cache may plan with every prompt in flight)."""
        ...

    def match(self, req: Request) -> CacheMatch: ...

    def chunk_limit(self, req: Request, start: int, num_new: int) -> int:
        """A prefill chunk [start, start + num_new) shortened to end where the cache must stop
        (e.g. a recurrent-state snapshot point); num_new when nothing stops it."""
        ...

    def can_admit(self, req: Request, match: CacheMatch, num_new: int) -> bool: ...

    def admit(self, req: Request, match: CacheMatch, num_new: int, num_draft: int = 0) -> None:
        """Adopt the matched prefix and reserve num_new slots (the last num_draft a verify
        block)."""
        ...

    def can_allocate(self, req: Request, num_new: int) -> bool: ...

    def allocate(self, req: Request, num_new: int, num_draft: int = 0) -> None:
        """Reserve num_new more token slots for a running request; the last num_draft of them
        are a verify block that `rollback` may take back."""
        ...

    def rollback(self, req: Request, num_new: int, num_rejected: int) -> int:
        """After a step that fed num_new tokens of which the last num_rejected were rejected
        drafts: undo what must be undone and return how many of the num_new tokens are no
        longer computed (num_rejected where the cache can trim; more where it cannot)."""
        ...

    def commit(self, req: Request) -> None:
        """The first req.num_computed_tokens tokens are now in the cache: make them reusable."""
        ...

    def free(self, req: Request, finished: bool) -> None: ...

    def abort_step(self, req: Request, num_new: int) -> bool:
        """The forward that was to compute the num_new tokens reserved for req this step failed:
        give the reservation back. False when the cache cannot restore its state exactly (a
        half-run forward may have advanced a recurrent state): the request must be recomputed."""
        ...

    def page_ids(self, req: Request) -> list[int]: ...

    def forward_args(self, requests: Sequence[Request], device: torch.device) -> dict[str, Any]:
        """The ForwardBatch fields of the cache tensors for these requests (kv_caches, and for
        hybrid models state_caches and state_slots)."""
        ...

    def usage(self) -> float: ...

    def stats(self) -> dict[str, Any]: ...
