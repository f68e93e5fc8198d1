"""HybridPrefixCache: the longest prompt prefix whose KV pages AND recurrent-state snapshot are
both cached, the snapshot policy that decides where prompts leave snapshots, and diagnostics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from vibekit.ssm.pool import StateSnapshot
from vibekit.ssm.snapshots import SnapshotStore


@dataclass(frozen=True)
class SnapshotPolicy:
    """Where a prompt's prefill stops to snapshot its state (always at page boundaries):

    last_page      the end of the prompt's last full page (below its final token): repeated
                   prompts and multi-turn chats reuse everything but the tail
    divergence     where the prompt stops sharing pages with other prompts in flight or with
                   the KV prefix cache: every later request with that prefix hits
    every_n_pages  every N pages (0: off), a fallback that bounds what a miss recomputes
    """

    last_page: bool = True
    divergence: bool = True
    every_n_pages: int = 0

    @classmethod
    def parse(cls, policy: str, every_n_pages: int = 0) -> SnapshotPolicy:
        names = {p.strip() for p in policy.split(",") if p.strip()}
        return cls("last_page" in names, "divergence" in names, every_n_pages)

    @property
    def enabled(self) -> bool:
        return self.last_page or self.divergence or self.every_n_pages > 0

    def points(self, prompt_len: int, page_size: int, num_cached: int,
               divergence_pages: Sequence[int]) -> list[int]:
        """Sorted token positions in (num_cached, prompt_len) at which to snapshot."""
        last = (prompt_len - 1) // page_size  # pages a later identical prompt can reuse
        pages: set[int] = set()
        if self.last_page:
            pages.add(last)
        if self.divergence:
            pages.update(divergence_pages)
        if self.every_n_pages:
            pages.update(range(self.every_n_pages, last + 1, self.every_n_pages))
        return sorted(p * page_size for p in pages
                      if 0 < p <= last and p * page_size > num_cached)


@dataclass(slots=True)
class PrefixMatch:
    """The usable prefix: `pages` / `hashes` (a prefix of what the KV cache matched, ending
    where `snapshot` was taken), and why it is not longer."""

    pages: list[int]
    hashes: list[int]
    num_kv_pages: int
    snapshot: StateSnapshot | None
    reason: str


@dataclass(slots=True)
class HybridPrefixStats:
    num_queries: int = 0
    num_query_tokens: int = 0
    num_hit_tokens: int = 0
    miss_reasons: Counter = field(default_factory=Counter)

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0


class HybridPrefixCache:
    """Finds the longest prefix for which every KV page and a state snapshot exist.

    KV pages come from `KVCacheManager.match_prefix` (hash chain over full pages); snapshots
    live in a `SnapshotStore` keyed by the same chain, so a snapshot under hash h is the state
    after exactly the tokens of the pages up to the one hashed h. A prompt is also tracked while
    it is live, so `shared_pages` can tell where it diverges from other prompts in flight.

    Example:
        >>> cache = HybridPrefixCache(None, page_size=16, policy=SnapshotPolicy())
        >>> cache.match([3, 9], [11, 12]).reason
        'miss: snapshots are off'
    """

    def __init__(self, store: SnapshotStore | None, page_size: int,
                 policy: SnapshotPolicy) -> None:
        self.store = store
        self.page_size = page_size
        self.policy = policy
        self.stats = HybridPrefixStats()
        self._live: Counter[int] = Counter()
        self._live_chains: dict[str, list[int]] = {}

    # -- checks (no side effects besides LRU touches) ---------------------------------------

    def match(self, pages: Sequence[int], hashes: Sequence[int]) -> PrefixMatch:
        """Truncate a KV match (`pages`, `hashes`) to its longest prefix with a snapshot."""
        num_kv = len(pages)
        if self.store is None:
            return PrefixMatch([], [], num_kv, None, "miss: snapshots are off")
        if num_kv == 0:
            return PrefixMatch([], [], 0, None, "miss: no KV page of the prompt is cached")
        evicted = None
        for k in range(num_kv, 0, -1):
            key = hashes[k - 1]
            if key in self.store:
                snap = self.store.get(key)
                reason = "hit" if k == num_kv else (
                    f"partial hit: snapshot at token {k * self.page_size} of "
                    f"{num_kv * self.page_size} KV-cached tokens"
                    + (f" (the one at page {evicted} was evicted)" if evicted else ""))
                return PrefixMatch(list(pages[:k]), list(hashes[:k]), num_kv, snap, reason)
            if evicted is None and self.store.was_evicted(key):
                evicted = k
        if evicted is not None:
            reason = (f"miss: {num_kv} KV pages cached but their state snapshots were evicted "
                      f"(snapshot memory budget {self.store.max_bytes} bytes)")
        else:
            reason = (f"miss: {num_kv} KV pages cached but no state snapshot at any of their "
                      "boundaries (the policy never stopped a prefill there; try "
                      "snapshot_policy 'divergence' or snapshot_every_pages)")
        return PrefixMatch([], [], num_kv, None, reason)

    def shared_pages(self, request_id: str, hashes: Sequence[int]) -> int:
        """Leading pages of `hashes` that another live prompt shares."""
        own = self._live_chains.get(request_id)
        n = 0
        for i, h in enumerate(hashes):
            count = self._live[h] - (1 if own is not None and i < len(own) else 0)
            if count <= 0:
                break
            n += 1
        return n

    def chain(self, request_id: str) -> list[int]:
        """The prompt page-hash chain of a live request ([] if untracked)."""
        return self._live_chains.get(request_id, [])

    # -- actions ------------------------------------------------------------------------------

    def track(self, request_id: str, hashes: list[int]) -> None:
        self._live_chains[request_id] = hashes
        self._live.update(hashes)

    def untrack(self, request_id: str) -> None:
        hashes = self._live_chains.pop(request_id, None)
        if hashes:
            self._live.subtract(hashes)
            for h in hashes:
                if self._live[h] <= 0:
                    del self._live[h]

    def record(self, match: PrefixMatch, num_query_tokens: int) -> None:
        self.stats.num_queries += 1
        self.stats.num_query_tokens += num_query_tokens
        self.stats.num_hit_tokens += len(match.pages) * self.page_size
        self.stats.miss_reasons[match.reason.split(":")[0]] += 1
