"""Load a llama-family model onto MLX from the sources `vibekit.models.load_model` accepts (an HF
folder, "zoo:<name>", "dummy:<preset>" or "dummy:/path/config.json"), and quantize its weights
with mlx's affine `quantize` (group size 64, the format mlx-lm writes)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import torch

from vibekit.config import ModelConfig, resolve_dtype
from vibekit.models import llama
from vibekit.models.dummy import dummy_config, dummy_weights
from vibekit.models.hybrid_dummy import hybrid_dummy_config
from vibekit.models.loader import weight_files
from vibekit.models.mlx.llama import MLXLlamaForCausalLM
from vibekit.models.registry import config_from_hf
from vibekit.models.tokenizer import byte_level_tokenizer
from vibekit.ops.mlx.dtype import mx_dtype

# quantization option -> bits of mx.quantize (affine, group size 64: mlx-lm's default).
QUANTIZATIONS = {"mlx-q4": 4, "mlx-q8": 8}
QUANT_GROUP_SIZE = 64

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_mlx_model(source: str | os.PathLike, dtype: str | torch.dtype = "float32",
                   seed: int = 0, quantization: str | None = None,
                   ) -> tuple[MLXLlamaForCausalLM, ModelConfig, Any]:
    """`(model, config, tokenizer)` on MLX; the same sources, weights and tokenizer as
    `load_model` (dummy weights are the torch path's, seed for seed). quantization: None,
    "mlx-q4" or "mlx-q8" (see `quantize_model`).

    Example::

        model, config, tok = load_mlx_model("dummy:tiny-llama", "float32", quantization="mlx-q8")
    """
    dtype_mx = mx_dtype(resolve_dtype(dtype))
    text = os.fspath(source)
    if text.startswith("zoo:"):
        from vibekit import zoo

        text = os.fspath(zoo.path(text[len("zoo:"):]))
    tokenizer = None
    if text.startswith("dummy:"):
        spec = text[len("dummy:"):]
        if hybrid_dummy_config(spec) is not None:
            raise ValueError(f"{text!r} is a hybrid (recurrent) model; the MLX backend serves "
                             f"the dense llama family only ({', '.join(llama.MODEL_TYPES)})")
        config = dummy_config(spec)
        _check_family(config)
        weights: Iterator[tuple[str, mx.array]] = (
            (name, _to_mx(t)) for name, t in dummy_weights(config, seed))
        tokenizer = byte_level_tokenizer(config.vocab_size)
    else:
        path = Path(text)
        if not (path / "config.json").is_file():
            raise ValueError(f"unknown model source {text!r}: expected an HF checkpoint folder "
                             "with config.json, 'dummy:<preset>' or 'dummy:/path/config.json'")
        config = config_from_hf(json.loads((path / "config.json").read_text()))
        _check_family(config)
        weights = _iter_weights(weight_files(path))
        if any((path / name).is_file() for name in _TOKENIZER_FILES):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
    model = MLXLlamaForCausalLM(config)
    load_weights(model, weights, dtype_mx)
    if quantization is not None:
        quantize_model(model, quantization)
    model.pack()
    mx.eval(model.parameters())
    return model, config, tokenizer


def load_weights(model: MLXLlamaForCausalLM, weights: Iterator[tuple[str, mx.array]],
                 dtype: mx.Dtype) -> None:
    """HF-named arrays into the model, cast to dtype; raises ValueError naming unknown, missing
    or misshapen tensors."""
    expected = dict(nn.utils.tree_flatten(model.parameters()))
    tied = model.config.tie_word_embeddings
    loaded: dict[str, mx.array] = {}
    for name, array in weights:
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        if name not in expected:
            raise ValueError(f"checkpoint tensor {name!r} has no place in the MLX "
                             f"{model.config.model_type} model")
        if tuple(array.shape) != tuple(expected[name].shape):
            raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(array.shape)}; the "
                             f"model expects {tuple(expected[name].shape)} (config mismatch?)")
        loaded[name] = array.astype(dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise ValueError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    model.load_weights(list(loaded.items()), strict=True)


def quantize_model(model: MLXLlamaForCausalLM, quantization: str) -> None:
    """Replace every Linear and the embedding whose input size is a multiple of 64 by mlx's
    affine-quantized version (mx.quantize, group size 64, 4 or 8 bits, a scale and a bias per
    group: the layout mlx-lm's `convert -q` writes). A tied head then reads the quantized
    embedding. In place."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r} is not supported on MLX; use one of "
                         f"{sorted(QUANTIZATIONS)}")
    if model.packed:
        raise ValueError("the model's projections are already packed: quantize before "
                         "model.pack() (load_mlx_model(..., quantization=...) does)")

    def eligible(_path: str, module: nn.Module) -> bool:
        return (isinstance(module, (nn.Linear, nn.Embedding))
                and module.weight.shape[-1] % QUANT_GROUP_SIZE == 0)

    nn.quantize(model, group_size=QUANT_GROUP_SIZE, bits=QUANTIZATIONS[quantization],
                class_predicate=eligible)


def _check_family(config: ModelConfig) -> None:
    if config.model_type not in llama.MODEL_TYPES:
        raise ValueError(f"model_type {config.model_type!r} is not supported on MLX; "
                         f"supported: {', '.join(llama.MODEL_TYPES)}")


def _to_mx(tensor: torch.Tensor) -> mx.array:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        return mx.array(tensor.float().numpy()).astype(mx.bfloat16)
    return mx.array(tensor.numpy())


def _iter_weights(files: list[Path]) -> Iterator[tuple[str, mx.array]]:
    for file in files:
        if file.suffix == ".safetensors":
            yield from mx.load(str(file)).items()
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            for name, tensor in state.items():
                yield name, _to_mx(tensor)
            del state
