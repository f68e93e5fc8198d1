"""The prefix router's hashing and bounded-load rules, without Ray."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibekit.serve.routing import HashRing, PrefixRouter, bounded_load_capacity, route_key

PAGE = 4


def test_route_key_covers_exactly_the_first_full_pages():
    base = list(range(100, 120))  # 5 pages of 4
    key = route_key(base, PAGE, num_prefix_pages=2)
    assert route_key(base[:8] + [7, 7, 7], PAGE, 2) == key  # differs after 2 pages: same key
    assert route_key(base[:7] + [0] + base[8:], PAGE, 2) != key  # differs in page 2
    assert route_key([1] + base[1:], PAGE, 2) != key  # differs in page 1
    # Fewer full pages than num_prefix_pages: the key covers the full ones, not the tail.
    assert route_key(base[:6], PAGE, 2) == route_key(base[:4], PAGE, 2) != key
    assert route_key(base[:3], PAGE, 2) is None  # nothing a replica caches
    assert route_key([], PAGE, 2) is None


def test_route_key_refuses_non_positive_sizes():
    with pytest.raises(ValueError, match="page_size"):
        route_key([1, 2], 0, 1)
    with pytest.raises(ValueError, match="num_prefix_pages"):
        PrefixRouter(page_size=16, num_prefix_pages=0)
    with pytest.raises(ValueError, match="load_factor"):
        PrefixRouter(load_factor=0.9)


def test_ring_spreads_keys_evenly_and_moves_only_the_lost_replicas_keys():
    rng = random.Random(0)
    keys = [rng.getrandbits(64) for _ in range(4000)]
    ids = ["r0", "r1", "r2", "r3"]
    ring = HashRing(ids, num_virtual_nodes=64)
    owners = {k: next(ring.walk(k)) for k in keys}
    shares = [sum(o == rid for o in owners.values()) / len(keys) for rid in ids]
    assert all(0.15 < s < 0.35 for s in shares), shares
    smaller = HashRing(["r0", "r1", "r3"], num_virtual_nodes=64)
    for k in keys:
        if owners[k] != "r2":
            assert next(smaller.walk(k)) == owners[k]  # consistent: untouched keys stay
    assert sorted(ring.walk(keys[0])) == ids  # a walk visits every replica once


def test_idle_replicas_follow_the_key_and_keyless_requests_go_least_loaded():
    router = PrefixRouter(page_size=PAGE, num_prefix_pages=2)
    key = router.route_key(list(range(8)))
    idle = {"a": 0, "b": 0, "c": 0}
    walk = list(router.ring(list(idle)).walk(key))
    assert router.rank(key, idle)[0] == walk[0]
    # Two in flight on three replicas: the bound is ceil(1.25 * 3 / 3) = 2, the owner keeps it.
    assert router.rank(key, {**idle, walk[0]: 1, walk[2]: 1})[0] == walk[0]
    # One in flight: the bound is ceil(1.25 * 2 / 3) = 1, the owner is full, the next one takes it.
    assert router.rank(key, {**idle, walk[0]: 1})[0] == walk[1]
    assert router.rank(None, {"a": 3, "b": 1, "c": 2}) == ["b", "c", "a"]
    assert sorted(router.rank(key, {"a": 3, "b": 1, "c": 2})) == ["a", "b", "c"]


def test_a_hot_key_spills_to_the_next_replica_once_past_the_bound():
    router = PrefixRouter(page_size=PAGE, num_prefix_pages=1, load_factor=1.25)
    key = router.route_key([1, 2, 3, 4])
    loads = {"a": 0, "b": 0, "c": 0, "d": 0}
    walk = list(router.ring(list(loads)).walk(key))
    for _ in range(40):  # forty requests with one key, all still running
        loads[router.rank(key, loads)[0]] += 1
    # Every replica ends at most ceil(1.25 * 40 / 4) = 13; the owner fills first.
    assert max(loads.values()) <= math.ceil(1.25 * 40 / 4)
    assert loads[walk[0]] == max(loads.values())
    assert sum(loads.values()) == 40


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=200),
       st.integers(1, 6), st.sampled_from([1.0, 1.1, 1.25, 2.0]))
def test_no_replica_exceeds_the_bounded_load_capacity(events, num_replicas, load_factor):
    """Arrivals (key among 6) and departures in any order: a request is only ever placed on a
    replica that holds fewer than ceil(load_factor * (total + 1) / num_replicas) requests
    (Mirrokni et al.); with arrivals only, no replica ever exceeds that bound. (Departures can
    lower the bound below a replica's load; the router never adds to such a replica.)"""
    router = PrefixRouter(page_size=PAGE, num_prefix_pages=1, load_factor=load_factor)
    loads = {f"r{i}": 0 for i in range(num_replicas)}
    for arrive, k in events:
        if arrive or not any(loads.values()):
            chosen = router.rank(router.route_key([k] * PAGE), loads)[0]
            capacity = bounded_load_capacity(sum(loads.values()), num_replicas, load_factor)
            assert loads[chosen] < capacity
            loads[chosen] += 1
            if all(arrive for arrive, _ in events):
                assert max(loads.values()) <= capacity
        else:
            busy = sorted(r for r in loads if loads[r])
            loads[busy[k % len(busy)]] -= 1
