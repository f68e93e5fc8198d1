"""Load a model: an HF checkpoint folder, a zoo model ("zoo:..."), or dummy weights
from a config ("dummy:...")."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vibekit.config import ModelConfig, resolve_dtype
from vibekit.models.dummy import DUMMY_PRESETS, dummy_config, dummy_weights
from vibekit.models.hybrid_dummy import hybrid_dummy_config, hybrid_dummy_hf_model
from vibekit.models.registry import build_model, config_from_hf
from vibekit.models.tokenizer import byte_level_tokenizer

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_model(
    source: str | os.PathLike, dtype: str | torch.dtype, device: str | torch.device,
    seed: int = 0,
) -> tuple[nn.Module, ModelConfig, PreTrainedTokenizerBase | None]:
    """Load `(model, config, tokenizer)` from an HF folder or a dummy spec.

    source:
      "path/to/hf_folder"        config.json + model.safetensors (or a sharded index, or
                                 pytorch_model.bin); tokenizer via AutoTokenizer if its files
                                 exist, else None
      "dummy:<preset>"           random weights for a built-in config (see DUMMY_PRESETS and,
                                 for hybrids, HYBRID_DUMMY_PRESETS)
      "dummy:/path/config.json"  random weights for an HF config.json (or a folder holding one)
      "zoo:<name>"               a model trained in this repository (see vibekit.zoo)
    Dummy models get `seed`-determined weights that give varied greedy output, and the
    byte-level tokenizer. Example::

        model, config, tok = load_model("dummy:tiny-llama", torch.float32, "cpu")
    """
    dtype, device = resolve_dtype(dtype), torch.device(device)
    text = resolve_source(source)
    if text.startswith("dummy:") and hybrid_dummy_config(text[len("dummy:"):]) is not None:
        hf = hybrid_dummy_hf_model(text[len("dummy:"):], seed)
        config = config_from_hf(hf.config.to_dict())
        model = build_model(config, dtype, device)
        model.load_weights(hf.state_dict().items())
        return model, config, byte_level_tokenizer(config.vocab_size)
    if text.startswith("dummy:"):
        config = dummy_config(text[len("dummy:"):])
        model = build_model(config, dtype, device)
        model.load_weights(dummy_weights(config, seed))
        return model, config, byte_level_tokenizer(config.vocab_size)
    path = Path(text)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"unknown model source {text!r}: expected an HF checkpoint folder with config.json, "
            f"'dummy:<preset>' (presets: {', '.join(sorted(DUMMY_PRESETS))}), "
            f"or 'dummy:/path/to/config.json'"
        )
    config = config_from_hf(json.loads((path / "config.json").read_text()))
    files = weight_files(path)  # fail on missing weights before allocating the model
    model = build_model(config, dtype, device)
    model.load_weights(iter_weights(files))
    tokenizer = None
    if any((path / name).is_file() for name in _TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, config, tokenizer


def resolve_source(source: str | os.PathLike) -> str:
    """`source` as load_model reads it: "zoo:<name>" becomes that model's folder; anything else
    (a folder, "dummy:...") is returned as it is."""
    text = os.fspath(source)
    if text.startswith("zoo:"):
        from vibekit import zoo

        text = os.fspath(zoo.path(text[len("zoo:"):]))
    return text


def generation_config(source: str | os.PathLike) -> dict:
    """The generation_config.json of an HF folder or zoo model (what HF generate honours), or
    {} where there is none (dummy models, folders without one)."""
    text = resolve_source(source)
    if text.startswith("dummy:"):
        return {}
    path = Path(text) / "generation_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The weight files of an HF folder, in load order: model.safetensors, the shards of
    model.safetensors.index.json, pytorch_model.bin, or the shards of its index."""
    path = Path(path)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            weight_map = json.loads((path / index).read_text())["weight_map"]
            shards = [path / name for name in dict.fromkeys(weight_map.values())]
            absent = [str(p.name) for p in shards if not p.is_file()]
            if absent:
                raise FileNotFoundError(f"{path / index} lists shards that are missing: {absent}")
            return shards
    raise FileNotFoundError(
        f"no weights in {path}: expected model.safetensors, model.safetensors.index.json, "
        f"pytorch_model.bin or pytorch_model.bin.index.json"
    )


def iter_weights(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, CPU tensor) pairs, one file open at a time."""
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    yield name, f.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            yield from state.items()
            del state
