"""The model protocol: what the engine needs from a model, and what it needs from the engine."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from vibekit.core.forward_batch import ForwardBatch
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.ssm.spec import StateSpec


@dataclass(frozen=True)
class CacheSpec:
    """Every cache a model needs: paged KV for its attention layers, and for hybrid models a
    recurrent-state slot per running sequence for its Mamba2 / gated-delta layers. The engine
    builds one cache object from it (vibekit.runtime.cache.make_cache)."""

    kv: KVCacheSpec
    state: StateSpec | None = None


@runtime_checkable
class CausalLM(Protocol):
    """A decoder-only LM built from its config (an `nn.Module` in practice).

    Example::

        model = build_model(config, dtype=torch.bfloat16, device="cuda")
        model.load_weights(iter_weights(files))         # HF names, e.g. model.norm.weight
        spec = model.cache_spec()                       # spec.kv.num_layers KV pairs, ...
        logits = model(batch.input_ids, batch)          # [S, V] float32
    """

    config: Any

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the parameters (casting dtype and device); raises on
        unknown names, wrong shapes, or parameters left unloaded."""
        ...

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """input_ids [T] -> float32 logits [S, V] at the rows `batch.sample_indices`.
        Appends this step's K/V to `batch.kv_caches` as a side effect."""
        ...

    def cache_spec(self) -> CacheSpec:
        ...
