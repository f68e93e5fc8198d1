"""The body shared by the hybrid model files (embeddings, layer stack, final norm, LM head) and
the depthwise-conv weight holder of their recurrent mixers. Attention, the MLP, norms and
weight loading are the shared layers of models/layers.py."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.core.forward_batch import ForwardBatch
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.base import CacheSpec
from vibekit.models.hybrid_config import HybridConfig
from vibekit.models.layers import RopeTable, load_hf_weights, packable_linears

_MAX_INITIAL_ROPE_POSITIONS = 32768


class DepthwiseConv(nn.Module):
    """Holds the HF `conv1d` weight [C, 1, K] (and bias) of a Mamba2 / DeltaNet mixer."""

    def __init__(self, channels: int, width: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, width))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None


class HybridForCausalLM(nn.Module):
    """Shared body of the hybrid causal LMs: embeddings, a stack of `layers` (each
    `forward(x, batch, cos, sin)`), the final norm and the LM head, HF-named parameters.

    Subclasses set `self.model.layers`, `self.model.<final norm>` and `_final_norm_name`.
    """

    _final_norm_name = "norm"
    _ignored_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = RopeTable(config.rotary_dim, config.rope_theta, None,
                              min(config.max_position_embeddings, _MAX_INITIAL_ROPE_POSITIONS))

    def cache_spec(self) -> CacheSpec:
        """The attention layers' KV (KV index i is the i-th full-attention layer) and the
        recurrent layers' state (state index i is the i-th recurrent layer)."""
        c = self.config
        return CacheSpec(KVCacheSpec(len(c.attention_layers), c.num_kv_heads, c.head_dim),
                         self.state_spec())

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """input_ids [T] -> float32 logits [S, V] at `batch.sample_indices`; appends K/V of the
        attention layers and advances the recurrent state of each sequence's slot."""
        if batch.state_caches is None or batch.state_slots is None:
            raise ValueError(f"{type(self).__name__} is a hybrid model: the batch needs "
                             "state_caches and state_slots (see vibekit.ssm)")
        cos, sin = self.rope.get(batch.max_kv_len, input_ids.device)
        x = self.model.embed_tokens(input_ids)  # [T, h]
        for layer in self.model.layers:
            x = layer(x, batch, cos, sin)
        x = getattr(self.model, self._final_norm_name)(x[batch.sample_indices])  # [S, h]
        if self.lm_head is None:
            return F.linear(x, self.model.embed_tokens.weight).float()
        return self.lm_head(x).float()

    def packable_linears(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """The projections `pack_linears` may replace (see layers.packable_linears)."""
        return packable_linears(self)

    def _rename(self, name: str) -> str:
        """HF checkpoint name -> parameter name (identity; subclasses map prefixes)."""
        return name

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the parameters, casting dtype and device. Raises
        ValueError on unknown names, shape mismatches and parameters left unloaded."""
        load_hf_weights(self, weights, rename=self._rename,
                        ignored_suffixes=self._ignored_suffixes)
