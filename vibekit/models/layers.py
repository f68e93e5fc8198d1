"""Building blocks shared by every model file: the norms, the RoPE table, attention over the
paged KV cache, the gated MLP, and HF-named weight loading into fused projections."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from vibekit.config import ModelConfig
from vibekit.core.forward_batch import ForwardBatch
from vibekit.ops import (
    apply_rope,
    kv_append,
    paged_attention,
    rms_norm,
    rope_cos_sin_cache,
    rope_inv_freq,
    silu_and_mul,
)

# HF tensor name part -> (fused parameter name part, shard index along dim 0)
FUSED_SHARDS = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned scale (computed in float32, like HF)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class OffsetRMSNorm(nn.Module):
    """RMSNorm scaled by (1 + weight), in float32 throughout (Qwen3.5 / Qwen3-Next
    "zero-centered"; unlike RMSNorm the scale is applied before the cast back)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * (1.0 + self.weight.float())).to(x.dtype)


class RopeTable:
    """float32 cos/sin tables [N, rotary_dim] for positions 0..N-1, built on first use.

    NOTE: a plain object, not a buffer, so `model.to(bfloat16)` cannot round the table and
    meta-device construction cannot leave it empty. It covers `max_positions` up front and grows
    (to the next power of two) only when a batch reaches past it.
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None,
                 max_positions: int) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self.scaling = dict(scaling) if scaling else None
        self.max_positions = max_positions
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None

    def get(self, num_positions: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables covering at least positions 0..num_positions-1, on `device` (host-side check)."""
        if self.cos is None or self.cos.device != device or num_positions > self.cos.shape[0]:
            size = max(self.max_positions, 1 << max(num_positions - 1, 0).bit_length())
            if self.cos is not None:
                size = max(size, self.cos.shape[0])
            inv_freq = rope_inv_freq(self.head_dim, self.theta, self.scaling)
            cos, sin = rope_cos_sin_cache(inv_freq, size)
            self.cos, self.sin = cos.to(device), sin.to(device)
        return self.cos, self.sin


class Attention(nn.Module):
    """Causal self-attention over the paged KV cache, for every family.

    q/k/v share one `qkv_proj` (loaded from HF's q_proj / k_proj / v_proj). Options:
    qk_norm: a norm class applied to q and k per head before RoPE (Qwen3: RMSNorm; Qwen3.5:
    OffsetRMSNorm); rotary_dim: RoPE on the first rotary_dim dims of each head (partial
    rotary); output_gate (Qwen3.5): q_proj also yields a per-head gate, out *= sigmoid(gate).
    kv_index: which KV cache pair of `ForwardBatch.kv_caches` this layer owns.
    """

    def __init__(self, config: ModelConfig, kv_index: int, *, bias: bool = False,
                 o_bias: bool = False, qk_norm: type[nn.Module] | None = None,
                 rotary_dim: int | None = None, output_gate: bool = False) -> None:
        super().__init__()
        self.kv_index = kv_index
        self.num_qo_heads = config.num_qo_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.rotary_dim = config.head_dim if rotary_dim is None else rotary_dim
        self.q_size = config.num_qo_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.scale = config.head_dim**-0.5
        self.output_gate = output_gate
        q_rows = self.q_size * (2 if output_gate else 1)
        self.qkv_proj = nn.Linear(config.hidden_size, q_rows + 2 * self.kv_size, bias=bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=o_bias)
        self.qk_norm = qk_norm is not None
        if qk_norm is not None:
            self.q_norm = qk_norm(config.head_dim, config.rms_norm_eps)
            self.k_norm = qk_norm(config.head_dim, config.rms_norm_eps)

    def shard_sizes(self) -> list[int]:
        return [self.q_size * (2 if self.output_gate else 1), self.kv_size, self.kv_size]

    def forward(self, x: torch.Tensor, batch: ForwardBatch,
                cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        num_tokens, d = x.shape[0], self.head_dim
        q, k, v = self.qkv_proj(x).split(self.shard_sizes(), dim=-1)
        gate = None
        if self.output_gate:
            q, gate = q.view(num_tokens, self.num_qo_heads, 2 * d).chunk(2, dim=-1)  # [T, Hq, D]
            gate = gate.reshape(num_tokens, self.q_size)
        q = q.reshape(num_tokens, self.num_qo_heads, d)  # [T, Hq, D]
        k = k.view(num_tokens, self.num_kv_heads, d)  # [T, Hk, D]
        v = v.view(num_tokens, self.num_kv_heads, d)  # [T, Hk, D]
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        r = self.rotary_dim
        if r == d:
            q, k = apply_rope(q, k, batch.positions, cos, sin)
        else:
            q_rot, k_rot = apply_rope(q[..., :r], k[..., :r], batch.positions, cos, sin)
            q = torch.cat([q_rot, q[..., r:]], dim=-1)
            k = torch.cat([k_rot, k[..., r:]], dim=-1)
        k_cache, v_cache = batch.kv_caches[self.kv_index]
        kv_append(k, v, k_cache, v_cache, batch.slot_mapping, backend=batch.kv_append_backend)
        out = paged_attention(
            q, k_cache, v_cache, batch.qo_indptr, batch.page_table, batch.kv_lens,
            scale=self.scale, max_q_len=batch.max_q_len, max_kv_len=batch.max_kv_len,
            backend=batch.attention_backend,
        ).reshape(num_tokens, self.q_size)  # [T, Hq * D]
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out)  # [T, hidden]


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), gate and up in one `gate_up_proj` (HF's gate_proj /
    up_proj)."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False) -> None:
        super().__init__()
        self.intermediate_size = intermediate
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def shard_sizes(self) -> list[int]:
        return [self.intermediate_size, self.intermediate_size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))  # [T, 2I] -> [T, I] -> [T, h]


