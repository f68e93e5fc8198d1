"""Dummy models: built-in configs and seeded random weights with varied greedy output."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors.torch import save_file

from vibekit.config import ModelConfig
from vibekit.models.tokenizer import byte_level_tokenizer

# The byte-level tokenizer's <|endoftext|> id (see tokenizer.py).
_EOS_ID = 256

DUMMY_PRESETS: MappingProxyType[str, ModelConfig] = MappingProxyType({
    "smollm-135m": ModelConfig(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_layers=30, num_qo_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5,
        rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_ids=(_EOS_ID,),
    ),
    "tiny-llama": ModelConfig(
        model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128,
        num_layers=2, num_qo_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5,
        rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False,
        eos_token_ids=(_EOS_ID,),
    ),
})


def dummy_config(spec: str) -> ModelConfig:
    """A preset name, or the path of an HF config.json (or of a folder holding one)."""
    if spec in DUMMY_PRESETS:
        return DUMMY_PRESETS[spec]
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        from vibekit.models.registry import config_from_hf

        return config_from_hf(json.loads(path.read_text()))
    raise ValueError(f"unknown dummy model {spec!r}: use 'dummy:<preset>' with a preset in "
                     f"{sorted(DUMMY_PRESETS)}, or 'dummy:/path/to/config.json'")


def hf_parameter_shapes(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """The HF tensor names and shapes of a checkpoint for `config`, in checkpoint order."""
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    q, kv = config.num_qo_heads * d, config.num_kv_heads * d
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", (config.vocab_size, h))]
    for layer in range(config.num_layers):
        p = f"model.layers.{layer}."
        shapes += [(p + "input_layernorm.weight", (h,))]
        for name, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            shapes.append((f"{p}self_attn.{name}.weight", (rows, h)))
            if config.attention_bias:
                shapes.append((f"{p}self_attn.{name}.bias", (rows,)))
        if config.qk_norm:
            shapes += [(p + "self_attn.q_norm.weight", (d,)), (p + "self_attn.k_norm.weight", (d,))]
        shapes.append((p + "self_attn.o_proj.weight", (h, q)))
        if config.o_proj_bias:
            shapes.append((p + "self_attn.o_proj.bias", (h,)))
        shapes.append((p + "post_attention_layernorm.weight", (h,)))
        for name, shape in (("gate_proj", (i, h)), ("up_proj", (i, h)), ("down_proj", (h, i))):
            shapes.append((f"{p}mlp.{name}.weight", shape))
            if config.mlp_bias:
                shapes.append((f"{p}mlp.{name}.bias", shape[:1]))
    shapes.append(("model.norm.weight", (h,)))
    if not config.tie_word_embeddings:
        shapes.append(("lm_head.weight", (config.vocab_size, h)))
    return shapes


# Dummy init. NOTE: HF's init (every weight N(0, 0.02)) makes a deep random model emit one or
# two distinct tokens: attention averages over positions, every position's residual stream
# collapses to the same vector, and greedy decoding repeats a token. Here the embeddings keep
# std 0.02, every other matrix is unit-gain (std fan_in ** -0.5, so each branch adds O(1) to the
# residual stream and the embedding does not dominate the tied head), and q/k are scaled by
# _QK_GAIN so attention logits have std ~_QK_GAIN**2: sharp, content- and position-dependent
# attention that keeps positions apart. SmolLM-135M's shape then gives ~0.97 distinct tokens over
# 64 greedy steps, with no short loops (tests/models/test_dummy_models.py measures it).
_EMBED_STD = 0.02
_QK_GAIN = 3.0
_BIAS_STD = 0.02


def dummy_weights(config: ModelConfig, seed: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Seeded random float32 weights under HF names, for `load_weights` or a checkpoint.

    Generated on the CPU one tensor at a time, so equal on every device. Example::

        model = build_model(config)
        model.load_weights(dummy_weights(config, seed=0))
    """
    gen = torch.Generator().manual_seed(seed)
    for name, shape in hf_parameter_shapes(config):
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            yield name, torch.full(shape, _QK_GAIN)  # the norm undoes any q/k_proj gain
        elif name.endswith("norm.weight"):
            yield name, torch.ones(shape)
        elif name.endswith(".bias"):
            yield name, torch.randn(shape, generator=gen) * _BIAS_STD
        elif name == "model.embed_tokens.weight":
            yield name, torch.randn(shape, generator=gen) * _EMBED_STD
        else:
            gain = _QK_GAIN if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
            yield name, torch.randn(shape, generator=gen) * (gain / math.sqrt(shape[1]))


def save_dummy_checkpoint(config: ModelConfig | str, path: str | os.PathLike,
                          seed: int = 0) -> Path:
    """Write a dummy model as an HF folder (config.json, model.safetensors in float32, byte-level
    tokenizer), so HF transformers can serve as the reference for it. `config` is a ModelConfig
    or a dummy spec ("tiny-llama", "/path/config.json"). Returns the folder. Example::

        folder = save_dummy_checkpoint("tiny-llama", tmp_path / "ckpt")
        hf = AutoModelForCausalLM.from_pretrained(folder)  # the weights of load_model("dummy:...")
    """
    if isinstance(config, str):
        config = dummy_config(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2))
    save_file(dict(dummy_weights(config, seed)), path / "model.safetensors",
              metadata={"format": "pt"})
    byte_level_tokenizer(config.vocab_size).save_pretrained(path)
    return path


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """The HF config.json dict for `config` (`registry.config_from_hf` inverts it)."""
    from vibekit.models.registry import hf_architecture

    rope_scaling = {k: v for k, v in (config.rope_scaling or {}).items() if k != "type"}
    rope = {**rope_scaling, "rope_type": config.rope_type, "rope_theta": config.rope_theta}
    eos = list(config.eos_token_ids)
    return {
        "architectures": [hf_architecture(config.model_type)],
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_qo_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": config.hidden_act,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": rope,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias and config.model_type != "qwen2",
        "mlp_bias": config.mlp_bias,
        "sliding_window": config.sliding_window,
        "use_sliding_window": config.sliding_window is not None,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
        "pad_token_id": config.pad_token_id,
        "dtype": "float32",
    }
