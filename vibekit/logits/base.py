"""The logits-processor protocol: batched edits of the sampling rows' logits between the forward
and the sampler / verifier."""

from __future__ import annotations

from typing import Protocol

import torch

from vibekit.core.scheduled import ScheduledBatch


class PendingLogits(Protocol):
    """One step's work of a processor, started before the forward."""

    def apply(self, logits: torch.Tensor) -> None:
        """Edit logits [S, V] float32 in place (S = ScheduledBatch.num_rows)."""
        ...

    # Optional: `wait()` finishes work started on another thread; the runner calls it when the
    # forward raised, before anything else touches the state that work reads.
    # Optional: `apply_mlx(logits: mx.array) -> mx.array`, the same edit on MLX logits (device
    # "mlx"); without it the MLX runner applies `apply` to a host torch copy.


class LogitsProcessor(Protocol):
    """`start` sees the step's ScheduledBatch before the forward (it may begin work on a thread,
    as the grammar masker does) and returns None when no request of the step needs it, so an
    unused processor costs nothing. The runner applies the processors in list order: the grammar
    mask first, then penalties and biases (a masked token stays at -inf under all of them).

    Rows follow `ScheduledBatch.groups`: row `group.start + i` of a verify block predicts the
    token after `draft[:i]`, so a processor that depends on earlier tokens (penalties) counts the
    draft tokens before row i as already generated: a verified row gets exactly the logits plain
    decoding would have given it.
    """

    def start(self, batch: ScheduledBatch) -> PendingLogits | None: ...
