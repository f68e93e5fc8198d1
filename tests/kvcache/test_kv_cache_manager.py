from __future__ import annotations

import pytest

from vibekit.kvcache import KVCacheManager, PageTable, hash_full_pages

PS = 4


def admit(manager: KVCacheManager, token_ids: list[int], extra_key=None) -> PageTable:
    """Admit a prompt the way the scheduler does: match, check, allocate, (forward), commit."""
    table = manager.new_table()
    pages, hashes = manager.match_prefix(token_ids[:-1], extra_key)
    num_new = len(token_ids) - len(pages) * PS
    assert manager.can_allocate(table, num_new, pages)
    assert manager.allocate(table, num_new, pages, hashes) == []
    manager.commit(table, token_ids, len(token_ids), extra_key)
    return table


def test_page_table_maps_positions_to_slots():
    table = PageTable(page_size=4, pages=[7, 0, 3], num_tokens=9)
    assert [table.slot(p) for p in (0, 3, 4, 8)] == [28, 31, 0, 12]
    assert table.slots(3, 6) == [31, 0, 1]
    assert table.num_pages == 3 and table.capacity == 12
    with pytest.raises(IndexError, match="not reserved"):
        table.slot(9)


def test_allocate_reserves_pages_for_new_tokens():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    table = manager.new_table()
    assert manager.num_pages_needed(table, 5) == 2
    manager.allocate(table, 5)
    assert table.num_tokens == 5 and table.num_pages == 2
    assert manager.num_pages_needed(table, 3) == 0
    manager.allocate(table, 3)
    assert table.num_pages == 2 and manager.num_pages_needed(table, 1) == 1
    assert manager.usage() == 2 / 8


def test_can_allocate_refuses_beyond_free_pages():
    manager = KVCacheManager(num_pages=2, page_size=PS)
    table = manager.new_table()
    assert manager.can_allocate(table, 8) and not manager.can_allocate(table, 9)
    with pytest.raises(AssertionError, match="cannot reserve"):
        manager.allocate(table, 9)
    assert table.num_tokens == 0 and manager.num_free_pages == 2


def test_commit_registers_only_full_pages():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    token_ids = list(range(10))
    table = manager.new_table()
    manager.allocate(table, 10)
    manager.commit(table, token_ids, 6)
    assert table.page_hashes == hash_full_pages(token_ids[:4], PS)
    assert manager.pool.num_cached_pages == 1
    manager.commit(table, token_ids, 10)
    assert table.page_hashes == hash_full_pages(token_ids, PS)
    assert [manager.pool.page_hash(p) for p in table.pages] == table.page_hashes + [None]


def test_commit_rejects_unreserved_tokens():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    table = manager.new_table()
    manager.allocate(table, 3)
    with pytest.raises(ValueError, match="reserved"):
        manager.commit(table, [1, 2, 3, 4], 4)


def test_match_prefix_finds_the_longest_run_of_cached_full_pages():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    first = admit(manager, list(range(14)))
    pages, hashes = manager.match_prefix(list(range(12)) + [99, 99, 99, 99, 99])
    assert pages == first.pages[:3] and hashes == first.page_hashes[:3]
    assert manager.match_prefix([0, 1, 2])[0] == []  # no full page


def test_match_prefix_stops_at_the_first_miss():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    table = admit(manager, list(range(12)))
    manager.pool.unregister(table.pages[1])
    assert manager.match_prefix(list(range(12)))[0] == table.pages[:1]


def test_match_prefix_has_no_side_effects():
    manager = KVCacheManager(num_pages=4, page_size=PS)
    table = admit(manager, list(range(8)))
    head = table.pages[0]
    manager.free(table)  # LRU: tail page, then head page
    before = (manager.num_free_pages, [manager.pool.ref_count(p) for p in range(4)])
    assert len(manager.match_prefix(list(range(8)))[0]) == 2
    assert (manager.num_free_pages, [manager.pool.ref_count(p) for p in range(4)]) == before
    manager.allocate(manager.new_table(), 12)  # 2 free pages, then evicts the LRU tail page
    assert manager.match_prefix(list(range(8)))[0] == [head]


def test_extra_key_separates_prefix_chains():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    admit(manager, list(range(9)), extra_key="lora-a")
    assert manager.match_prefix(list(range(8)))[0] == []
    assert manager.match_prefix(list(range(8)), "lora-b")[0] == []
    assert len(manager.match_prefix(list(range(8)), "lora-a")[0]) == 2


def test_prefix_caching_off_matches_and_registers_nothing():
    manager = KVCacheManager(num_pages=8, page_size=PS, enable_prefix_caching=False)
    table = admit(manager, list(range(9)))
    assert table.page_hashes == [] and manager.pool.num_cached_pages == 0
    assert manager.match_prefix(list(range(9))) == ([], [])


