"""Bad sources, configs and checkpoints fail at load time with errors that say what is allowed."""

from __future__ import annotations

import json

import pytest
import torch
from hf_reference import make_hf_checkpoint
from safetensors.torch import load_file, save_file

from vibekit.config import ModelConfig
from vibekit.models import build_model, load_model


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 10}))
    with pytest.raises(ValueError, match=r"'gpt2'.*supported: \[.*'llama', 'mistral'"):
        load_model(tmp_path, torch.float32, "cpu")


def test_folder_without_weights_names_the_expected_files(tmp_path):
    path = make_hf_checkpoint(tmp_path, "qwen2")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="expected model.safetensors"):
        load_model(path, torch.float32, "cpu")


def test_index_listing_a_missing_shard_is_reported(tmp_path):
    path = make_hf_checkpoint(tmp_path, "qwen2", max_shard_size="100KB")
    next(path.glob("model-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="lists shards that are missing"):
        load_model(path, torch.float32, "cpu")


@pytest.mark.parametrize("source", ["no/such/folder", "dummy:no-such-preset"])
def test_unknown_source_lists_what_is_allowed(source):
    with pytest.raises(ValueError, match=r"dummy:/path/to/config.json") as err:
        load_model(source, torch.float32, "cpu")
    assert "tiny-llama" in str(err.value) and "smollm-135m" in str(err.value)


def test_checkpoint_missing_a_tensor_is_rejected(tmp_path):
    path = make_hf_checkpoint(tmp_path, "llama3")
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing 1 tensor.*layers.1.self_attn.k_proj.weight"):
        load_model(path, torch.float32, "cpu")


def test_checkpoint_with_wrong_shape_or_unknown_tensor_is_rejected(tmp_path):
    model = build_model(ModelConfig("llama", 300, 64, 96, 1, 4, 2, 16))
    with pytest.raises(ValueError, match=r"up_proj.weight.*shape \(95, 64\).*\(96, 64\)"):
        model.load_weights([("model.layers.0.mlp.up_proj.weight", torch.zeros(95, 64))])
    with pytest.raises(ValueError, match="'model.layers.0.mlp.fc1.weight' has no place"):
        model.load_weights([("model.layers.0.mlp.fc1.weight", torch.zeros(96, 64))])


def test_unsupported_dtype_is_rejected():
    with pytest.raises(ValueError, match="allowed: float32, bfloat16, float16"):
        load_model("dummy:tiny-llama", "int8", "cpu")
