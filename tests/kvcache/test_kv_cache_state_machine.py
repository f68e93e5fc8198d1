"""Random allocate / commit / trim / fork / free sequences against a simulated KV store.

The machine writes each token id into its KV slot the way a forward would, performs the copies
`allocate` returns, and checks after every step that every sequence still reads back its own
tokens, every cached page holds the tokens its hash names, and the refcounts add up.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vibekit.kvcache import KVCacheManager, PageTable, hash_full_pages

tokens = st.lists(st.integers(0, 2), min_size=1, max_size=9)


@dataclass
class Seq:
    table: PageTable
    token_ids: list[int]
    extra_key: str | None


class KVCacheMachine(RuleBasedStateMachine):
    @initialize(page_size=st.integers(1, 4), num_pages=st.integers(1, 12), prefix=st.booleans())
    def setup(self, page_size, num_pages, prefix):
        self.manager = KVCacheManager(num_pages, page_size, enable_prefix_caching=prefix)
        self.page_size = page_size
        self.seqs: list[Seq] = []
        self.kv: dict[int, int] = {}  # slot -> token id written there
        self.page_contents: dict[int, list[int]] = {}  # hash -> tokens of the page it names

    # -- helpers ------------------------------------------------------------------------------

    def reserve(self, seq, num_new_tokens, cached_pages=(), cached_hashes=()) -> bool:
        needed = self.manager.num_pages_needed(seq.table, num_new_tokens, cached_pages)
        free_before = self.manager.num_free_pages
        if not self.manager.can_allocate(seq.table, num_new_tokens, cached_pages):
            assert needed > free_before
            return False
        copies = self.manager.allocate(seq.table, num_new_tokens, cached_pages, cached_hashes)
        assert free_before - self.manager.num_free_pages == needed
        ps = self.page_size
        for src, dst in copies:
            for offset in range(ps):
                if src * ps + offset in self.kv:
                    self.kv[dst * ps + offset] = self.kv[src * ps + offset]
        return True

    def write_and_commit(self, seq, start, num_computed):
        table = seq.table
        for pos, slot in zip(range(start, table.num_tokens), table.slots(start, table.num_tokens)):
            self.kv[slot] = seq.token_ids[pos]
        self.manager.commit(table, seq.token_ids, num_computed, seq.extra_key)
        ps = self.page_size
        for i, page_hash in enumerate(table.page_hashes):
            self.page_contents[page_hash] = seq.token_ids[i * ps : (i + 1) * ps]

    def pick(self, index) -> Seq:
        return self.seqs[index % len(self.seqs)]

    # -- rules --------------------------------------------------------------------------------

    @rule(prompt=tokens, extra_key=st.sampled_from([None, None, "a"]))
    def admit(self, prompt, extra_key):
        seq = Seq(self.manager.new_table(), list(prompt), extra_key)
        pages, hashes = self.manager.match_prefix(prompt[:-1], extra_key)
        ps = self.page_size
        for i, page in enumerate(pages):  # a hit must hold exactly the prompt's tokens
            assert [self.kv.get(page * ps + j) for j in range(ps)] == prompt[i * ps : (i + 1) * ps]
        num_cached = len(pages) * ps
        if self.reserve(seq, len(prompt) - num_cached, pages, hashes):
            self.write_and_commit(seq, num_cached, len(prompt))
            self.seqs.append(seq)

    @precondition(lambda self: self.seqs)
    @rule(index=st.integers(0, 99), new_tokens=tokens, commit_all=st.booleans())
    def append(self, index, new_tokens, commit_all):
        seq = self.pick(index)
        start = seq.table.num_tokens
        if self.reserve(seq, len(new_tokens)):
            seq.token_ids += new_tokens
            # A chunked commit leaves the tail uncommitted; the next commit picks it up.
            self.write_and_commit(seq, start, seq.table.num_tokens if commit_all else start)

    @precondition(lambda self: self.seqs)
    @rule(index=st.integers(0, 99), num_tokens=st.integers(0, 4))
    def trim(self, index, num_tokens):
        seq = self.pick(index)
        num_tokens = min(num_tokens, seq.table.num_tokens)
        self.manager.trim(seq.table, num_tokens)
        del seq.token_ids[len(seq.token_ids) - num_tokens :]

    @precondition(lambda self: self.seqs)
    @rule(index=st.integers(0, 99))
    def fork(self, index):
        seq = self.pick(index)
        self.seqs.append(Seq(self.manager.fork(seq.table), list(seq.token_ids), seq.extra_key))

    @precondition(lambda self: self.seqs)
    @rule(index=st.integers(0, 99))
    def free(self, index):
        seq = self.seqs.pop(index % len(self.seqs))
        self.manager.free(seq.table)
        assert seq.table.pages == [] and seq.table.num_tokens == 0

    @rule()
    def reset_prefix_cache(self):
        self.manager.pool.reset_prefix_cache()

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def refcounts_equal_the_tables_holding_each_page(self):
        pool = self.manager.pool
        holders = [0] * pool.num_pages
        for seq in self.seqs:
            assert len(set(seq.table.pages)) == seq.table.num_pages
            for page in seq.table.pages:
                holders[page] += 1
        assert [pool.ref_count(p) for p in range(pool.num_pages)] == holders
        used = {p for p, n in enumerate(holders) if n}
        free, cached = set(pool._free_pages), set(pool._cached_lru)
        assert not (free & cached) and not (free & used) and not (cached & used)
        assert free | cached | used == set(range(pool.num_pages))
        assert pool.num_used_pages == len(used)
        assert pool.num_free_pages + pool.num_used_pages == pool.num_pages

    @invariant()
    def every_sequence_reads_back_its_own_tokens(self):
        ps = self.page_size
        for seq in self.seqs:
            table = seq.table
            assert table.num_tokens == len(seq.token_ids)
            assert table.num_pages == -(table.num_tokens // -ps)
            assert [self.kv[s] for s in table.slots(0, table.num_tokens)] == seq.token_ids
            expected = hash_full_pages(
                seq.token_ids[: len(table.page_hashes) * ps], ps, seq.extra_key
            )
            assert table.page_hashes == expected

    @invariant()
    def every_cached_page_holds_the_tokens_its_hash_names(self):
        pool, ps = self.manager.pool, self.page_size
        for page in range(pool.num_pages):
            page_hash = pool.page_hash(page)
            if page_hash is not None:
                assert pool.lookup(page_hash) == page
                content = [self.kv.get(page * ps + j) for j in range(ps)]
                assert content == self.page_contents[page_hash]

    def teardown(self):
        if not hasattr(self, "manager"):
            return
        for seq in self.seqs:
            self.manager.free(seq.table)
        pool = self.manager.pool
        assert all(pool.ref_count(p) == 0 for p in range(pool.num_pages))
        assert self.manager.num_free_pages == pool.num_pages and pool.num_used_pages == 0


TestKVCacheMachine = KVCacheMachine.TestCase
TestKVCacheMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
