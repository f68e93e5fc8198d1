"""Dummy hybrid models: built-in Bamba / Qwen3.5 configs with seeded O(1) random weights drawn
through HF transformers, so the same weights serve as vibekit model and HF reference."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

# name -> (HF config class name, config kwargs). Vocab 512 fits the byte-level tokenizer.
HYBRID_DUMMY_PRESETS: MappingProxyType[str, tuple[str, dict[str, Any]]] = MappingProxyType({
    # 4 layers (Mamba2, Mamba2, attention, Mamba2); 8 SSM heads of 32 dims, state 32
    "tiny-bamba": ("BambaConfig", dict(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, attn_layer_indices=[2],
        mamba_n_heads=8, mamba_d_head=32, mamba_n_groups=1, mamba_d_state=32, mamba_d_conv=4,
        mamba_expand=2, mamba_chunk_size=128, max_position_embeddings=8192, rms_norm_eps=1e-5,
        tie_word_embeddings=False, pad_token_id=None, bos_token_id=None, eos_token_id=256,
    )),
    # 4 layers (DeltaNet x3, attention); 4 value heads of 32 dims over 2 key heads of 32
    "tiny-qwen3.5": ("Qwen3_5TextConfig", dict(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, linear_conv_kernel_dim=4,
        linear_key_head_dim=32, linear_value_head_dim=32, linear_num_key_heads=2,
        linear_num_value_heads=4, full_attention_interval=4, max_position_embeddings=8192,
        rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=None, bos_token_id=None,
        eos_token_id=256,
    )),
})


def hybrid_dummy_config(spec: str) -> dict[str, Any] | None:
    """The HF config dict of a hybrid dummy spec: a preset name, or the path of a config.json
    (or its folder) whose model_type is a hybrid vibekit implements. None otherwise."""
    from vibekit.models.hybrid_config import HybridConfig
    from vibekit.models.registry import config_from_hf

    if spec in HYBRID_DUMMY_PRESETS:
        cls_name, kwargs = HYBRID_DUMMY_PRESETS[spec]
        model_type = "bamba" if cls_name == "BambaConfig" else "qwen3_5_text"
        return {"model_type": model_type, **kwargs}
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.is_file():
        hf = json.loads(path.read_text())
        try:
            config = config_from_hf(hf)
        except ValueError:
            return None
        if isinstance(config, HybridConfig):
            return hf
    return None


def hybrid_dummy_hf_model(spec: str, seed: int = 0) -> torch.nn.Module:
    """The HF transformers model of a hybrid dummy spec (see `hybrid_dummy_config`) with seeded
    weights (float32, eval).

    Embeddings std 1 and unit-gain matrices (as tests/models do), so greedy decoding visits
    many distinct tokens; A_log, dt_bias and D keep the family's own init (stable decays).
    """
    import transformers

    hf = hybrid_dummy_config(spec)
    if hf is None:
        raise ValueError(f"{spec!r} is not a hybrid dummy preset ({sorted(HYBRID_DUMMY_PRESETS)}) "
                         "or a hybrid config.json")
    hf = dict(hf)
    config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    zero_centered = config.model_type.startswith("qwen3_5")
    with torch.no_grad():
        for pname, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if pname.endswith(("A_log", "dt_bias", ".D")):
                continue
            if "norm.weight" in pname:
                base = 0.0 if zero_centered and "linear_attn.norm" not in pname else 1.0
                param.copy_(base + 0.1 * noise)
            elif pname.endswith(".bias"):
                param.copy_(0.1 * noise)
            elif "embed_tokens" in pname:
                param.copy_(noise)
            elif param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(noise * (1.5 / math.sqrt(fan_in)))
    return model

