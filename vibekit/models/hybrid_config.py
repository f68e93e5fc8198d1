"""HybridConfig: the shape of a hybrid model whose layers are full attention or a recurrent
mixer (Mamba2 in Bamba, gated DeltaNet in Qwen3.5 / Qwen3-Next)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# model_type -> HF architecture name, for the hybrid families vibekit implements.
HYBRID_ARCHITECTURES = {
    "bamba": "BambaForCausalLM",
    "qwen3_5_text": "Qwen3_5ForCausalLM",
}
MIXERS = {"bamba": "mamba2", "qwen3_5_text": "gated_delta"}


@dataclass(frozen=True)
class HybridConfig:
    """A hybrid decoder: `layer_types[i]` is "full_attention" or "linear_attention" (the
    family's recurrent mixer, `mixer`). Attention fields follow `ModelConfig`; the recurrent
    fields are those of the mixer (unused ones stay 0)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    layer_types: tuple[str, ...]
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 1.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    # Mamba2 (bamba)
    mamba_num_heads: int = 0
    mamba_head_dim: int = 0
    mamba_num_groups: int = 1
    mamba_state_size: int = 0
    mamba_conv_kernel: int = 4
    mamba_expand: int = 2
    mamba_chunk_size: int = 256
    mamba_conv_bias: bool = True
    mamba_proj_bias: bool = False
    time_step_limit: tuple[float, float] = (0.0, float("inf"))
    # gated DeltaNet (qwen3_5_text)
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 4
    hidden_act: str = "silu"
    sliding_window: int | None = None  # NOTE: read by EngineConfig; hybrids have none
    rope_scaling: dict[str, Any] | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.model_type not in HYBRID_ARCHITECTURES:
            raise ValueError(f"model_type {self.model_type!r} is not a supported hybrid; "
                             f"supported: {sorted(HYBRID_ARCHITECTURES)}")
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for "
                             f"{self.num_layers} layers")
        bad = set(self.layer_types) - {"full_attention", "linear_attention"}
        if bad:
            raise ValueError(f"unknown layer types {sorted(bad)}; allowed: full_attention, "
                             f"linear_attention")
        if self.hidden_act not in ("silu", "swish"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; only silu")
        if self.num_qo_heads % self.num_kv_heads:
            raise ValueError(f"num_qo_heads ({self.num_qo_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.mixer == "mamba2":
            if self.mamba_num_heads * self.mamba_head_dim != self.mamba_intermediate_size:
                raise ValueError("mamba_num_heads * mamba_head_dim must equal "
                                 "mamba_expand * hidden_size")
            if self.mamba_num_heads % self.mamba_num_groups:
                raise ValueError("mamba_num_heads must be a multiple of mamba_num_groups")
        elif self.linear_num_value_heads % self.linear_num_key_heads:
            raise ValueError("linear_num_value_heads must be a multiple of linear_num_key_heads")

    @property
    def mixer(self) -> str:
        return MIXERS[self.model_type]

    @property
    def mamba_intermediate_size(self) -> int:
        return self.mamba_expand * self.hidden_size

    @property
    def attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == "full_attention"]

    @property
    def recurrent_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == "linear_attention"]

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def replace(self, **changes: Any) -> HybridConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Rough parameter count (projections and embeddings)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        attn = h * self.head_dim * (2 * self.num_qo_heads + 2 * self.num_kv_heads)
        if self.mixer == "mamba2":
            d_in = self.mamba_intermediate_size
            conv = d_in + 2 * self.mamba_num_groups * self.mamba_state_size
            mix = h * (d_in + conv + self.mamba_num_heads) + d_in * h
        else:
            kd = self.linear_num_key_heads * self.linear_key_head_dim
            vd = self.linear_num_value_heads * self.linear_value_head_dim
            mix = h * (2 * kd + 2 * vd + 2 * self.linear_num_value_heads) + vd * h
        layers = sum(attn if t == "full_attention" else mix for t in self.layer_types)
        emb = v * h * (1 if self.tie_word_embeddings else 2)
        return layers + self.num_layers * 3 * h * i + emb

    @classmethod
    def from_hf(cls, hf: dict[str, Any] | Any) -> HybridConfig:
        """Build from an HF config.json dict (bamba, qwen3_5_text) or a PretrainedConfig."""
        if not isinstance(hf, dict):
            hf = hf.to_dict()
        model_type = hf.get("model_type")
        if model_type not in HYBRID_ARCHITECTURES:
            raise ValueError(f"model_type {model_type!r} is not a supported hybrid; "
                             f"supported: {sorted(HYBRID_ARCHITECTURES)}")
        num_layers = hf["num_hidden_layers"]
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"rope_type {rope_type!r} is not supported for {model_type}; "
                             f"only default")
        num_qo_heads = hf["num_attention_heads"]
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None
                                                                    else ())
        common = dict(
            model_type=model_type, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"], num_layers=num_layers,
            num_qo_heads=num_qo_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_qo_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_qo_heads,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=bool(hf.get("attention_bias", False)),
            hidden_act=hf.get("hidden_act", "silu"), bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids, pad_token_id=hf.get("pad_token_id"),
        )
        if model_type == "bamba":
            attn = set(hf.get("attn_layer_indices") or [])
            hidden = hf["hidden_size"]
            expand = hf.get("mamba_expand", 2)
            num_heads = hf.get("mamba_n_heads", 128)
            head_dim = hf.get("mamba_d_head", "auto")
            if head_dim == "auto":
                head_dim = expand * hidden // num_heads
            limit = hf.get("time_step_limit") or (0.0, float("inf"))
            return cls(
                **common,
                layer_types=tuple("full_attention" if i in attn else "linear_attention"
                                  for i in range(num_layers)),
                partial_rotary_factor=float(rope.get("partial_rotary_factor",
                                                     hf.get("partial_rotary_factor", 1.0))),
                mlp_bias=bool(hf.get("mlp_bias", False)),
                mamba_num_heads=num_heads, mamba_head_dim=head_dim,
                mamba_num_groups=hf.get("mamba_n_groups", 1),
                mamba_state_size=hf.get("mamba_d_state", 256),
                mamba_conv_kernel=hf.get("mamba_d_conv", 4), mamba_expand=expand,
                mamba_chunk_size=hf.get("mamba_chunk_size", 256),
                mamba_conv_bias=bool(hf.get("mamba_conv_bias", True)),
                mamba_proj_bias=bool(hf.get("mamba_proj_bias", False)),
                time_step_limit=(_as_float(limit[0]), _as_float(limit[1])),
            )
        layer_types = hf.get("layer_types")
        if layer_types is None:
            interval = hf.get("full_attention_interval", 4)
            layer_types = ["linear_attention" if (i + 1) % interval else "full_attention"
                           for i in range(num_layers)]
        return cls(
            **common, layer_types=tuple(layer_types[:num_layers]),
            partial_rotary_factor=float(rope.get("partial_rotary_factor",
                                                 hf.get("partial_rotary_factor", 0.25))),
            linear_num_key_heads=hf.get("linear_num_key_heads", 16),
            linear_num_value_heads=hf.get("linear_num_value_heads", 32),
            linear_key_head_dim=hf.get("linear_key_head_dim", 128),
            linear_value_head_dim=hf.get("linear_value_head_dim", 128),
            linear_conv_kernel=hf.get("linear_conv_kernel_dim", 4),
        )


def _as_float(value: Any) -> float:
    """A float from config.json, where transformers writes infinity as {"__float__": "Infinity"}."""
    if isinstance(value, dict):
        value = value.get("__float__", value)
    return float(value)
