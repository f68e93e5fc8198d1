"""PageTable: the pages and reserved KV slots of one sequence."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PageTable:
    """The pages one sequence's KV lives in, in position order.

    `num_tokens` KV slots are reserved: position `pos` is stored at
    `slot(pos) = pages[pos // page_size] * page_size + pos % page_size`.
    `page_hashes` is the prefix hash chain of the leading full pages that are registered in (or
    were matched from) the prefix cache; it is never longer than `num_tokens // page_size`.

    Tables are created empty (`KVCacheManager.new_table()`) and changed only by the manager.

    Example:
        >>> table = PageTable(page_size=4, pages=[7, 2], num_tokens=6)
        >>> table.slot(5)
        9
    """

    page_size: int
    pages: list[int] = field(default_factory=list)
    num_tokens: int = 0
    page_hashes: list[int] = field(default_factory=list)

    @property
    def num_pages(self) -> int:
        """Number of pages held."""
        return len(self.pages)

    @property
    def capacity(self) -> int:
        """KV slots in the held pages (`num_pages * page_size`)."""
        return len(self.pages) * self.page_size

    def slot(self, pos: int) -> int:
        """Flat KV slot of position `pos` (must be a reserved position)."""
        if not 0 <= pos < self.num_tokens:
            raise IndexError(f"position {pos} is not reserved; table has {self.num_tokens} tokens")
        return self.pages[pos // self.page_size] * self.page_size + pos % self.page_size

    def slots(self, start: int, stop: int) -> list[int]:
        """Flat KV slots of positions `start..stop-1` (the slot_mapping of those tokens)."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(
                f"positions [{start}, {stop}) are not reserved; table has {self.num_tokens} tokens"
            )
        ps = self.page_size
        return [self.pages[pos // ps] * ps + pos % ps for pos in range(start, stop)]
