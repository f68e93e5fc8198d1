"""The model registry: model_type -> the family file that implements it, found lazily.

A family file in vibekit/models/ declares `MODEL_TYPES` ({model_type: HF architecture name}),
`config_from_hf(hf_dict) -> config` and `model_class(config) -> nn.Module class`. Nothing is
imported until the first lookup, which imports each module of the package once to collect the
declarations: adding a family touches its own file (and its test), nothing else.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType
from typing import Any

import torch
from torch import nn

from vibekit.config import ModelConfig, resolve_dtype

_NOT_FAMILIES = {"base", "dummy", "hybrid_config", "hybrid_dummy", "hybrid_layers", "layers",
                 "loader", "registry", "tokenizer"}


@functools.cache
def _families() -> dict[str, ModuleType]:
    import vibekit.models as package

    families: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg or info.name in _NOT_FAMILIES:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for model_type in getattr(module, "MODEL_TYPES", {}):
            if model_type in families:
                raise RuntimeError(f"model_type {model_type!r} is declared by both "
                                   f"{families[model_type].__name__} and {module.__name__}")
            families[model_type] = module
    return families


def model_types() -> list[str]:
    """Every model_type vibekit implements."""
    return sorted(_families())


def family(model_type: str | None) -> ModuleType:
    families = _families()
    if model_type not in families:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: "
                         f"{sorted(families)}")
    return families[model_type]


def hf_architecture(model_type: str) -> str:
    """The HF `architectures` name of a model_type (what config.json lists)."""
    return family(model_type).MODEL_TYPES[model_type]


def config_from_hf(hf: dict[str, Any] | Any) -> ModelConfig:
    """The vibekit config of an HF config.json dict (or a transformers PretrainedConfig), by
    its model_type's family. Raises ValueError naming the supported types."""
    if not isinstance(hf, dict):
        hf = hf.to_dict()
    model_type = hf.get("model_type")
    try:
        return family(model_type).config_from_hf(hf)
    except ValueError as e:
        if "is not supported" in str(e) and "model_type" in str(e):
            archs = hf.get("architectures") or []
            raise ValueError(f"{e} (architectures {archs})") from None
        raise


def build_model(config: ModelConfig, dtype: str | torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> nn.Module:
    """Build the model for `config.model_type` in eval mode, without autograd.

    The weights are UNINITIALIZED (allocated on `device`, never written): follow with
    `model.load_weights(...)`, as `load_model` does. Example::

        model = build_model(config, torch.bfloat16, "cuda")
        model.load_weights(iter_weights(weight_files("path/to/checkpoint")))
    """
    cls = family(config.model_type).model_class(config)
    with torch.device("meta"):  # skip the default random init; load_weights writes everything
        model = cls(config)
    model = model.to(resolve_dtype(dtype)).to_empty(device=device)
    return model.eval().requires_grad_(False)