def packable_linears(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Module name -> (weight, bias) of every nn.Linear of `model` that vibekit.models.linear's
    `pack_linears` may replace; a tied head (no `lm_head` module) is listed as "lm_head" with the
    embedding's weight (packed as its own copy). Every family's linears are only ever called,
    never read as weights, so all of them qualify."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out[name] = (module.weight, module.bias)
    if getattr(model, "lm_head", None) is None:
        out["lm_head"] = (model.model.embed_tokens.weight, None)
    return out


def fused_target(name: str) -> tuple[str, int]:
    """HF name -> (parameter name, shard index or -1 for an unfused parameter)."""
    module, _, leaf = name.rpartition(".")
    parent, _, proj = module.rpartition(".")
    if proj in FUSED_SHARDS:
        fused, shard = FUSED_SHARDS[proj]
        return f"{parent}.{fused}.{leaf}", shard
    return name, -1


@torch.no_grad()
def load_hf_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]], *,
                    rename: Callable[[str], str] = lambda name: name,
                    ignored_suffixes: tuple[str, ...] = ("rotary_emb.inv_freq",)) -> None:
    """Copy HF-named tensors into `model`'s (possibly fused) parameters, casting dtype and
    device. `rename` maps a checkpoint name to the model's ("" skips the tensor). A tied model
    (no `lm_head` module) skips lm_head.weight. Raises ValueError on an unknown name or a shape
    mismatch, and after the last tensor if any parameter (or fused shard) was never loaded."""
    params = dict(model.named_parameters())
    loaded: set[tuple[str, int]] = set()
    for hf_name, tensor in weights:
        name = rename(hf_name)
        if not name or name.endswith(ignored_suffixes):
            continue
        if name == "lm_head.weight" and getattr(model, "lm_head", None) is None:
            continue  # tied: the checkpoint's copy equals embed_tokens.weight
        target, shard = fused_target(name)
        param = params.get(target)
        if param is None:
            raise ValueError(f"checkpoint tensor {hf_name!r} has no place in "
                             f"{type(model).__name__} ({model.config.model_type})")
        dst = param.data
        if shard >= 0:
            sizes = model.get_submodule(target.rsplit(".", 2)[0]).shard_sizes()
            dst = dst.narrow(0, sum(sizes[:shard]), sizes[shard])
        if dst.shape != tensor.shape:
            raise ValueError(f"checkpoint tensor {hf_name!r} has shape {tuple(tensor.shape)}; "
                             f"the model expects {tuple(dst.shape)} (config mismatch?)")
        dst.copy_(tensor)
        loaded.add((target, shard))
    missing = [name for name in _expected_hf_names(model) if fused_target(name) not in loaded]
    if missing:
        raise ValueError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")


def _expected_hf_names(model: nn.Module) -> list[str]:
    names = []
    for name, _ in model.named_parameters():
        module, _, leaf = name.rpartition(".")
        parent, _, fused = module.rpartition(".")
        shards = [hf for hf, (f, _) in FUSED_SHARDS.items() if f == fused]
        names += [f"{parent}.{hf}.{leaf}" for hf in shards] if shards else [name]
    return names
