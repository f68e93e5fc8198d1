"""SnapshotStore: recurrent-state snapshots keyed by the KV prefix hash chain, under a memory
budget with LRU eviction."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from vibekit.ssm.pool import StateSnapshot

# Evicted keys remembered for diagnostics ("a snapshot existed but was evicted").
_MAX_EVICTED_KEYS = 4096


@dataclass(slots=True)
class SnapshotStats:
    num_stored: int = 0
    num_evicted: int = 0
    num_hits: int = 0


class SnapshotStore:
    """`hash -> StateSnapshot`, where hash is the prefix hash of the page the snapshot ends
    (vibekit.kvcache.hashing): the state after exactly the tokens that hash covers.

    Holds at most `max_bytes`; storing past it evicts the least recently used snapshots.

    Example:
        >>> store = SnapshotStore(max_bytes=1 << 20, snapshot_bytes=1024)
        >>> store.get(123) is None
        True
    """

    def __init__(self, max_bytes: int, snapshot_bytes: int) -> None:
        if max_bytes < snapshot_bytes:
            raise ValueError(
                f"snapshot_memory_bytes ({max_bytes}) holds no state snapshot: one takes "
                f"{snapshot_bytes} bytes; raise it to at least {snapshot_bytes} or set "
                "snapshot_policy='none'"
            )
        self.max_bytes = max_bytes
        self.snapshot_bytes = snapshot_bytes
        self.nbytes = 0
        self.stats = SnapshotStats()
        self._snapshots: OrderedDict[int, StateSnapshot] = OrderedDict()
        self._evicted: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._snapshots)

    def __contains__(self, key: int) -> bool:
        return key in self._snapshots

    def was_evicted(self, key: int) -> bool:
        return key in self._evicted

    def get(self, key: int) -> StateSnapshot | None:
        """The snapshot under `key` (marked most recently used), or None."""
        snap = self._snapshots.get(key)
        if snap is not None:
            self._snapshots.move_to_end(key)
            self.stats.num_hits += 1
        return snap

    def put(self, key: int, snap: StateSnapshot) -> None:
        """Store (or refresh) a snapshot, evicting LRU ones to stay within `max_bytes`."""
        if key in self._snapshots:
            self._snapshots.move_to_end(key)
            return
        while self._snapshots and self.nbytes + snap.nbytes > self.max_bytes:
            self.evict_one()
        self._snapshots[key] = snap
        self.nbytes += snap.nbytes
        self.stats.num_stored += 1
        self._evicted.pop(key, None)

    def evict_one(self) -> None:
        key, snap = self._snapshots.popitem(last=False)
        self.nbytes -= snap.nbytes
        self.stats.num_evicted += 1
        self._evicted[key] = None
        if len(self._evicted) > _MAX_EVICTED_KEYS:
            self._evicted.popitem(last=False)

    def clear(self) -> None:
        while self._snapshots:
            self.evict_one()
