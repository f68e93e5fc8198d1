"""Units of vibekit.ssm: snapshot store LRU under a budget, snapshot policy points, the prefix
match against snapshots, and slot snapshot/restore."""

from __future__ import annotations

import pytest
import torch

from vibekit.ssm import (
    HybridPrefixCache,
    SnapshotPolicy,
    SnapshotStore,
    StatePool,
    StateSpec,
)

SPEC = StateSpec(2, (6, 3), (2, 4, 4))


def _pool() -> StatePool:
    return StatePool(SPEC, num_slots=3, dtype=torch.float32)


def test_restore_brings_back_the_snapshotted_state_exactly():
    pool = _pool()
    slot = pool.allocate()
    for conv, ssm in pool.caches:
        conv[slot].normal_()
        ssm[slot].normal_()
    snap = pool.snapshot(slot)
    before = [(c[slot].clone(), s[slot].clone()) for c, s in pool.caches]
    for conv, ssm in pool.caches:
        conv[slot].add_(1)
        ssm[slot].mul_(3)
    pool.restore(slot, snap)
    for (c, s), (c0, s0) in zip(pool.caches, before):
        assert torch.equal(c[slot], c0) and torch.equal(s[slot], s0)
    assert snap.nbytes == pool.bytes_per_slot == SPEC.bytes_per_slot(torch.float32)


def test_allocated_slots_start_from_zero_state():
    pool = _pool()
    slot = pool.allocate()
    pool.caches[0][1][slot].fill_(5.0)
    pool.free(slot)
    slot = pool.allocate(), pool.allocate(), pool.allocate()
    assert all(float(s[i].abs().sum()) == 0 for _, s in pool.caches for i in slot)
    assert not pool.can_allocate()


def test_store_evicts_least_recently_used_within_budget():
    pool = _pool()
    snap = pool.snapshot(0)
    store = SnapshotStore(max_bytes=2 * snap.nbytes, snapshot_bytes=snap.nbytes)
    store.put(1, pool.snapshot(0))
    store.put(2, pool.snapshot(0))
    assert store.get(1) is not None  # 1 is now the most recently used
    store.put(3, pool.snapshot(0))
    assert 2 not in store and 1 in store and 3 in store
    assert store.was_evicted(2) and store.nbytes == 2 * snap.nbytes
    assert store.stats.num_evicted == 1


def test_store_budget_below_one_snapshot_is_refused():
    with pytest.raises(ValueError, match="holds no state snapshot"):
        SnapshotStore(max_bytes=10, snapshot_bytes=100)


@pytest.mark.parametrize("policy, expected", [
    (SnapshotPolicy(last_page=True, divergence=False), [36]),
    (SnapshotPolicy(last_page=False, divergence=True), [16]),
    (SnapshotPolicy(last_page=False, divergence=False, every_n_pages=3), [12, 24, 36]),
    (SnapshotPolicy(), [16, 36]),
])
def test_policy_points_are_page_aligned_and_below_the_last_token(policy, expected):
    # prompt of 40 tokens, pages of 4: the last token's page (36..39) is never snapshotted past
    # 36, since a later identical prompt must still compute its last token.
    assert policy.points(40, 4, 0, divergence_pages=[4]) == expected
    assert policy.points(40, 4, 16, divergence_pages=[4]) == [p for p in expected if p > 16]


def test_match_keeps_the_longest_prefix_with_a_snapshot_and_says_why():
    pool = _pool()
    snap = pool.snapshot(0)
    store = SnapshotStore(max_bytes=10 * snap.nbytes, snapshot_bytes=snap.nbytes)
    cache = HybridPrefixCache(store, page_size=4, policy=SnapshotPolicy())
    pages, hashes = [7, 8, 9, 10], [101, 102, 103, 104]
    assert cache.match(pages, hashes).reason.startswith("miss: 4 KV pages cached but no state")
    assert cache.match([], []).reason == "miss: no KV page of the prompt is cached"
    store.put(102, snap)
    m = cache.match(pages, hashes)
    assert (m.pages, m.hashes, m.snapshot) == ([7, 8], [101, 102], snap)
    assert m.reason.startswith("partial hit: snapshot at token 8 of 16")
    store.put(104, snap)
    assert cache.match(pages, hashes).reason == "hit"


def test_shared_pages_counts_prefix_shared_with_other_live_prompts():
    cache = HybridPrefixCache(None, page_size=4, policy=SnapshotPolicy())
    cache.track("a", [1, 2, 3, 4])
    cache.track("b", [1, 2, 9])
    assert cache.shared_pages("a", [1, 2, 3, 4]) == 2
    cache.untrack("b")
    assert cache.shared_pages("a", [1, 2, 3, 4]) == 0
