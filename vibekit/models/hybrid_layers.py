"""Layers shared by the hybrid model files: attention over the paged KV cache with partial
RoPE (and Qwen3.5's output gate), the gated MLP, norms, and HF-named weight loading."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.core.forward_batch import ForwardBatch
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.base import CacheSpec
from vibekit.models.hybrid_config import HybridConfig
from vibekit.models.layers import RopeTable
from vibekit.ops import apply_rope, kv_append, paged_attention, silu_and_mul

_MAX_INITIAL_ROPE_POSITIONS = 32768


class OffsetRMSNorm(nn.Module):
    """RMSNorm scaled by (1 + weight), in float32 (Qwen3.5 / Qwen3-Next "zero-centered")."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * (1.0 + self.weight.float())).to(x.dtype)


class DepthwiseConv(nn.Module):
    """Holds the HF `conv1d` weight [C, 1, K] (and bias) of a Mamba2 / DeltaNet mixer."""

    def __init__(self, channels: int, width: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, width))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(torch.cat([self.gate_proj(x), self.up_proj(x)], -1)))


class HybridAttention(nn.Module):
    """Full attention on the paged KV cache. `output_gate` (Qwen3.5): q_proj also yields a
    per-head gate and the output is multiplied by sigmoid(gate); `qk_norm`: (1+w) RMSNorm on
    q and k per head. RoPE covers the first `rotary_dim` dims of each head."""

    def __init__(self, config: HybridConfig, kv_index: int, output_gate: bool = False,
                 qk_norm: bool = False) -> None:
        super().__init__()
        self.kv_index = kv_index
        self.num_qo_heads, self.num_kv_heads = config.num_qo_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        self.rotary_dim = config.rotary_dim
        self.scale = config.head_dim**-0.5
        self.output_gate = output_gate
        q_size = self.num_qo_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, q_size * (2 if output_gate else 1), bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=bias)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = OffsetRMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = OffsetRMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        num_tokens, d = x.shape[0], self.head_dim
        q = self.q_proj(x)
        gate = None
        if self.output_gate:
            q, gate = q.view(num_tokens, self.num_qo_heads, 2 * d).chunk(2, dim=-1)  # [T, Hq, D]
            gate = gate.reshape(num_tokens, -1)
        q = q.reshape(num_tokens, self.num_qo_heads, d)  # [T, Hq, D]
        k = self.k_proj(x).view(num_tokens, self.num_kv_heads, d)  # [T, Hk, D]
        v = self.v_proj(x).view(num_tokens, self.num_kv_heads, d)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        r = self.rotary_dim
        q_rot, k_rot = apply_rope(q[..., :r], k[..., :r], batch.positions, cos, sin)
        q = torch.cat([q_rot, q[..., r:]], dim=-1)
        k = torch.cat([k_rot, k[..., r:]], dim=-1)
        k_cache, v_cache = batch.kv_caches[self.kv_index]
        kv_append(k, v, k_cache, v_cache, batch.slot_mapping, backend=batch.kv_append_backend)
        out = paged_attention(
            q, k_cache, v_cache, batch.qo_indptr, batch.page_table, batch.kv_lens,
            scale=self.scale, max_q_len=batch.max_q_len, max_kv_len=batch.max_kv_len,
            backend=batch.attention_backend,
        ).reshape(num_tokens, -1)  # [T, Hq * D]
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out)


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

    def _rename(self, name: str) -> str:
        """HF checkpoint name -> parameter name (identity; subclasses map prefixes)."""
        return name

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the parameters, casting dtype and device. Raises
        ValueError on unknown names, shape mismatches and parameters left unloaded."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for hf_name, tensor in weights:
            name = self._rename(hf_name)
            if not name or name.endswith(self._ignored_suffixes):
                continue
            if name == "lm_head.weight" and self.lm_head is None:
                continue
            param = params.get(name)
            if param is None:
                raise ValueError(f"checkpoint tensor {hf_name!r} has no place in "
                                 f"{type(self).__name__} ({self.config.model_type})")
            if param.shape != tensor.shape:
                raise ValueError(f"checkpoint tensor {hf_name!r} has shape "
                                 f"{tuple(tensor.shape)}; the model expects "
                                 f"{tuple(param.shape)} (config mismatch?)")
            param.data.copy_(tensor)
            loaded.add(name)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")

