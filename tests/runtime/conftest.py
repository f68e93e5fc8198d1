"""Tiny random HF checkpoints (saved with save_pretrained) for engine tests against transformers."""

from __future__ import annotations

import pytest
import torch
import transformers

FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 64},
                   max_position_embeddings=512)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(sliding_window=None)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(head_dim=16)),
}


def make_checkpoint(family: str, path, seed: int = 0, tie: bool = False, vocab: int = 512):
    """Save a tiny random model of `family` to `path` and return the HF model (float32, eval).

    Embeddings are drawn with std 1 (not 0.02) so greedy decoding visits many distinct tokens
    instead of repeating one, which would make equality tests weak.
    """
    config_cls, model_cls, extra = FAMILIES[family]
    kwargs = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None,
                  pad_token_id=None)
    kwargs.update(extra)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        if not tie:
            model.lm_head.weight.normal_(0.0, 0.125)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="session")
def llama_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    model = make_checkpoint("llama", path)
    return path, model


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """HF generate, one prompt at a time (no padding), greedy, no EOS."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()
