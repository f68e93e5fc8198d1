"""Qwen3.5 (text): gated DeltaNet linear-attention layers with every fourth layer full
(gated) attention, on vibekit ops, the paged KV cache and recurrent-state slots."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.config import hf_common_fields
from vibekit.core.forward_batch import ForwardBatch
from vibekit.models.hybrid_config import HybridConfig
from vibekit.models.hybrid_layers import DepthwiseConv, HybridForCausalLM
from vibekit.models.layers import Attention, GatedMLP, OffsetRMSNorm
from vibekit.ops.conv1d import causal_conv1d
from vibekit.ops.gated_delta import gated_delta_rule
from vibekit.ssm.spec import StateSpec

# "qwen3_5" is the multimodal checkpoint: its text_config is the language model.
MODEL_TYPES = {"qwen3_5_text": "Qwen3_5ForCausalLM",
               "qwen3_5": "Qwen3_5ForConditionalGeneration"}


def config_from_hf(hf: dict) -> HybridConfig:
    """HybridConfig from a Qwen3.5 config.json (gated DeltaNet, full attention every
    `full_attention_interval` layers), or from a multimodal one's text_config."""
    if hf.get("model_type") == "qwen3_5" and "text_config" in hf:
        hf = {**hf["text_config"], "model_type": "qwen3_5_text"}
    common = hf_common_fields(hf)
    num_layers = common["num_layers"]
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    layer_types = hf.get("layer_types")
    if layer_types is None:
        interval = hf.get("full_attention_interval", 4)
        layer_types = ["linear_attention" if (i + 1) % interval else "full_attention"
                       for i in range(num_layers)]
    return HybridConfig(
        **common,
        attention_bias=bool(hf.get("attention_bias", False)),
        mixer="gated_delta",
        layer_types=tuple(layer_types[:num_layers]),
        partial_rotary_factor=float(rope.get("partial_rotary_factor",
                                             hf.get("partial_rotary_factor", 0.25))),
        linear_num_key_heads=hf.get("linear_num_key_heads", 16),
        linear_num_value_heads=hf.get("linear_num_value_heads", 32),
        linear_key_head_dim=hf.get("linear_key_head_dim", 128),
        linear_value_head_dim=hf.get("linear_value_head_dim", 128),
        linear_conv_kernel=hf.get("linear_conv_kernel_dim", 4),
    )


def model_class(config: HybridConfig) -> type[nn.Module]:
    return Qwen3_5ForCausalLM


class HeadGatedRMSNorm(nn.Module):
    """RMSNorm per head, then times silu(gate) (norm before gate), in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return (h * F.silu(gate.float())).to(x.dtype)


class GatedDeltaNet(nn.Module):
    def __init__(self, config: HybridConfig, state_index: int) -> None:
        super().__init__()
        self.state_index = state_index
        self.num_k_heads = config.linear_num_key_heads
        self.num_v_heads = config.linear_num_value_heads
        self.k_dim, self.v_dim = config.linear_key_head_dim, config.linear_value_head_dim
        self.key_size = self.num_k_heads * self.k_dim
        self.value_size = self.num_v_heads * self.v_dim
        self.conv_dim = 2 * self.key_size + self.value_size
        h = config.hidden_size
        self.in_proj_qkv = nn.Linear(h, self.conv_dim, bias=False)
        self.in_proj_z = nn.Linear(h, self.value_size, bias=False)
        self.in_proj_b = nn.Linear(h, self.num_v_heads, bias=False)
        self.in_proj_a = nn.Linear(h, self.num_v_heads, bias=False)
        self.conv1d = DepthwiseConv(self.conv_dim, config.linear_conv_kernel, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(self.num_v_heads))
        self.A_log = nn.Parameter(torch.empty(self.num_v_heads))
        self.norm = HeadGatedRMSNorm(self.v_dim, config.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_size, h, bias=False)

    def forward(self, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        num_tokens = x.shape[0]
        conv_state, state = batch.state_caches[self.state_index]
        qkv = causal_conv1d(self.in_proj_qkv(x), self.conv1d.weight[:, 0], None, conv_state,
                            batch.state_slots, batch.qo_indptr, "silu", max_q_len=batch.max_q_len)
        q, k, v = qkv.split([self.key_size, self.key_size, self.value_size], dim=-1)
        beta = torch.sigmoid(self.in_proj_b(x))  # [T, Hv]
        g = -self.A_log.float().exp() * F.softplus(self.in_proj_a(x).float() + self.dt_bias)
        o = gated_delta_rule(
            q.reshape(num_tokens, self.num_k_heads, self.k_dim),
            k.reshape(num_tokens, self.num_k_heads, self.k_dim),
            v.reshape(num_tokens, self.num_v_heads, self.v_dim), g, beta, state,
            batch.state_slots, batch.qo_indptr, max_q_len=batch.max_q_len,
        )  # [T, Hv, Dv] float32
        z = self.in_proj_z(x).view(num_tokens, self.num_v_heads, self.v_dim)
        o = self.norm(o.to(x.dtype), z)
        return self.out_proj(o.reshape(num_tokens, self.value_size))


class Qwen3_5DecoderLayer(nn.Module):
    def __init__(self, config: HybridConfig, layer_id: int, index: int) -> None:
        super().__init__()
        self.is_attention = config.layer_types[layer_id] == "full_attention"
        if self.is_attention:
            self.self_attn = Attention(config, index, bias=config.attention_bias,
                                       o_bias=config.attention_bias, qk_norm=OffsetRMSNorm,
                                       rotary_dim=config.rotary_dim, output_gate=True)
        else:
            self.linear_attn = GatedDeltaNet(config, index)
        self.input_layernorm = OffsetRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = OffsetRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = x + (self.self_attn(h, batch, cos, sin) if self.is_attention
                 else self.linear_attn(h, batch))
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3_5ForCausalLM(HybridForCausalLM):
    """Qwen3.5 text causal LM (HF `Qwen3_5ForCausalLM` checkpoints; the language model of a
    `Qwen3_5ForConditionalGeneration` checkpoint loads too, its vision tower skipped)."""

    _ignored_suffixes = ("rotary_emb.inv_freq",)

    def __init__(self, config: HybridConfig) -> None:
        super().__init__(config)
        attn, rec = config.attention_layers, config.recurrent_layers
        self.model.layers = nn.ModuleList(
            Qwen3_5DecoderLayer(config, i, attn.index(i) if i in attn else rec.index(i))
            for i in range(config.num_layers)
        )
        self.model.norm = OffsetRMSNorm(config.hidden_size, config.rms_norm_eps)

    def _rename(self, name: str) -> str:
        if name.startswith(("mtp.", "model.visual.")):
            return ""  # multi-token-prediction head and vision tower: not used for text
        return name.replace("model.language_model.", "model.", 1)

    def state_spec(self) -> StateSpec:
        c = self.config
        conv_dim = 2 * c.linear_num_key_heads * c.linear_key_head_dim + (
            c.linear_num_value_heads * c.linear_value_head_dim)
        return StateSpec(len(c.recurrent_layers), (conv_dim, c.linear_conv_kernel - 1),
                         (c.linear_num_value_heads, c.linear_key_head_dim,
                          c.linear_value_head_dim), mixer="gated_delta")
