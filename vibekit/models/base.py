"""The model protocol: what the engine needs from a model, and what it needs from the engine."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from vibekit.config import ModelConfig
from vibekit.runtime.forward_batch import ForwardBatch


@dataclass(frozen=True)
class KVCacheSpec:
    """Which layers need paged KV, and the shape of one token's K (or V) in each.

    Layers `0 .. num_layers - 1` each need a `(k_cache, v_cache)` pair of shape
    `[num_pages, page_size, num_kv_heads, head_dim]` in `ForwardBatch.kv_caches`.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        """K and V bytes one token occupies across all layers."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * itemsize


@runtime_checkable
class CausalLM(Protocol):
    """A decoder-only LM built from a `ModelConfig` (an `nn.Module` in practice).

    Example::

        model = build_model(config, dtype=torch.bfloat16, device="cuda")
        model.load_weights(iter_hf_weights(path))       # HF names, e.g. model.norm.weight
        spec = model.kv_cache_spec()                    # allocate spec.num_layers KV pairs
        logits = model(batch.input_ids, batch)          # [S, V] float32
    """

    config: ModelConfig

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the parameters (casting dtype and device); raises on
        unknown names, wrong shapes, or parameters left unloaded."""
        ...

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """input_ids [T] -> float32 logits [S, V] at the rows `batch.sample_indices`.
        Appends this step's K/V to `batch.kv_caches` as a side effect."""
        ...

    def kv_cache_spec(self) -> KVCacheSpec:
        ...
