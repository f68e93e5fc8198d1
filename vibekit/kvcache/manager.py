"""KVCacheManager: the scheduler's only view of the paged KV cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vibekit.kvcache.hashing import hash_full_pages, hash_page
from vibekit.kvcache.page_table import PageTable
from vibekit.kvcache.pool import PagePool


@dataclass(slots=True)
class PrefixCacheStats:
    """Prefix cache counters, recorded when a table's first allocation adopts matched pages."""

    num_queries: int = 0
    num_query_tokens: int = 0
    num_hit_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        """Fraction of queried tokens served from the cache (0.0 before any query)."""
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0


def _cdiv(a: int, b: int) -> int:
    return -(a // -b)


class KVCacheManager:
    """Allocates pages to sequences, shares full pages by prefix hash, copies shared pages on write.

    Per request, with no other allocation in between:
        cached_pages, cached_hashes = manager.match_prefix(prompt_ids[:-1])  # keep >= 1 to compute
        num_new = len(prompt_ids) - len(cached_pages) * manager.page_size
        if manager.can_allocate(table, num_new, cached_pages):
            copies = manager.allocate(table, num_new, cached_pages, cached_hashes)
    then copy KV pages `src -> dst` for each of `copies`, run the forward writing KV at
    `table.slots(...)`, and `commit(table, token_ids, num_computed_tokens)`.

    Example:
        >>> manager = KVCacheManager(num_pages=8, page_size=4)
        >>> table = manager.new_table()
        >>> manager.allocate(table, 6)
        []
        >>> manager.commit(table, [1, 2, 3, 4, 5, 6], 6)
        >>> manager.match_prefix([1, 2, 3, 4, 5, 6, 7, 8])[0] == table.pages[:1]
        True
    """

    def __init__(self, num_pages: int, page_size: int, enable_prefix_caching: bool = True) -> None:
        self.pool = PagePool(num_pages, page_size)
        self.num_pages = num_pages
        self.page_size = page_size
        self.enable_prefix_caching = enable_prefix_caching
        self.stats = PrefixCacheStats()

    def new_table(self) -> PageTable:
        """An empty page table for a new sequence."""
        return PageTable(self.page_size)

    @property
    def num_free_pages(self) -> int:
        """Pages available to `allocate` (free plus evictable cached pages)."""
        return self.pool.num_free_pages

    def usage(self) -> float:
        """Fraction of pages in use (refcount > 0)."""
        return self.pool.num_used_pages / self.num_pages

    # -- checks (no side effects) -------------------------------------------------------------

    def match_prefix(
        self, token_ids: Sequence[int], extra_key: str | bytes | None = None
    ) -> tuple[list[int], list[int]]:
        """(pages, hashes) of the longest run of leading full pages of `token_ids` in the cache.

        Stops at the first miss. No side effects; ([], []) when prefix caching is off. Pass the
        prompt without its last token so at least one token is left to compute logits from.
        """
        if not self.enable_prefix_caching:
            return [], []
        pages: list[int] = []
        hashes: list[int] = []
        parent_hash = None
        ps = self.page_size
        for start in range(0, len(token_ids) - ps + 1, ps):
            parent_hash = hash_page(parent_hash, token_ids[start : start + ps], extra_key)
            page = self.pool.lookup(parent_hash)
            if page is None:
                break
            pages.append(page)
            hashes.append(parent_hash)
        return pages, hashes

    def num_pages_needed(
        self, table: PageTable, num_new_tokens: int, cached_pages: Sequence[int] = ()
    ) -> int:
        """Free pages `allocate(table, num_new_tokens, cached_pages)` would consume: new pages,
        idle cached pages it revives, and one page to copy a shared partial last page."""
        self._check_request(table, num_new_tokens, cached_pages)
        ps = self.page_size
        num_tokens, num_held = table.num_tokens, table.num_pages
        num_needed = 0
        if cached_pages:
            num_tokens, num_held = len(cached_pages) * ps, len(cached_pages)
            num_needed += sum(1 for page in cached_pages if self.pool.ref_count(page) == 0)
        elif num_new_tokens and num_tokens % ps and self.pool.ref_count(table.pages[-1]) > 1:
            num_needed += 1  # copy-on-write of the shared partial last page
        return num_needed + _cdiv(num_tokens + num_new_tokens, ps) - num_held

    def can_allocate(
        self, table: PageTable, num_new_tokens: int, cached_pages: Sequence[int] = ()
    ) -> bool:
        """Whether `allocate` with the same arguments would succeed. No side effects."""
        return self.num_pages_needed(table, num_new_tokens, cached_pages) <= self.num_free_pages

    # -- actions ------------------------------------------------------------------------------

    def allocate(
        self,
        table: PageTable,
        num_new_tokens: int,
        cached_pages: Sequence[int] = (),
        cached_hashes: Sequence[int] = (),
    ) -> list[tuple[int, int]]:
        """Reserve `num_new_tokens` more KV slots, first adopting `cached_pages` (from
        `match_prefix`, only into an empty table).

        Returns the (src_page, dst_page) copies to do before the forward: a shared partial last
        page is replaced by a private copy before new tokens are appended to it.
        """
        assert self.can_allocate(table, num_new_tokens, cached_pages), (
            f"cannot reserve {num_new_tokens} tokens: needs "
            f"{self.num_pages_needed(table, num_new_tokens, cached_pages)} pages, "
            f"{self.num_free_pages} free"
        )
        ps = self.page_size
        if table.num_tokens == 0 and self.enable_prefix_caching:
            self.stats.num_queries += 1
            self.stats.num_query_tokens += len(cached_pages) * ps + num_new_tokens
            self.stats.num_hit_tokens += len(cached_pages) * ps
        if cached_pages:
            assert len(cached_hashes) == len(cached_pages), "pass the hashes match_prefix returned"
            for page, page_hash in zip(cached_pages, cached_hashes):
                assert self.pool.lookup(page_hash) == page, (
                    f"cached page {page} no longer holds its prefix; call match_prefix right "
                    "before allocate"
                )
                self.pool.incref(page)
            table.pages.extend(cached_pages)
            table.page_hashes.extend(cached_hashes)
            table.num_tokens = len(cached_pages) * ps

        copies = []
        if num_new_tokens and table.num_tokens % ps:
            last = table.pages[-1]
            if self.pool.ref_count(last) > 1:
                (copy,) = self.pool.allocate(1)
                self.pool.free([last])
                table.pages[-1] = copy
                copies.append((last, copy))
            else:
                # NOTE: a trimmed page may keep its hash while shared; once ours alone, its free
                # slots are about to be overwritten, so the hash no longer describes it.
                self.pool.unregister(last)
        num_tokens = table.num_tokens + num_new_tokens
        table.pages.extend(self.pool.allocate(_cdiv(num_tokens, ps) - table.num_pages))
        table.num_tokens = num_tokens
        return copies

    def commit(
        self,
        table: PageTable,
        token_ids: Sequence[int],
        num_computed_tokens: int,
        extra_key: str | bytes | None = None,
    ) -> None:
        """Mark the KV of `token_ids[:num_computed_tokens]` as written: register each newly full
        page in the prefix cache, extending `table.page_hashes`. No-op without prefix caching."""
        if not 0 <= num_computed_tokens <= min(table.num_tokens, len(token_ids)):
            raise ValueError(
                f"num_computed_tokens={num_computed_tokens} must be within the {table.num_tokens} "
                f"reserved slots and the {len(token_ids)} token ids"
            )
        if not self.enable_prefix_caching:
            return
        ps = self.page_size
        start = len(table.page_hashes)
        stop = num_computed_tokens // ps
        if stop <= start:
            return
        parent_hash = table.page_hashes[-1] if table.page_hashes else None
        new_hashes = hash_full_pages(token_ids[start * ps : stop * ps], ps, extra_key, parent_hash)
        for page, page_hash in zip(table.pages[start:stop], new_hashes):
            self.pool.register(page, page_hash)
        table.page_hashes.extend(new_hashes)

    def trim(self, table: PageTable, num_tokens: int) -> None:
        """Drop the last `num_tokens` reserved slots (rejected draft tokens), freeing pages left
        empty. A now-partial last page held by this table alone loses its hash."""
        if not 0 <= num_tokens <= table.num_tokens:
            raise ValueError(f"cannot trim {num_tokens} of {table.num_tokens} tokens")
        ps = self.page_size
        new_num_tokens = table.num_tokens - num_tokens
        num_kept = _cdiv(new_num_tokens, ps)
        self.pool.free(reversed(table.pages[num_kept:]))
        del table.pages[num_kept:]
        if new_num_tokens % ps and self.pool.ref_count(table.pages[-1]) == 1:
            self.pool.unregister(table.pages[-1])
        del table.page_hashes[new_num_tokens // ps :]
        table.num_tokens = new_num_tokens

    def fork(self, table: PageTable) -> PageTable:
        """A new table sharing all of `table`'s pages (e.g. for parallel sampling)."""
        for page in table.pages:
            self.pool.incref(page)
        return PageTable(self.page_size, list(table.pages), table.num_tokens,
                         list(table.page_hashes))

    def free(self, table: PageTable) -> None:
        """Release every page of `table` and leave it empty. Pages are freed tail first, so a
        cached prefix is evicted from its end."""
        self.pool.free(reversed(table.pages))
        table.pages.clear()
        table.page_hashes.clear()
        table.num_tokens = 0

    def _check_request(
        self, table: PageTable, num_new_tokens: int, cached_pages: Sequence[int]
    ) -> None:
        if table.page_size != self.page_size:
            raise ValueError(
                f"table has page_size {table.page_size}; this cache uses {self.page_size}"
            )
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        if cached_pages and (table.num_tokens or table.pages):
            raise ValueError("cached_pages can only be adopted by an empty table")
