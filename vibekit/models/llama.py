"""Llama-family decoder: Llama (incl. llama3 RoPE), Mistral, Qwen2 (qkv bias), Qwen3 (q/k norm).

Written on vibekit ops and the paged KV cache. For CPU speed q/k/v share one `qkv_proj` and
gate/up one `gate_up_proj`; `load_weights` fills them from the separate HF tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.config import ModelConfig
from vibekit.models.base import KVCacheSpec
from vibekit.models.layers import RMSNorm, RopeTable
from vibekit.ops import apply_rope, kv_append, paged_attention, silu_and_mul
from vibekit.runtime.forward_batch import ForwardBatch

# HF tensor name part -> (fused parameter name part, shard index along dim 0)
_FUSED_SHARDS = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}
# Tensors some checkpoints carry that the model recomputes or does not use.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# The rope table covers this many positions up front; longer batches grow it.
_MAX_INITIAL_ROPE_POSITIONS = 32768


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.num_qo_heads = config.num_qo_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size = config.num_qo_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.scale = config.head_dim**-0.5
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size,
                                  bias=config.attention_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=config.o_proj_bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)

    def shard_sizes(self) -> list[int]:
        return [self.q_size, self.kv_size, self.kv_size]

    def forward(self, x: torch.Tensor, batch: ForwardBatch,
                cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        num_tokens = x.shape[0]
        qkv = self.qkv_proj(x)  # [T, (Hq + 2 Hk) * D]
        q, k, v = qkv.split(self.shard_sizes(), dim=-1)
        q = q.view(num_tokens, self.num_qo_heads, self.head_dim)  # [T, Hq, D]
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, Hk, D]
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, Hk, D]
        if self.qk_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q, k = apply_rope(q, k, batch.positions, cos, sin)
        k_cache, v_cache = batch.kv_caches[self.layer_id]
        kv_append(k, v, k_cache, v_cache, batch.slot_mapping, backend=batch.attention_backend)
        out = paged_attention(
            q, k_cache, v_cache, batch.qo_indptr, batch.page_table, batch.kv_lens,
            scale=self.scale, max_q_len=batch.max_q_len, max_kv_len=batch.max_kv_len,
            backend=batch.attention_backend,
        )  # [T, Hq, D]
        return self.o_proj(out.reshape(num_tokens, self.q_size))  # [T, hidden]


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size,
                                      bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size,
                                   bias=config.mlp_bias)

    def shard_sizes(self) -> list[int]:
        return [self.intermediate_size, self.intermediate_size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))  # [T, 2I] -> [T, I] -> [T, h]


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, layer_id)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

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

    def packable_linears(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Module name -> (weight, bias) of every projection `pack_linears` may replace; a tied
        head is listed as "lm_head" with the embedding's weight (packed as its own copy)."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                out[name] = (module.weight, module.bias)
        if self.lm_head is None:
            out["lm_head"] = (self.model.embed_tokens.weight, None)
        return out

    def kv_cache_spec(self) -> KVCacheSpec:
        return KVCacheSpec(self.config.num_layers, self.config.num_kv_heads, self.config.head_dim)

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """input_ids [T] -> float32 logits [S, V] at `batch.sample_indices`."""
        if len(batch.kv_caches) != self.config.num_layers:
            raise ValueError(f"batch has {len(batch.kv_caches)} KV cache layers; "
                             f"the model needs {self.config.num_layers}")
        cos, sin = self.rope.get(batch.max_kv_len, input_ids.device)
        x = self.model.embed_tokens(input_ids)  # [T, h]
        for layer in self.model.layers:
            x = layer(x, batch, cos, sin)
        x = self.model.norm(x[batch.sample_indices])  # [S, h]
        if self.lm_head is None:
            return F.linear(x, self.model.embed_tokens.weight).float()  # [S, V]
        return self.lm_head(x).float()  # [S, V]

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the (fused) parameters, casting dtype and device.

        Raises ValueError on an unknown name or a shape mismatch, and after the last tensor if
        any parameter (or fused shard) was never loaded.
        """
        params = dict(self.named_parameters())
        loaded: set[tuple[str, int]] = set()
        for name, tensor in weights:
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            if name == "lm_head.weight" and self.lm_head is None:
                continue  # tied: the checkpoint's copy equals embed_tokens.weight
            target, shard = _fused_target(name)
            param = params.get(target)
            if param is None:
                raise ValueError(f"checkpoint tensor {name!r} has no place in "
                                 f"{type(self).__name__} ({self.config.model_type})")
            dst = param.data
            if shard >= 0:
                sizes = self.get_submodule(target.rsplit(".", 2)[0]).shard_sizes()
                dst = dst.narrow(0, sum(sizes[:shard]), sizes[shard])
            if dst.shape != tensor.shape:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}; "
                                 f"the model expects {tuple(dst.shape)} (config mismatch?)")
            dst.copy_(tensor)
            loaded.add((target, shard))
        missing = [name for name in self._expected_hf_names() if
                   _fused_target(name) not in loaded]
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")

    def _expected_hf_names(self) -> list[str]:
        names = []
        for name, _ in self.named_parameters():
            module, _, leaf = name.rpartition(".")
            parent, _, fused = module.rpartition(".")
            shards = [hf for hf, (f, _) in _FUSED_SHARDS.items() if f == fused]
            names += [f"{parent}.{hf}.{leaf}" for hf in shards] if shards else [name]
        return names


def _fused_target(name: str) -> tuple[str, int]:
    """HF name -> (parameter name, shard index or -1 for an unfused parameter)."""
    module, _, leaf = name.rpartition(".")
    parent, _, proj = module.rpartition(".")
    if proj in _FUSED_SHARDS:
        fused, shard = _FUSED_SHARDS[proj]
        return f"{parent}.{fused}.{leaf}", shard
    return name, -1
