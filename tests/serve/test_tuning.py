"""Process tuning. freeze_heap: what is alive at startup leaves the collector's generations;
later garbage is still collected."""

from __future__ import annotations

import gc
import weakref


class _Node:
    def __init__(self) -> None:
        self.self = self  # a cycle: only the collector frees it


def test_freeze_heap_exempts_the_startup_heap_and_still_collects_later_cycles():
    from vibekit.serve.tuning import freeze_heap

    before = _Node()
    try:
        assert freeze_heap() > 0 and gc.get_freeze_count() > 0
        ref_before = weakref.ref(before)
        del before
        gc.collect()
        assert ref_before() is not None  # frozen: full collections skip it
        later = _Node()
        ref_later = weakref.ref(later)
        del later
        gc.collect()
        assert ref_later() is None  # allocated after the freeze: collected as usual
    finally:
        gc.unfreeze()