def test_second_request_adopts_the_cached_prefix():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    prompt = list(range(10))
    first = admit(manager, prompt)
    second = admit(manager, prompt[:8] + [50, 51, 52])
    assert second.pages[:2] == first.pages[:2] and second.pages[2] != first.pages[2]
    assert [manager.pool.ref_count(p) for p in first.pages] == [2, 2, 1]
    assert second.page_hashes == first.page_hashes and second.num_tokens == 11
    assert manager.stats.num_hit_tokens == 8 and manager.stats.hit_rate == 8 / 21


def test_adopting_idle_cached_pages_counts_against_free_pages():
    manager = KVCacheManager(num_pages=4, page_size=PS)
    manager.free(admit(manager, list(range(9))))  # pages 0, 1 cached and idle
    table = manager.new_table()
    pages, _ = manager.match_prefix(list(range(8)))
    assert manager.num_free_pages == 4
    assert manager.num_pages_needed(table, 8, pages) == 4
    assert manager.can_allocate(table, 8, pages)
    assert not manager.can_allocate(table, 9, pages)


def test_stale_cached_pages_are_rejected():
    manager = KVCacheManager(num_pages=2, page_size=PS)
    manager.free(admit(manager, list(range(5))))
    pages, hashes = manager.match_prefix(list(range(4)))
    manager.allocate(manager.new_table(), 8)  # evicts the matched page
    with pytest.raises(AssertionError):
        manager.allocate(manager.new_table(), 0, pages, hashes)


def test_cached_pages_are_only_adopted_by_an_empty_table():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    admit(manager, list(range(5)))
    pages, _ = manager.match_prefix(list(range(4)))
    table = manager.new_table()
    manager.allocate(table, 1)
    with pytest.raises(ValueError, match="empty table"):
        manager.can_allocate(table, 1, pages)


def test_trim_frees_pages_left_empty():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    table = manager.new_table()
    manager.allocate(table, 9)
    dropped = table.pages[2]
    manager.trim(table, 2)
    assert table.num_tokens == 7 and table.num_pages == 2
    assert manager.pool.ref_count(dropped) == 0 and manager.num_free_pages == 6
    with pytest.raises(ValueError, match="cannot trim"):
        manager.trim(table, 8)


def test_trim_unregisters_a_now_partial_page_it_owns_alone():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    token_ids = list(range(8))
    table = admit(manager, token_ids)
    last = table.pages[1]
    manager.trim(table, 1)
    assert manager.pool.page_hash(last) is None
    assert table.page_hashes == hash_full_pages(token_ids[:4], PS)
    assert manager.match_prefix(token_ids)[0] == table.pages[:1]


def test_trim_keeps_the_hash_of_a_shared_page_and_the_next_append_copies_it():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    token_ids = list(range(8))
    owner = admit(manager, token_ids)
    drafter = manager.fork(owner)
    shared = drafter.pages[1]
    manager.trim(drafter, 1)
    assert manager.pool.page_hash(shared) == owner.page_hashes[1]
    assert drafter.page_hashes == owner.page_hashes[:1]
    assert manager.num_pages_needed(drafter, 1) == 1
    assert manager.allocate(drafter, 1) == [(shared, drafter.pages[1])]
    assert drafter.pages[1] != shared and manager.pool.ref_count(shared) == 1
    assert manager.match_prefix(token_ids)[0] == owner.pages


def test_append_after_the_sharer_left_drops_the_stale_hash_instead_of_copying():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    owner = admit(manager, list(range(8)))
    drafter = manager.fork(owner)
    shared = drafter.pages[1]
    manager.trim(drafter, 1)
    manager.free(owner)
    assert manager.allocate(drafter, 1) == []
    assert drafter.pages[1] == shared and manager.pool.page_hash(shared) is None


def test_fork_then_append_copies_the_shared_partial_page():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    parent = manager.new_table()
    manager.allocate(parent, 6)
    child = manager.fork(parent)
    assert child.pages == parent.pages and child.num_tokens == 6
    assert all(manager.pool.ref_count(p) == 2 for p in parent.pages)
    shared = parent.pages[1]
    assert manager.num_pages_needed(child, 1) == 1
    copies = manager.allocate(child, 1)
    assert copies == [(shared, child.pages[1])] and child.pages[0] == parent.pages[0]
    assert manager.pool.ref_count(shared) == 1
    assert manager.allocate(parent, 1) == []  # parent is now the only user of its page
    assert parent.pages[1] == shared


def test_appending_after_a_shared_full_page_needs_no_copy():
    manager = KVCacheManager(num_pages=8, page_size=PS)
    parent = manager.new_table()
    manager.allocate(parent, 4)
    child = manager.fork(parent)
    assert manager.allocate(child, 1) == [] and child.pages[0] == parent.pages[0]


def test_free_releases_pages_tail_first_so_the_prefix_head_survives_longest():
    manager = KVCacheManager(num_pages=3, page_size=PS)
    token_ids = list(range(12))
    table = admit(manager, token_ids)
    pages = list(table.pages)
    manager.free(table)
    assert table.pages == [] and table.num_tokens == 0 and table.page_hashes == []
    assert manager.num_free_pages == 3 and manager.usage() == 0.0
    assert manager.pool.allocate(1) == [pages[2]]
    assert manager.match_prefix(token_ids)[0] == pages[:2]
