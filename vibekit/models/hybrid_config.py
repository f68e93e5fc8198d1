"""HybridConfig: the shape of a hybrid model whose layers are full attention or a recurrent
mixer (Mamba2 in Bamba, gated DeltaNet in Qwen3.5 / Qwen3-Next)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vibekit.config import ModelConfig


@dataclass(frozen=True)
class HybridConfig(ModelConfig):
    """A hybrid decoder: `layer_types[i]` is "full_attention" or "linear_attention" (the
    family's recurrent mixer, `mixer`: "mamba2" or "gated_delta"). The attention fields are
    ModelConfig's; the recurrent fields are those of the mixer (unused ones stay 0). Families:
    vibekit/models/bamba.py, qwen3_5.py (each maps its own HF config)."""

    layer_types: tuple[str, ...] = ()
    mixer: str = "mamba2"
    partial_rotary_factor: float = 1.0
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixer not in ("mamba2", "gated_delta"):
            raise ValueError(f"mixer {self.mixer!r} is not one of mamba2, gated_delta")
        if self.rope_scaling is not None:
            raise ValueError(f"rope_type {self.rope_type!r} is not supported for "
                             f"{self.model_type}; only default")
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for "
                             f"{self.num_layers} layers")
        bad = set(self.layer_types) - {"full_attention", "linear_attention"}
        if bad:
            raise ValueError(f"unknown layer types {sorted(bad)}; allowed: full_attention, "
                             f"linear_attention")
        if self.mixer == "mamba2":
            if self.mamba_num_heads * self.mamba_head_dim != self.mamba_intermediate_size:
                raise ValueError("mamba_num_heads * mamba_head_dim must equal "
                                 "mamba_expand * hidden_size")
            if self.mamba_num_heads % self.mamba_num_groups:
                raise ValueError("mamba_num_heads must be a multiple of mamba_num_groups")
        elif self.linear_num_value_heads % self.linear_num_key_heads:
            raise ValueError("linear_num_value_heads must be a multiple of linear_num_key_heads")

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


def as_float(value: Any) -> float:
    """A float from config.json, where transformers writes infinity as {"__float__": "Infinity"}."""
    if isinstance(value, dict):
        value = value.get("__float__", value)
    return float(value)
