"""Tiny random HF transformers checkpoints: the reference the model tests compare against."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

_SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=300, max_position_embeddings=256,
              rms_norm_eps=1e-5)

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}

FAMILIES = {
    "llama3": lambda: LlamaConfig(**_SMALL, rope_parameters=dict(LLAMA3_ROPE)),
    "mistral": lambda: MistralConfig(**{**_SMALL, "vocab_size": 1000, "num_hidden_layers": 3}),
    "qwen2": lambda: Qwen2Config(**_SMALL),
    "qwen3": lambda: Qwen3Config(**{**_SMALL, "head_dim": 32}),
    "llama-tied": lambda: LlamaConfig(**_SMALL, tie_word_embeddings=True),
}


def make_hf_checkpoint(path: Path, family: str, seed: int = 0, max_shard_size: str | None = None,
                       **overrides) -> Path:
    """Save a tiny HF model with O(1) random weights (the 0.02 default init would make almost
    any implementation match to 1e-4) and return its folder."""
    config = FAMILIES[family]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.normal_(0, 0.2)
            elif "embed_tokens" in name:
                param.normal_(0, 1.0)
            else:
                param.normal_(0, 1.5 / math.sqrt(param.shape[1]))
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kwargs)
    return path


def hf_logits(path: Path, token_ids: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """HF's logits [T, V] (float32) for one sequence."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float()
