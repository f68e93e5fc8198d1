from __future__ import annotations

import pytest

from vibekit.kvcache import PagePool


def test_allocate_hands_out_distinct_pages_until_exhausted():
    pool = PagePool(num_pages=4, page_size=16)
    pages = pool.allocate(3) + pool.allocate(1)
    assert sorted(pages) == [0, 1, 2, 3]  # page 0 is an ordinary page
    assert pool.num_free_pages == 0 and pool.num_used_pages == 4
    assert not pool.can_allocate(1)
    with pytest.raises(AssertionError):
        pool.allocate(1)


def test_can_allocate_has_no_side_effects():
    pool = PagePool(num_pages=3, page_size=4)
    assert pool.can_allocate(3) and not pool.can_allocate(4) and not pool.can_allocate(-1)
    assert pool.num_free_pages == 3 and pool.num_used_pages == 0


def test_shared_page_is_freed_only_after_last_reference():
    pool = PagePool(num_pages=2, page_size=4)
    (page,) = pool.allocate(1)
    pool.incref(page)
    assert pool.ref_count(page) == 2
    pool.free([page])
    assert pool.ref_count(page) == 1 and pool.num_free_pages == 1
    pool.free([page])
    assert pool.ref_count(page) == 0 and pool.num_free_pages == 2


def test_double_free_is_rejected():
    pool = PagePool(num_pages=2, page_size=4)
    pages = pool.allocate(1)
    pool.free(pages)
    with pytest.raises(AssertionError):
        pool.free(pages)


def test_incref_of_an_uncached_free_page_is_rejected():
    pool = PagePool(num_pages=2, page_size=4)
    with pytest.raises(AssertionError):
        pool.incref(0)


def test_freed_hashed_page_stays_matchable_until_evicted():
    pool = PagePool(num_pages=2, page_size=4)
    hashed, plain = pool.allocate(2)
    assert pool.register(hashed, 111)
    pool.free([hashed, plain])
    assert pool.lookup(111) == hashed
    assert pool.num_free_pages == 2 and pool.num_evictable_pages == 1
    assert pool.allocate(1) == [plain]  # never-cached pages go first
    assert pool.lookup(111) == hashed
    assert pool.allocate(1) == [hashed]  # now evicted
    assert pool.lookup(111) is None and pool.page_hash(hashed) is None


def test_eviction_takes_the_least_recently_freed_page_first():
    pool = PagePool(num_pages=3, page_size=4)
    pages = pool.allocate(3)
    for page in pages:
        pool.register(page, 1000 + page)
    pool.free([pages[2]])
    pool.free([pages[0]])
    pool.free([pages[1]])
    assert pool.allocate(2) == [pages[2], pages[0]]
    assert pool.lookup(1000 + pages[1]) == pages[1]


def test_incref_revives_a_cached_page_out_of_the_lru():
    pool = PagePool(num_pages=2, page_size=4)
    a, b = pool.allocate(2)
    pool.register(a, 1)
    pool.register(b, 2)
    pool.free([a, b])
    pool.incref(a)
    assert pool.ref_count(a) == 1 and pool.num_free_pages == 1 and pool.num_used_pages == 1
    assert pool.allocate(1) == [b]
    assert pool.lookup(1) == a and pool.lookup(2) is None


def test_register_keeps_the_existing_mapping_for_a_duplicate_hash():
    pool = PagePool(num_pages=2, page_size=4)
    a, b = pool.allocate(2)
    assert pool.register(a, 7)
    assert not pool.register(b, 7)
    assert pool.lookup(7) == a and pool.page_hash(b) is None
    pool.free([b])
    assert pool.num_evictable_pages == 0  # the unmapped duplicate is plainly free


def test_register_requires_a_page_in_use():
    pool = PagePool(num_pages=2, page_size=4)
    with pytest.raises(AssertionError):
        pool.register(0, 7)


def test_unregister_of_an_idle_cached_page_makes_it_plainly_free():
    pool = PagePool(num_pages=2, page_size=4)
    (page,) = pool.allocate(1)
    pool.register(page, 5)
    pool.free([page])
    pool.unregister(page)
    assert pool.lookup(5) is None and pool.num_evictable_pages == 0 and pool.num_free_pages == 2
    pool.unregister(page)  # no hash: no-op


def test_reset_prefix_cache_drops_idle_hashes_only():
    pool = PagePool(num_pages=3, page_size=4)
    idle, busy = pool.allocate(2)
    pool.register(idle, 1)
    pool.register(busy, 2)
    pool.free([idle])
    assert pool.num_cached_pages == 2
    assert pool.reset_prefix_cache() == 1
    assert pool.lookup(1) is None and pool.lookup(2) == busy
    assert pool.num_cached_pages == 1 and pool.num_free_pages == 2


def test_out_of_range_page_is_rejected():
    pool = PagePool(num_pages=2, page_size=4)
    with pytest.raises(IndexError, match="out of range"):
        pool.ref_count(2)
    with pytest.raises(ValueError, match="num_pages"):
        PagePool(num_pages=0, page_size=4)
