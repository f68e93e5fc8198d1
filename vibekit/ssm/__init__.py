"""Recurrent-state slots for Mamba2 / gated-delta layers, prefix snapshots keyed by the KV hash
chain, and the hybrid prefix cache that keeps KV pages and state snapshots in step."""

from vibekit.ssm.manager import (
    HybridStateManager,
    make_state_manager,
    model_state_spec,
    state_pool_bytes,
)
from vibekit.ssm.pool import StatePool, StateSnapshot
from vibekit.ssm.prefix_cache import HybridPrefixCache, PrefixMatch, SnapshotPolicy
from vibekit.ssm.snapshots import SnapshotStore
from vibekit.ssm.spec import StateSpec

__all__ = [
    "HybridPrefixCache", "HybridStateManager", "PrefixMatch", "SnapshotPolicy", "SnapshotStore",
    "StatePool", "StateSnapshot", "StateSpec", "make_state_manager", "model_state_spec",
    "state_pool_bytes",
]
