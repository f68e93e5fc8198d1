"""StateSpec: what a hybrid model declares about its recurrent-state layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StateSpec:
    """Layers `0 .. num_layers - 1` (the model's recurrent layers, in order) each need a
    `(conv_state, ssm_state)` pair in `ForwardBatch.state_caches`:
    conv_state `[num_slots, *conv_shape]` in the model dtype (the last inputs of the causal conv)
    and ssm_state `[num_slots, *ssm_shape]` in `ssm_dtype` (the recurrent state proper). Each
    running sequence owns one slot, named by `ForwardBatch.state_slots`.

    Unlike KV pages, a slot holds the state after the LAST computed token only: it cannot be
    trimmed back to an earlier position, only snapshotted and restored.
    """

    num_layers: int
    conv_shape: tuple[int, ...]
    ssm_shape: tuple[int, ...]
    ssm_dtype: torch.dtype = torch.float32
    mixer: str = "mamba2"

    def __post_init__(self) -> None:
        if self.num_layers <= 0:
            raise ValueError(f"num_layers must be positive, got {self.num_layers}")

    def bytes_per_slot(self, dtype: torch.dtype) -> int:
        """Bytes of one sequence's state across all recurrent layers."""
        conv = _numel(self.conv_shape) * torch.empty((), dtype=dtype).element_size()
        ssm = _numel(self.ssm_shape) * torch.empty((), dtype=self.ssm_dtype).element_size()
        return self.num_layers * (conv + ssm)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
