from __future__ import annotations

import hashlib
import struct

from hypothesis import given
from hypothesis import strategies as st

from vibekit.kvcache import hash_full_pages, hash_page

token_lists = st.lists(st.integers(0, 2**31 - 1), max_size=8)


def test_hash_is_blake2b_over_parent_tokens_and_key():
    parent = hash_page(None, [1, 2, 3, 4])
    payload = (
        b"\x01" + parent.to_bytes(8, "little")
        + struct.pack("<q4q", 4, 5, 6, 7, 8)
        + b"s" + b"lora-a"
    )
    expected = int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")
    assert hash_page(parent, [5, 6, 7, 8], "lora-a") == expected


def test_hash_is_stable_across_processes():
    # Pinned values: a change here invalidates every persisted or shared prefix cache.
    assert hash_page(None, [1, 2, 3, 4]) == 10883889420682649589
    assert hash_page(None, [], b"") == 7362323164094428976


@given(token_lists, st.none() | st.integers(0, 2**64 - 1), st.none() | st.text(max_size=4))
def test_same_input_gives_same_hash(token_ids, parent, extra_key):
    assert hash_page(parent, token_ids, extra_key) == hash_page(parent, list(token_ids), extra_key)
    assert 0 <= hash_page(parent, token_ids, extra_key) < 2**64


@given(st.lists(st.tuples(token_lists.map(tuple), st.none() | st.sampled_from(["a", "b", b"a"])),
                min_size=2, max_size=6, unique=True))
def test_different_chains_do_not_collide(chains):
    hashes = {hash_page(None, tokens, key) for tokens, key in chains}
    assert len(hashes) == len(chains)


def test_parent_hash_changes_the_page_hash():
    assert hash_page(None, [5, 6]) != hash_page(hash_page(None, [1, 2]), [5, 6])
    assert hash_page(None, [5, 6]) != hash_page(0, [5, 6])


def test_extra_key_separates_chains():
    plain = hash_page(None, [1, 2])
    assert len({plain, hash_page(None, [1, 2], "a"), hash_page(None, [1, 2], b"a"),
                hash_page(None, [1, 2], "b")}) == 4


def test_token_boundaries_and_extra_key_cannot_run_together():
    assert hash_page(None, [1, 2], b"") != hash_page(None, [1, 2])
    assert hash_page(None, [1]) != hash_page(None, [1, 0])


def test_full_pages_are_chained_and_partial_tail_is_skipped():
    token_ids = list(range(10))
    h0 = hash_page(None, [0, 1, 2, 3])
    h1 = hash_page(h0, [4, 5, 6, 7])
    assert hash_full_pages(token_ids, page_size=4) == [h0, h1]
    assert hash_full_pages(token_ids[4:8], 4, parent_hash=h0) == [h1]
    assert hash_full_pages([1, 2, 3], page_size=4) == []


@given(st.lists(st.integers(0, 5), max_size=12), st.integers(1, 4))
def test_chain_extends_by_continuing_from_the_last_hash(token_ids, page_size):
    full = hash_full_pages(token_ids, page_size)
    cut = (len(full) // 2) * page_size
    head = hash_full_pages(token_ids[:cut], page_size)
    tail = hash_full_pages(token_ids[cut:], page_size, parent_hash=head[-1] if head else None)
    assert head + tail == full
