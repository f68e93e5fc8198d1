"""Llama-family decoder on MLX: Llama (incl. llama3 RoPE), Mistral, Qwen2 (qkv bias), Qwen3
(q/k norm), tied or untied heads. HF parameter names, so HF (and mlx-lm) weights load as they are.

The same math as vibekit/models/llama.py; attention reads and writes the paged KV cache of
vibekit.kvcache.mlx through one AttentionPlan per step. After loading, `pack()` fuses q/k/v and
gate/up into one matmul each and stores float weights transposed (vibekit.models.mlx.linear).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from vibekit.config import ModelConfig
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.base import CacheSpec
from vibekit.models.mlx.linear import MLXLinearT
from vibekit.ops.mlx import AttentionPlan, paged_attention_mlx, rope_fast_mlx, rope_freqs_mlx


class MLXRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = mx.ones((dim,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.weight, self.eps)


class MLXAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        h, d = config.hidden_size, config.head_dim
        self.num_qo_heads, self.num_kv_heads, self.head_dim = (
            config.num_qo_heads, config.num_kv_heads, d)
        self.scale = d**-0.5
        self.q_proj = nn.Linear(h, config.num_qo_heads * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(h, config.num_kv_heads * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(h, config.num_kv_heads * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.num_qo_heads * d, h, bias=config.o_proj_bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm = MLXRMSNorm(d, config.rms_norm_eps)
            self.k_norm = MLXRMSNorm(d, config.rms_norm_eps)

    def pack(self) -> None:
        """q/k/v -> one `qkv_proj`; o_proj transposed (after the weights are loaded)."""
        self.qkv_proj = MLXLinearT.pack([self.q_proj, self.k_proj, self.v_proj])
        self.o_proj = MLXLinearT.pack([self.o_proj])
        del self.q_proj, self.k_proj, self.v_proj
        # NOTE: plain ints (an nn.Module keeps tuples and lists in its parameter tree).
        self.q_end = self.num_qo_heads * self.head_dim
        self.k_end = self.q_end + self.num_kv_heads * self.head_dim

    def __call__(self, x: mx.array, plan: AttentionPlan, freqs: mx.array,
                 kv_caches: list[tuple[mx.array, mx.array]]) -> mx.array:
        num_tokens, d = x.shape[0], self.head_dim
        qkv = self.qkv_proj(x)  # [T, (Hq + 2 Hk) D]
        q, k, v = mx.split(qkv, [self.q_end, self.k_end], axis=-1)
        q = q.reshape(num_tokens, self.num_qo_heads, d)  # [T, Hq, D]
        k = k.reshape(num_tokens, self.num_kv_heads, d)  # [T, Hk, D]
        v = v.reshape(num_tokens, self.num_kv_heads, d)  # [T, Hk, D]
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rope_fast_mlx(q, plan.positions, freqs)
        k = rope_fast_mlx(k, plan.positions, freqs)
        k_cache, v_cache = kv_caches[self.layer_id]
        out = paged_attention_mlx(q, k, v, k_cache, v_cache, plan, self.scale)  # [T, Hq, D]
        return self.o_proj(out.reshape(num_tokens, self.num_qo_heads * d))  # [T, h]


class MLXGatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)
        self.intermediate = intermediate

    def pack(self) -> None:
        """gate/up -> one `gate_up_proj`; down_proj transposed."""
        self.gate_up_proj = MLXLinearT.pack([self.gate_proj, self.up_proj])
        self.down_proj = MLXLinearT.pack([self.down_proj])
        del self.gate_proj, self.up_proj

    def __call__(self, x: mx.array) -> mx.array:
        gate, up = mx.split(self.gate_up_proj(x), [self.intermediate], axis=-1)  # [T, I] x2
        return self.down_proj(nn.silu(gate) * up)


class MLXDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.input_layernorm = MLXRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = MLXAttention(config, layer_id)
        self.post_attention_layernorm = MLXRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLXGatedMLP(config.hidden_size, config.intermediate_size, config.mlp_bias)

    def __call__(self, x: mx.array, plan: AttentionPlan, freqs: mx.array,
                 kv_caches: list[tuple[mx.array, mx.array]]) -> mx.array:
        x = x + self.self_attn(self.input_layernorm(x), plan, freqs, kv_caches)
        return x + self.mlp(self.post_attention_layernorm(x))

    def pack(self) -> None:
        self.self_attn.pack()
        self.mlp.pack()


class MLXLlamaModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [MLXDecoderLayer(config, i) for i in range(config.num_layers)]
        self.norm = MLXRMSNorm(config.hidden_size, config.rms_norm_eps)


class MLXLlamaForCausalLM(nn.Module):
    """Llama / Mistral / Qwen2 / Qwen3 causal LM on MLX over a paged KV cache.

    Example::

        model, config, tokenizer = load_mlx_model("path/to/hf_folder", "float32")
        plan = AttentionPlan.build(q_lens, kv_lens, page_tables, page_size)
        logits = model(input_ids, plan, sample_indices, cache.kv_caches)  # [S, V] float32
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = MLXLlamaModel(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # NOTE: a plain attribute, not a parameter: quantization and load_weights skip it.
        self._freqs = rope_freqs_mlx(config.head_dim, config.rope_theta, config.rope_scaling)
        self.packed = False

    def pack(self) -> None:
        """Fuse and transpose the projections (vibekit.models.mlx.linear), once, after the
        weights are loaded (and quantized): the checkpoint's HF names are gone afterwards. A
        tied float head becomes `lm_head` [h, V] and the embedding reads its columns (one copy
        of the table); a quantized tied head stays the quantized embedding's `as_linear`."""
        if self.packed:
            return
        for layer in self.model.layers:
            layer.pack()
        if not self.config.tie_word_embeddings:
            self.lm_head = MLXLinearT.pack([self.lm_head])
        elif type(self.model.embed_tokens) is nn.Embedding:
            self.lm_head = MLXLinearT(mx.contiguous(self.model.embed_tokens.weight.T), None)
            del self.model.embed_tokens
        self.packed = True

    def cache_spec(self) -> CacheSpec:
        c = self.config
        return CacheSpec(KVCacheSpec(c.num_layers, c.num_kv_heads, c.head_dim))

    def __call__(self, input_ids: mx.array, plan: AttentionPlan, sample_indices: mx.array,
                 kv_caches: list[tuple[mx.array, mx.array]]) -> mx.array:
        """input_ids [T] -> float32 logits [S, V] at `sample_indices`; appends this step's K/V
        to `kv_caches` (flat [num_pages * page_size, Hk, D] per layer, updated in place)."""
        if len(kv_caches) != self.config.num_layers:
            raise ValueError(f"{len(kv_caches)} KV cache layers; the model needs "
                             f"{self.config.num_layers}")
        if not self.packed:
            raise RuntimeError("call model.pack() once the weights are loaded (load_mlx_model "
                               "does)")
        if "embed_tokens" in self.model:
            x = self.model.embed_tokens(input_ids)  # [T, h]
        else:  # a tied float head: the embedding table is lm_head's [h, V]
            x = mx.take(self.lm_head.weight_t, input_ids, axis=1).T  # [T, h]
        for layer in self.model.layers:
            x = layer(x, plan, self._freqs, kv_caches)
        x = self.model.norm(x[sample_indices])  # [S, h]
        if "lm_head" in self:
            return self.lm_head(x).astype(mx.float32)  # [S, V]
        return self.model.embed_tokens.as_linear(x).astype(mx.float32)  # [S, V]
