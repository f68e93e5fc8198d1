"""Dummy models: presets, seeded weights that HF can load too, and varied greedy output."""

from __future__ import annotations

import pytest
import torch
from hf_reference import hf_logits, make_hf_checkpoint
from paged_batch import PagedKV, greedy_generate

from vibekit.config import ModelConfig
from vibekit.models import (
    DUMMY_PRESETS,
    CausalLM,
    KVCacheSpec,
    build_model,
    dummy_weights,
    load_model,
    save_dummy_checkpoint,
)
from vibekit.models.dummy import hf_parameter_shapes

# A deep, narrow, tied model: the shape where HF's N(0, 0.02) init collapses to one token.
DEEP_TIED = ModelConfig("llama", vocab_size=4096, hidden_size=128, intermediate_size=256,
                        num_layers=12, num_qo_heads=4, num_kv_heads=2, head_dim=32,
                        tie_word_embeddings=True)


def random_prompts(seed: int, lengths=(5, 11, 19)) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=gen).tolist() for n in lengths]


def distinct_ratio(tokens: list[int]) -> float:
    return len(set(tokens)) / len(tokens)


def shortest_period(tokens: list[int], max_period: int = 8) -> int | None:
    """The period of a loop the tail (last 24 tokens) is stuck in, or None."""
    tail = tokens[-24:]
    for p in range(1, max_period + 1):
        if all(a == b for a, b in zip(tail, tail[p:])):
            return p
    return None


def logits_of(model, prompt: list[int]) -> torch.Tensor:
    batch = PagedKV(model.cache_spec().kv, model.model.embed_tokens.weight.dtype).batch({0: prompt})
    with torch.inference_mode():
        return model(batch.input_ids, batch)


@pytest.mark.parametrize("source", ["dummy:tiny-llama", DEEP_TIED])
def test_dummy_greedy_output_has_many_distinct_tokens_and_no_short_loops(source):
    if isinstance(source, str):
        model, _, _ = load_model(source, torch.float32, "cpu")
    else:
        model = build_model(source)
        model.load_weights(dummy_weights(source, seed=0))
    for tokens in greedy_generate(model, random_prompts(seed=1), max_tokens=64):
        assert distinct_ratio(tokens) >= 0.5, tokens
        assert shortest_period(tokens) is None, tokens


def test_hf_default_init_would_be_degenerate_on_the_same_model():
    # Why dummy_weights exists: with HF's init (matrices N(0, 0.02), norms 1) greedy decoding
    # repeats one or two tokens.
    gen = torch.Generator().manual_seed(0)
    model = build_model(DEEP_TIED)
    model.load_weights((name, torch.randn(shape, generator=gen) * 0.02 if len(shape) == 2
                        else torch.ones(shape)) for name, shape in hf_parameter_shapes(DEEP_TIED))
    outputs = greedy_generate(model, random_prompts(seed=1), max_tokens=64)
    assert max(distinct_ratio(tokens) for tokens in outputs) < 0.2


@pytest.mark.slow
def test_smollm_135m_dummy_greedy_output_is_varied():
    model, config, _ = load_model("dummy:smollm-135m", torch.float32, "cpu")
    assert 130e6 < config.num_params() < 140e6
    for tokens in greedy_generate(model, random_prompts(seed=1), max_tokens=64):
        assert distinct_ratio(tokens) >= 0.5, tokens
        assert shortest_period(tokens) is None, tokens


def test_dummy_weights_are_determined_by_the_seed():
    a, _, _ = load_model("dummy:tiny-llama", torch.float32, "cpu", seed=7)
    b, _, _ = load_model("dummy:tiny-llama", "float32", torch.device("cpu"), seed=7)
    c, _, _ = load_model("dummy:tiny-llama", torch.float32, "cpu", seed=8)
    prompt = random_prompts(seed=0)[2]
    assert torch.equal(logits_of(a, prompt), logits_of(b, prompt))
    assert not torch.allclose(logits_of(a, prompt), logits_of(c, prompt))


def test_saved_dummy_checkpoint_is_the_same_model_for_hf_and_vibekit(tmp_path):
    folder = save_dummy_checkpoint("tiny-llama", tmp_path / "ckpt", seed=3)
    dummy, config, _ = load_model("dummy:tiny-llama", torch.float32, "cpu", seed=3)
    loaded, loaded_config, tokenizer = load_model(folder, torch.float32, "cpu")
    assert loaded_config == config == DUMMY_PRESETS["tiny-llama"]
    assert tokenizer.eos_token_id == 256 and tokenizer.encode("hi") == [104, 105]
    prompt = random_prompts(seed=0)[2]
    expected = hf_logits(folder, prompt)
    torch.testing.assert_close(logits_of(dummy, prompt), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits_of(loaded, prompt), expected, atol=1e-4, rtol=1e-4)


def test_dummy_from_a_config_json_path_uses_that_shape(tmp_path):
    path = make_hf_checkpoint(tmp_path, "qwen3")
    for source in (f"dummy:{path / 'config.json'}", f"dummy:{path}"):
        model, config, tokenizer = load_model(source, torch.float32, "cpu")
        assert (config.model_type, config.head_dim, config.vocab_size) == ("qwen3", 32, 300)
        assert tokenizer.eos_token_id == 256
        assert logits_of(model, [1, 2, 3]).shape == (3, 300)


def test_dummy_presets_load_with_the_byte_level_tokenizer():
    model, config, tokenizer = load_model("dummy:tiny-llama", torch.bfloat16, "cpu")
    assert tokenizer.decode(tokenizer.encode("héllo")) == "héllo"
    assert config.eos_token_ids == (tokenizer.eos_token_id,)
    assert isinstance(model, CausalLM)
    assert model.cache_spec().kv == KVCacheSpec(num_layers=2, num_kv_heads=2, head_dim=16)
    assert model.cache_spec().kv.bytes_per_token(torch.bfloat16) == 2 * 2 * 2 * 16 * 2
    smollm = DUMMY_PRESETS["smollm-135m"]
    assert (smollm.hidden_size, smollm.num_layers, smollm.num_qo_heads, smollm.num_kv_heads,
            smollm.head_dim, smollm.intermediate_size, smollm.vocab_size,
            smollm.tie_word_embeddings) == (576, 30, 9, 3, 64, 1536, 49152, True)


def test_hf_folder_without_tokenizer_files_loads_no_tokenizer(tmp_path):
    _, _, tokenizer = load_model(make_hf_checkpoint(tmp_path, "mistral"), torch.float32, "cpu")
    assert tokenizer is None
