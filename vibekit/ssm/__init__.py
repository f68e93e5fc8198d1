"""Recurrent-state slots for Mamba2 / gated-delta layers, prefix snapshots keyed by the KV hash
chain, and HybridCache, the cache protocol that keeps KV pages and state snapshots in step."""

from vibekit.ssm.cache import HybridCache
from vibekit.ssm.pool import StatePool, StateSnapshot
from vibekit.ssm.prefix_cache import HybridPrefixCache, PrefixMatch, SnapshotPolicy
from vibekit.ssm.snapshots import SnapshotStore
from vibekit.ssm.spec import StateSpec

__all__ = [
    "HybridCache", "HybridPrefixCache", "PrefixMatch", "SnapshotPolicy", "SnapshotStore",
    "StatePool", "StateSnapshot", "StateSpec",
]
