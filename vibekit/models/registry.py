"""model_type -> model class, and `build_model`."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import torch
from torch import nn

from vibekit.config import ModelConfig, resolve_dtype
from vibekit.models.bamba import BambaForCausalLM
from vibekit.models.llama import LlamaForCausalLM
from vibekit.models.qwen3_5 import Qwen3_5ForCausalLM

MODEL_CLASSES: MappingProxyType[str, Callable[[ModelConfig], nn.Module]] = MappingProxyType({
    "llama": LlamaForCausalLM,
    "mistral": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
    "qwen3": LlamaForCausalLM,
    "bamba": BambaForCausalLM,
    "qwen3_5_text": Qwen3_5ForCausalLM,
})


def build_model(config: ModelConfig, dtype: str | torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> nn.Module:
    """Build the model for `config.model_type` in eval mode, without autograd.

    The weights are UNINITIALIZED (allocated on `device`, never written): follow with
    `model.load_weights(...)`, as `load_model` does. Example::

        model = build_model(config, torch.bfloat16, "cuda")
        model.load_weights(iter_hf_weights("path/to/checkpoint"))
    """
    cls = MODEL_CLASSES.get(config.model_type)
    if cls is None:
        raise ValueError(f"no model for model_type {config.model_type!r}; "
                         f"registered: {sorted(MODEL_CLASSES)}")
    with torch.device("meta"):  # skip the default random init; load_weights writes everything
        model = cls(config)
    model = model.to(resolve_dtype(dtype)).to_empty(device=device)
    return model.eval().requires_grad_(False)
