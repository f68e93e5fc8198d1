"""Llama-family decoder: Llama (incl. llama3 RoPE), Mistral, Qwen2 (qkv bias), Qwen3 (q/k norm).

Written on vibekit ops and the paged KV cache with the shared layers (models/layers.py): q/k/v
share one `qkv_proj` and gate/up one `gate_up_proj`, filled from the separate HF tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.config import ModelConfig, hf_common_fields
from vibekit.core.forward_batch import ForwardBatch
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.base import CacheSpec
from vibekit.models.layers import (
    Attention,
    GatedMLP,
    RMSNorm,
    RopeTable,
    load_hf_weights,
    packable_linears,
)

# The registry's view of this file: model_type -> HF architecture name.
MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig from an HF config.json of the llama family (each member's quirks here)."""
    model_type = hf.get("model_type")
    sliding = hf.get("sliding_window")
    if model_type in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
        sliding = None
    bias = bool(hf.get("attention_bias", False))
    return ModelConfig(
        **hf_common_fields(hf),
        attention_bias=model_type == "qwen2" or bias,  # qwen2: q/k/v bias, no o_proj bias
        o_proj_bias=model_type != "qwen2" and bias,
        qk_norm=model_type == "qwen3",
        sliding_window=sliding,
    )


def model_class(config: ModelConfig) -> type[nn.Module]:
    return LlamaForCausalLM


# The rope table covers this many positions up front; longer batches grow it.
_MAX_INITIAL_ROPE_POSITIONS = 32768


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_id, bias=config.attention_bias,
                                   o_bias=config.o_proj_bias,
                                   qk_norm=RMSNorm if config.qk_norm else None)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.mlp_bias)

    def forward(self, x: torch.Tensor, batch: ForwardBatch,
                cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # Pre-norm residual blocks, in HF's order.
        x = x + self.self_attn(self.input_layernorm(x), batch, cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, i) for i in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Llama / Mistral / Qwen2 / Qwen3 causal LM over a paged KV cache (see `CausalLM`).

    Example::

        model = LlamaForCausalLM(config)                # or build_model(config, dtype, device)
        model.load_weights(safetensors_items)           # HF names
        logits = model(batch.input_ids, batch)          # [S, vocab] float32
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        # NOTE: tied models have no lm_head module; logits use embed_tokens.weight directly, so
        # the tie survives meta-device construction and `to_empty`.
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rope = RopeTable(
            config.head_dim, config.rope_theta, config.rope_scaling,
            min(config.max_position_embeddings, _MAX_INITIAL_ROPE_POSITIONS),
        )
        # The one-call C++ forward (vibekit.ops.model_cpu), built on the first CPU step once
        # the projections are packed for the "cpu" kernel; False: the per-op forward only.
        self.use_fused_cpu = True
        self._fused: Any = None

    def cache_spec(self) -> CacheSpec:
        c = self.config
        return CacheSpec(KVCacheSpec(c.num_layers, c.num_kv_heads, c.head_dim))

    def packable_linears(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """The projections `pack_linears` may replace (see layers.packable_linears)."""
        return packable_linears(self)

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """input_ids [T] -> float32 logits [S, V] at `batch.sample_indices`."""
        if len(batch.kv_caches) != self.config.num_layers:
            raise ValueError(f"batch has {len(batch.kv_caches)} KV cache layers; "
                             f"the model needs {self.config.num_layers}")
        if (self.use_fused_cpu and batch.attention_backend in ("auto", "cpu")
                and input_ids.device.type == "cpu"):
            fused = self._fused_forward()
            if fused is not None:
                return fused.forward(batch)
        cos, sin = self.rope.get(batch.max_kv_len, input_ids.device)
        x = self.model.embed_tokens(input_ids)  # [T, h]
        for layer in self.model.layers:
            x = layer(x, batch, cos, sin)
        x = self.model.norm(x[batch.sample_indices])  # [S, h]
        if self.lm_head is None:
            return F.linear(x, self.model.embed_tokens.weight).float()  # [S, V]
        return self.lm_head(x).float()  # [S, V]

    def _fused_forward(self) -> Any:
        """The FusedLlamaCpu of this model, or None where it cannot run (decided once)."""
        if self._fused is None:
            from vibekit.ops.model_cpu import FusedLlamaCpu, why_not_fused

            self._fused = FusedLlamaCpu(self) if not why_not_fused(self) else False
        return self._fused or None

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the (fused) parameters, casting dtype and device.

        Raises ValueError on an unknown name or a shape mismatch, and after the last tensor if
        any parameter (or fused shard) was never loaded.
        """
        load_hf_weights(self, weights)
