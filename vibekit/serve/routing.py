"""Prefix-aware replica choice: consistent hashing with bounded loads over a hash of the
prompt's first KV pages, least-loaded when a prompt has no full page. Pure Python (no Ray):
vibekit.serve.ray wraps it in a Ray Serve request router.

Each replica caches the KV pages of the prompts it served (vibekit's prefix cache hashes full
pages), so two requests whose first pages agree reuse each other's pages only if they land on
the same replica. The route key is a hash of the first `num_prefix_pages` full pages of the
token ids; a consistent-hash ring maps keys to replicas, so adding or losing a replica moves only
the keys of that replica. A hot key (every request shares one system prompt) would put
everything on one replica, so the ring walk is bounded (Mirrokni, Thorup, Zadimoghaddam,
"Consistent Hashing with Bounded Loads", 2016): a replica takes a new request only while its
load is below ceil(load_factor * (total load + 1) / num_replicas); otherwise the request goes
to the next replica clockwise. Load is the number of requests in flight on the replica.

    router = PrefixRouter(page_size=16, num_prefix_pages=4, load_factor=1.25)
    key = router.route_key(token_ids)        # None: shorter than one page
    order = router.rank(key, {"r0": 3, "r1": 1})   # most preferred replica first
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Hashable, Iterator, Mapping, Sequence

__all__ = ["HashRing", "PrefixRouter", "bounded_load_capacity", "route_key"]


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def route_key(token_ids: Sequence[int], page_size: int, num_prefix_pages: int) -> int | None:
    """A 64-bit hash of the first min(num_prefix_pages, len // page_size) full pages of
    `token_ids`, or None when the prompt is shorter than one page (nothing a replica could
    cache). Two prompts get the same key exactly when those pages hold the same tokens."""
    if page_size <= 0 or num_prefix_pages <= 0:
        raise ValueError(f"page_size ({page_size}) and num_prefix_pages ({num_prefix_pages}) "
                         "must be positive")
    num_pages = min(num_prefix_pages, len(token_ids) // page_size)
    if num_pages == 0:
        return None
    prefix = token_ids[:num_pages * page_size]
    return _hash64(b"".join(int(t).to_bytes(4, "little", signed=False) for t in prefix))


def bounded_load_capacity(total_load: int, num_replicas: int, load_factor: float) -> int:
    """The most requests in flight a replica may hold before a new one is placed:
    ceil(load_factor * (total_load + 1) / num_replicas), the +1 being the request placed. At
    least one replica is always below it (the loads average (total_load + 1) / num_replicas
    after placement and load_factor >= 1)."""
    return math.ceil(load_factor * (total_load + 1) / num_replicas)


class HashRing:
    """A consistent-hash ring with `num_virtual_nodes` points per replica (so the key space
    splits evenly). Replica ids are any hashable with a stable str()."""

    def __init__(self, replica_ids: Sequence[Hashable], num_virtual_nodes: int = 64) -> None:
        if not replica_ids:
            raise ValueError("a hash ring needs at least one replica")
        if num_virtual_nodes <= 0:
            raise ValueError(f"num_virtual_nodes={num_virtual_nodes} must be positive")
        points = sorted((_hash64(f"{rid}#{v}".encode()), i)
                        for i, rid in enumerate(replica_ids) for v in range(num_virtual_nodes))
        self.replica_ids = list(replica_ids)
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]

    def walk(self, key: int) -> Iterator[Hashable]:
        """Every replica once, clockwise from `key`: the owner of the key first."""
        seen: set[int] = set()
        start = bisect.bisect_left(self._hashes, key)
        num_points = len(self._hashes)
        for step in range(num_points):
            owner = self._owners[(start + step) % num_points]
            if owner not in seen:
                seen.add(owner)
                yield self.replica_ids[owner]
                if len(seen) == len(self.replica_ids):
                    return


class PrefixRouter:
    """Ranks replicas for a request from its route key and the replicas' loads.

    page_size: the replicas' KV page size (the key hashes whole pages). num_prefix_pages: how
    many leading pages the key covers (a longer key separates prompts that share a shorter
    head; a shorter one groups them). load_factor: the bound (>= 1; 1.25 lets a replica run 25%
    above the mean load before its keys spill to the next replica clockwise)."""

    def __init__(self, page_size: int = 16, num_prefix_pages: int = 4,
                 load_factor: float = 1.25, num_virtual_nodes: int = 64) -> None:
        if not load_factor >= 1.0:
            raise ValueError(f"load_factor={load_factor} must be >= 1 (1 = perfectly even)")
        route_key([], page_size, num_prefix_pages)  # validates both
        self.page_size = page_size
        self.num_prefix_pages = num_prefix_pages
        self.load_factor = load_factor
        self.num_virtual_nodes = num_virtual_nodes
        self._ring: HashRing | None = None

    def route_key(self, token_ids: Sequence[int]) -> int | None:
        return route_key(token_ids, self.page_size, self.num_prefix_pages)

    def ring(self, replica_ids: Sequence[Hashable]) -> HashRing:
        """The ring over these replicas (rebuilt only when the set changes)."""
        ids = sorted(replica_ids, key=str)
        if self._ring is None or self._ring.replica_ids != ids:
            self._ring = HashRing(ids, self.num_virtual_nodes)
        return self._ring

    def rank(self, key: int | None, loads: Mapping[Hashable, int]) -> list[Hashable]:
        """Every replica in `loads` (id -> requests in flight), most preferred first.

        With a key: the first replica clockwise from it whose load is below the bounded-load
        capacity, then the rest by load (fallbacks if the first turns out full or dead).
        Without a key (a prompt shorter than one page): least-loaded first (ties by id)."""
        if not loads:
            return []
        by_load = sorted(loads, key=lambda rid: (loads[rid], str(rid)))
        if key is None:
            return by_load
        capacity = bounded_load_capacity(sum(loads.values()), len(loads), self.load_factor)
        first = next(rid for rid in self.ring(list(loads)).walk(key) if loads[rid] < capacity)
        return [first, *(rid for rid in by_load if rid != first)]
