"""GrammarMasker: a step's token bitmasks, filled on a worker thread while the forward runs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from vibekit.core.scheduled import ScheduledBatch
from vibekit.ops.token_bitmask import apply_token_bitmask


class PendingMasks:
    """The masks of one step, possibly still being filled; `apply` waits for them."""

    __slots__ = ("future", "bitmask", "rows", "backend")

    def __init__(self, future: Future | None, bitmask: torch.Tensor, rows: list[int],
                 backend: str) -> None:
        self.future = future
        self.bitmask = bitmask
        self.rows = rows
        self.backend = backend

    def wait(self) -> None:
        """Block until the fill is done (its own error, if any, is dropped: a caller waits here
        only while handling a failure of the forward)."""
        if self.future is not None:
            self.future.exception()

    @torch.inference_mode()  # the runner's logits are inference tensors
    def apply(self, logits: torch.Tensor) -> None:
        """Set the logits [S, V] of forbidden tokens to -inf in place, on the grammar rows."""
        if self.future is not None:
            self.future.result()  # re-raises a failure of the worker
        bitmask = self.bitmask.to(logits.device, non_blocking=True)
        indices = None
        if len(self.rows) != logits.shape[0]:
            indices = torch.tensor(self.rows, dtype=torch.int32).to(logits.device,
                                                                    non_blocking=True)
        apply_token_bitmask(logits, bitmask, indices, backend=self.backend)

    def apply_mlx(self, logits: Any) -> Any:
        """The same masking on MLX logits [S, V] (device "mlx"; vibekit.runtime.mlx_runner):
        returns the masked array (MLX arrays are immutable)."""
        from vibekit.ops.mlx import apply_token_bitmask_mlx

        if self.future is not None:
            self.future.result()
        return apply_token_bitmask_mlx(logits, self.bitmask.numpy(), self.rows)


class GrammarMasker:
    """Builds the token bitmask of every sampling row whose request has a grammar.

    The rows follow the runner's logits: for each sampling request, one row, or one per draft
    token plus one for a verify block. `start` hands the filling to a worker thread (xgrammar
    releases the GIL) and returns at once, so the masks are computed while the model's forward
    runs; `PendingMasks.apply` waits for them and masks the logits before any sampling or
    verification.

    overlap: True always hands the filling to the worker, False fills on the calling thread, None
    (default) decides each step: the hand-off costs about 0.1-0.3 ms of GIL traffic, so masks
    that fill faster than `overlap_min_seconds` (a running average; small vocabularies, simple
    grammars) are filled inline, slower ones during the forward.

    A LogitsProcessor (vibekit.logits), the first in the runner's list. Example:
        pending = masker.start(batch)
        logits = model_forward(batch)
        if pending is not None:
            pending.apply(logits)
    """

    def __init__(self, vocab_size: int, device: torch.device | str, backend: str = "auto",
                 overlap: bool | None = None, overlap_min_seconds: float = 3e-4) -> None:
        self.vocab_size = vocab_size
        self.num_words = -(-vocab_size // 32)
        self.device = torch.device(device)
        self.backend = backend
        self.overlap = overlap
        self.overlap_min_seconds = overlap_min_seconds
        self.fill_seconds = 0.0  # running average of one step's fill time
        self._bitmask = torch.empty(0, self.num_words, dtype=torch.int32)
        self._pool: ThreadPoolExecutor | None = None

    def start(self, batch: ScheduledBatch) -> PendingMasks | None:
        """Start filling the masks of the step; None when no sampling request of the step has a
        grammar (the LogitsProcessor protocol, vibekit.logits)."""
        jobs: list[tuple[Any, int, Sequence[int]]] = []
        rows: list[int] = []
        for group in batch.groups:
            grammar = group.request.grammar
            if grammar is not None:
                jobs.append((grammar, group.start, group.draft))
                rows.extend(group.rows)
        row = batch.num_rows
        if not jobs:
            return None
        bitmask = self._buffer(row)
        overlap = self.overlap
        if overlap is None:
            overlap = self.fill_seconds > self.overlap_min_seconds
        if not overlap:
            self._fill(jobs, bitmask)
            return PendingMasks(None, bitmask, rows, self.backend)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="vibekit-grammar-mask")
        future = self._pool.submit(self._fill, jobs, bitmask)
        return PendingMasks(future, bitmask, rows, self.backend)

    def _buffer(self, num_rows: int) -> torch.Tensor:
        if self._bitmask.shape[0] < num_rows:
            size = max(num_rows, 2 * self._bitmask.shape[0], 16)
            # NOTE: a normal tensor even when called under inference mode: the worker thread
            # (outside that mode) fills it in place.
            with torch.inference_mode(False):
                self._bitmask = torch.empty(size, self.num_words, dtype=torch.int32,
                                            pin_memory=self.device.type == "cuda")
        return self._bitmask[:num_rows]

    def _fill(self, jobs: list[tuple[Any, int, Sequence[int]]], bitmask: torch.Tensor) -> None:
        t0 = time.perf_counter()
        bitmask.fill_(-1)  # rows of requests without a grammar stay all-allowed (and skipped)
        for grammar, row, draft in jobs:
            grammar.fill_bitmask(bitmask, row, draft)
        self.fill_seconds = 0.9 * self.fill_seconds + 0.1 * (time.perf_counter() - t0)
