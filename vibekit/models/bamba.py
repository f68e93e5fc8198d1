"""Bamba (IBM): Mamba2 mixer layers with a few full-attention layers, on vibekit ops, the paged
KV cache and recurrent-state slots. HF parameter names are kept as they are."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.config import hf_common_fields
from vibekit.core.forward_batch import ForwardBatch
from vibekit.models.hybrid_config import HybridConfig, as_float
from vibekit.models.hybrid_layers import DepthwiseConv, HybridForCausalLM
from vibekit.models.layers import Attention, GatedMLP, RMSNorm
from vibekit.ops.conv1d import causal_conv1d
from vibekit.ops.mamba2_scan import mamba2_scan
from vibekit.ssm.spec import StateSpec

MODEL_TYPES = {"bamba": "BambaForCausalLM"}


def config_from_hf(hf: dict) -> HybridConfig:
    """HybridConfig from a Bamba config.json (Mamba2 layers, attention at attn_layer_indices)."""
    common = hf_common_fields(hf)
    num_layers = common["num_layers"]
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    attn = set(hf.get("attn_layer_indices") or [])
    hidden = hf["hidden_size"]
    expand = hf.get("mamba_expand", 2)
    num_heads = hf.get("mamba_n_heads", 128)
    head_dim = hf.get("mamba_d_head", "auto")
    if head_dim == "auto":
        head_dim = expand * hidden // num_heads
    limit = hf.get("time_step_limit") or (0.0, float("inf"))
    return HybridConfig(
        **common,
        attention_bias=bool(hf.get("attention_bias", False)),
        mixer="mamba2",
        layer_types=tuple("full_attention" if i in attn else "linear_attention"
                          for i in range(num_layers)),
        partial_rotary_factor=float(rope.get("partial_rotary_factor",
                                             hf.get("partial_rotary_factor", 1.0))),
        mamba_num_heads=num_heads, mamba_head_dim=head_dim,
        mamba_num_groups=hf.get("mamba_n_groups", 1),
        mamba_state_size=hf.get("mamba_d_state", 256),
        mamba_conv_kernel=hf.get("mamba_d_conv", 4), mamba_expand=expand,
        mamba_chunk_size=hf.get("mamba_chunk_size", 256),
        mamba_conv_bias=bool(hf.get("mamba_conv_bias", True)),
        mamba_proj_bias=bool(hf.get("mamba_proj_bias", False)),
        time_step_limit=(as_float(limit[0]), as_float(limit[1])),
    )


def model_class(config: HybridConfig) -> type[nn.Module]:
    return BambaForCausalLM


class GroupGatedRMSNorm(nn.Module):
    """norm(x * silu(gate)) per group of channels, in float32 (Mamba2's gated RMSNorm)."""

    def __init__(self, dim: int, group_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        h = x.float() * F.silu(gate.float())
        h = h.view(h.shape[0], -1, self.group_size)  # [T, G, D/G]
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.view(x.shape).to(dtype)


class Mamba2Mixer(nn.Module):
    def __init__(self, config: HybridConfig, state_index: int) -> None:
        super().__init__()
        self.state_index = state_index
        self.num_heads, self.head_dim = config.mamba_num_heads, config.mamba_head_dim
        self.num_groups, self.state_size = config.mamba_num_groups, config.mamba_state_size
        self.d_inner = config.mamba_intermediate_size
        self.conv_dim = self.d_inner + 2 * self.num_groups * self.state_size
        self.chunk_size = config.mamba_chunk_size
        self.time_step_limit = config.time_step_limit
        bias = config.mamba_proj_bias
        self.in_proj = nn.Linear(config.hidden_size, self.d_inner + self.conv_dim + self.num_heads,
                                 bias=bias)
        self.conv1d = DepthwiseConv(self.conv_dim, config.mamba_conv_kernel, config.mamba_conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.D = nn.Parameter(torch.empty(self.num_heads))
        self.norm = GroupGatedRMSNorm(self.d_inner, self.d_inner // self.num_groups,
                                      config.rms_norm_eps)
        self.out_proj = nn.Linear(self.d_inner, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        num_tokens = x.shape[0]
        gate, xbc, dt = self.in_proj(x).split([self.d_inner, self.conv_dim, self.num_heads], -1)
        conv_state, ssm_state = batch.state_caches[self.state_index]
        xbc = causal_conv1d(xbc, self.conv1d.weight[:, 0], self.conv1d.bias, conv_state,
                            batch.state_slots, batch.qo_indptr, "silu", max_q_len=batch.max_q_len)
        gn = self.num_groups * self.state_size
        xs, b, c = xbc.split([self.d_inner, gn, gn], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [T, H]
        if self.time_step_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.time_step_limit)
        y = mamba2_scan(
            xs.view(num_tokens, self.num_heads, self.head_dim), dt, -torch.exp(self.A_log.float()),
            b.view(num_tokens, self.num_groups, self.state_size),
            c.view(num_tokens, self.num_groups, self.state_size), self.D, ssm_state,
            batch.state_slots, batch.qo_indptr, chunk_size=self.chunk_size,
            max_q_len=batch.max_q_len,
        )  # [T, H, P] float32
        y = self.norm(y.view(num_tokens, self.d_inner), gate, x.dtype)
        return self.out_proj(y)


class BambaDecoderLayer(nn.Module):
    def __init__(self, config: HybridConfig, layer_id: int, index: int) -> None:
        super().__init__()
        self.is_attention = config.layer_types[layer_id] == "full_attention"
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if self.is_attention:
            self.self_attn = Attention(config, index, bias=config.attention_bias,
                                       o_bias=config.attention_bias,
                                       rotary_dim=config.rotary_dim)
        else:
            self.mamba = Mamba2Mixer(config, index)
        self.pre_ff_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = GatedMLP(config.hidden_size, config.intermediate_size, config.mlp_bias)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = x + (self.self_attn(h, batch, cos, sin) if self.is_attention
                 else self.mamba(h, batch))
        return x + self.feed_forward(self.pre_ff_layernorm(x))


class BambaForCausalLM(HybridForCausalLM):
    """Bamba causal LM (HF `BambaForCausalLM` checkpoints). Example::

        model, config, tok = load_model("path/to/bamba", torch.float32, "cpu")
    """

    _final_norm_name = "final_layernorm"

    def __init__(self, config: HybridConfig) -> None:
        super().__init__(config)
        attn, rec = config.attention_layers, config.recurrent_layers
        self.model.layers = nn.ModuleList(
            BambaDecoderLayer(config, i, attn.index(i) if i in attn else rec.index(i))
            for i in range(config.num_layers)
        )
        self.model.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def state_spec(self) -> StateSpec:
        c = self.config
        conv_dim = c.mamba_intermediate_size + 2 * c.mamba_num_groups * c.mamba_state_size
        return StateSpec(len(c.recurrent_layers), (conv_dim, c.mamba_conv_kernel - 1),
                         (c.mamba_num_heads, c.mamba_head_dim, c.mamba_state_size),
                         mixer="mamba2")
