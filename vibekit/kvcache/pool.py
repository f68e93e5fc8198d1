"""PagePool: reference-counted pages with a prefix-hash map and an LRU of idle cached pages."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable


class PagePool:
    """Bookkeeping for `num_pages` KV pages of `page_size` slots each (the tensors live elsewhere).

    Every page is in exactly one state:
      free      refcount 0, no hash: on the free list.
      cached    refcount 0, hashed: holds a valid prefix, matchable by `lookup`, and evictable;
                kept in LRU order (least recently freed first).
      used      refcount > 0, hashed or not.
    `num_free_pages` counts free + cached pages, since both can be allocated.

    Example:
        >>> pool = PagePool(num_pages=4, page_size=16)
        >>> pages = pool.allocate(2)
        >>> pool.register(pages[0], 1234)
        True
        >>> pool.free(pages)
        >>> pool.lookup(1234) == pages[0], pool.num_free_pages
        (True, 4)
    """

    def __init__(self, num_pages: int, page_size: int) -> None:
        if num_pages <= 0:
            raise ValueError(f"num_pages must be positive, got {num_pages}")
        if page_size <= 0:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.num_pages = num_pages
        self.page_size = page_size
        self._free_pages: deque[int] = deque(range(num_pages))
        self._ref_counts = [0] * num_pages
        self._hash_to_page: dict[int, int] = {}
        self._page_to_hash: dict[int, int] = {}
        # NOTE: exactly the pages with refcount 0 and a hash; first = least recently freed.
        self._cached_lru: OrderedDict[int, None] = OrderedDict()
        self._num_used_pages = 0

    # -- counts -------------------------------------------------------------------------------

    @property
    def num_free_pages(self) -> int:
        """Pages `allocate` can hand out: never-used/unhashed free pages plus idle cached pages."""
        return len(self._free_pages) + len(self._cached_lru)

    @property
    def num_cached_pages(self) -> int:
        """Pages registered in the hash map, in use or idle."""
        return len(self._page_to_hash)

    @property
    def num_evictable_pages(self) -> int:
        """Idle cached pages: refcount 0 but still matchable until evicted."""
        return len(self._cached_lru)

    @property
    def num_used_pages(self) -> int:
        """Pages with refcount > 0."""
        return self._num_used_pages

    def ref_count(self, page: int) -> int:
        """Number of page tables holding `page`."""
        return self._ref_counts[self._check_page(page)]

    # -- allocation ---------------------------------------------------------------------------

    def can_allocate(self, num_pages: int) -> bool:
        """Whether `allocate(num_pages)` would succeed. No side effects."""
        return 0 <= num_pages <= self.num_free_pages

    def allocate(self, num_pages: int) -> list[int]:
        """Take `num_pages` pages with refcount 1: free pages first, then evict cached pages LRU."""
        assert self.can_allocate(num_pages), (
            f"cannot allocate {num_pages} pages; {self.num_free_pages} free"
        )
        pages = []
        for _ in range(num_pages):
            if self._free_pages:
                page = self._free_pages.popleft()
            else:
                page, _ = self._cached_lru.popitem(last=False)
                del self._hash_to_page[self._page_to_hash.pop(page)]
            self._ref_counts[page] = 1
            pages.append(page)
        self._num_used_pages += num_pages
        return pages

    def incref(self, page: int) -> None:
        """Add a reference to a used page, or revive an idle cached page (it leaves the LRU)."""
        count = self._ref_counts[self._check_page(page)]
        if count == 0:
            assert page in self._cached_lru, f"page {page} is free and uncached; allocate it"
            del self._cached_lru[page]
            self._num_used_pages += 1
        self._ref_counts[page] = count + 1

    def free(self, pages: Iterable[int]) -> None:
        """Drop one reference from each page, in order. A page reaching refcount 0 becomes cached
        (most recently used end of the LRU) if it is hashed, else free."""
        for page in pages:
            count = self._ref_counts[self._check_page(page)]
            assert count > 0, f"page {page} is already free"
            self._ref_counts[page] = count - 1
            if count == 1:
                self._num_used_pages -= 1
                if page in self._page_to_hash:
                    self._cached_lru[page] = None
                else:
                    self._free_pages.append(page)

    # -- prefix hashes ------------------------------------------------------------------------

    def lookup(self, page_hash: int) -> int | None:
        """The page holding the prefix with this hash, or None."""
        return self._hash_to_page.get(page_hash)

    def page_hash(self, page: int) -> int | None:
        """The hash `page` is registered under, or None."""
        return self._page_to_hash.get(self._check_page(page))

    def register(self, page: int, page_hash: int) -> bool:
        """Map `page_hash` to the used, full, final `page`. Returns False (and maps nothing) when
        another page already holds that hash: the existing mapping is kept."""
        assert self._ref_counts[self._check_page(page)] > 0, f"page {page} is not in use"
        current = self._page_to_hash.get(page)
        if current is not None:
            assert current == page_hash, f"page {page} is already registered under another hash"
            return True
        if page_hash in self._hash_to_page:
            return False
        self._hash_to_page[page_hash] = page
        self._page_to_hash[page] = page_hash
        return True

    def unregister(self, page: int) -> None:
        """Forget the hash of `page` (no-op if it has none); an idle cached page becomes free."""
        page_hash = self._page_to_hash.pop(self._check_page(page), None)
        if page_hash is None:
            return
        del self._hash_to_page[page_hash]
        if page in self._cached_lru:
            del self._cached_lru[page]
            self._free_pages.append(page)

    def reset_prefix_cache(self) -> int:
        """Drop the hashes of all idle cached pages, moving them to the free list. Pages in use
        keep theirs. Returns the number of pages dropped."""
        num_dropped = len(self._cached_lru)
        for page in self._cached_lru:
            del self._hash_to_page[self._page_to_hash.pop(page)]
            self._free_pages.append(page)
        self._cached_lru.clear()
        return num_dropped

    def _check_page(self, page: int) -> int:
        if not 0 <= page < self.num_pages:
            raise IndexError(f"page {page} out of range; pool has {self.num_pages} pages")
        return page
