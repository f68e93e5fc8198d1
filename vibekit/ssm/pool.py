"""StatePool: the recurrent-state slots of the running sequences, and snapshots of them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from vibekit.ssm.spec import StateSpec


@dataclass(slots=True)
class StateSnapshot:
    """A copy of one slot's state in every recurrent layer: [(conv_state, ssm_state)]."""

    tensors: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes + s.nbytes for c, s in self.tensors)


class StatePool:
    """Per recurrent layer a `(conv_state, ssm_state)` pair with `num_slots` rows; each running
    sequence owns one slot (`allocate` / `free`).

    Caches protocol: the state after a sequence's last token cannot be trimmed back to an
    earlier position (`trim` raises); `snapshot` copies a slot, `restore` writes one back.

    Example:
        >>> pool = StatePool(StateSpec(2, (8, 3), (2, 4, 4)), num_slots=2, dtype=torch.float32)
        >>> slot = pool.allocate()
        >>> snap = pool.snapshot(slot)
        >>> pool.restore(slot, snap)
    """

    def __init__(self, spec: StateSpec, num_slots: int, dtype: torch.dtype,
                 device: str | torch.device = "cpu") -> None:
        if num_slots <= 0:
            raise ValueError(f"num_slots must be positive, got {num_slots}")
        self.spec = spec
        self.num_slots = num_slots
        self.caches = [
            (torch.zeros(num_slots, *spec.conv_shape, dtype=dtype, device=device),
             torch.zeros(num_slots, *spec.ssm_shape, dtype=spec.ssm_dtype, device=device))
            for _ in range(spec.num_layers)
        ]
        self._free: deque[int] = deque(range(num_slots))

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes + s.nbytes for c, s in self.caches)

    @property
    def bytes_per_slot(self) -> int:
        return self.nbytes // self.num_slots

    def can_allocate(self) -> bool:
        return bool(self._free)

    def allocate(self) -> int:
        """A free slot, zeroed (the state before any token)."""
        assert self._free, "no free state slot; check can_allocate() first"
        slot = self._free.popleft()
        self.reset(slot)
        return slot

    def free(self, slot: int) -> None:
        assert 0 <= slot < self.num_slots and slot not in self._free, f"slot {slot} is not in use"
        self._free.append(slot)

    def reset(self, slot: int) -> None:
        for conv, ssm in self.caches:
            conv[slot].zero_()
            ssm[slot].zero_()

    def snapshot(self, slot: int) -> StateSnapshot:
        return StateSnapshot([(conv[slot].clone(), ssm[slot].clone())
                              for conv, ssm in self.caches])

    def restore(self, slot: int, snap: StateSnapshot) -> None:
        for (conv, ssm), (c, s) in zip(self.caches, snap.tensors, strict=True):
            conv[slot].copy_(c)
            ssm[slot].copy_(s)

    def trim(self, num_tokens: int) -> None:
        """Not possible: raises, naming why (the caches protocol's answer for recurrent state)."""
        raise NotImplementedError(
            f"the recurrent state of {self.spec.mixer} layers holds only the state after the "
            f"last token and cannot be trimmed by {num_tokens} tokens; use snapshot()/restore()"
        )
