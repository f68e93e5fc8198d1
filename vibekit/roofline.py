"""The physical limit decode is measured against: memory read bandwidth, measured in-process."""

from __future__ import annotations

import time

import torch


def measure_read_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: the best of `repeats` full passes summing an `nbytes` float32
    buffer on the CPU with torch's current thread count. Decode's roofline is this divided by
    the bytes read per step (every weight once). Example::

        roofline_tok_s = measure_read_bandwidth() / weight_bytes
    """
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best
