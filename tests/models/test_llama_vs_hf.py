"""The llama-family model matches HF transformers logits, one sequence or ragged, in one pass
or over a cached prefix."""

from __future__ import annotations

import json

import pytest
import torch
from hf_reference import FAMILIES, hf_logits, make_hf_checkpoint
from paged_batch import PagedKV

from vibekit.models import load_model

PROMPT = [5, 17, 250, 3, 99, 42, 42, 7, 180, 64, 1, 2, 33, 291, 150, 8, 77, 120, 4]  # 19 tokens


def vibekit_logits(model, dtype, sequences: list[list[list[int]]], page_size: int = 4):
    """Run the chunks of each sequence step by step (step i feeds every sequence's i-th chunk)
    and return, per sequence, the logits of all its tokens concatenated."""
    kv = PagedKV(model.cache_spec().kv, dtype, page_size=page_size)
    out: list[list[torch.Tensor]] = [[] for _ in sequences]
    for step in range(max(len(chunks) for chunks in sequences)):
        new = {i: chunks[step] for i, chunks in enumerate(sequences) if step < len(chunks)}
        batch = kv.batch(new)
        with torch.inference_mode():
            logits = model(batch.input_ids, batch)
        for rows, seq in zip(batch.qo_indptr.diff().tolist(), new):
            out[seq].append(logits[:rows])
            logits = logits[rows:]
    return [torch.cat(chunks) for chunks in out]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_hf_for_every_prompt_position(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    expected = hf_logits(path, PROMPT)
    model, config, _ = load_model(path, torch.float32, "cpu")
    assert config.model_type == json.loads((path / "config.json").read_text())["model_type"]
    [got] = vibekit_logits(model, torch.float32, [[PROMPT]])
    assert expected.std() > 0.5  # a test of near-zero logits could not fail
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama3", "qwen3"])
def test_ragged_batch_of_three_sequences_matches_hf_per_sequence(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    model, _, _ = load_model(path, "float32", "cpu")
    prompts = [PROMPT, PROMPT[3:10][::-1], [7]]
    got = vibekit_logits(model, torch.float32, [[p] for p in prompts])
    for prompt, logits in zip(prompts, got):
        torch.testing.assert_close(logits, hf_logits(path, prompt), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama3", "qwen2"])
def test_prefill_then_append_over_cached_kv_equals_single_pass(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    model, _, _ = load_model(path, torch.float32, "cpu")
    [single] = vibekit_logits(model, torch.float32, [[PROMPT]])
    other = PROMPT[::-1]
    # Step 1 prefills 11 tokens of PROMPT; step 2 appends its last 8 while the other sequence
    # decodes one token at a time (a mixed prefill + decode batch).
    two_step, decoded = vibekit_logits(
        model, torch.float32, [[PROMPT[:11], PROMPT[11:]], [other[:6], other[6:7], other[7:8]]])
    torch.testing.assert_close(two_step, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoded, hf_logits(path, other[:8]), atol=1e-4, rtol=1e-4)


def test_sharded_safetensors_checkpoint_loads(tmp_path):
    path = make_hf_checkpoint(tmp_path, "mistral", max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("model-*.safetensors"))) > 1
    model, _, _ = load_model(path, torch.float32, "cpu")
    [got] = vibekit_logits(model, torch.float32, [[PROMPT]])
    torch.testing.assert_close(got, hf_logits(path, PROMPT), atol=1e-4, rtol=1e-4)


def test_pytorch_model_bin_checkpoint_loads(tmp_path):
    from safetensors.torch import load_file

    path = make_hf_checkpoint(tmp_path, "qwen2")
    expected = hf_logits(path, PROMPT)
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    model, _, _ = load_model(path, torch.float32, "cpu")
    [got] = vibekit_logits(model, torch.float32, [[PROMPT]])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_positions_past_max_position_embeddings_grow_the_rope_table(tmp_path):
    path = make_hf_checkpoint(tmp_path, "qwen2", max_position_embeddings=8)
    model, _, _ = load_model(path, torch.float32, "cpu")
    [got] = vibekit_logits(model, torch.float32, [[PROMPT[:5], PROMPT[5:]]])
    torch.testing.assert_close(got, hf_logits(path, PROMPT), atol=1e-4, rtol=1e-4)


def test_llama3_rope_without_original_max_position_embeddings_follows_hf(tmp_path):
    path = make_hf_checkpoint(tmp_path, "llama3", max_position_embeddings=32)
    config = json.loads((path / "config.json").read_text())
    del config["rope_parameters"]["original_max_position_embeddings"]
    (path / "config.json").write_text(json.dumps(config))
    model, _, _ = load_model(path, torch.float32, "cpu")
    [got] = vibekit_logits(model, torch.float32, [[PROMPT]])
    torch.testing.assert_close(got, hf_logits(path, PROMPT), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["llama-tied", "qwen3"])
def test_half_precision_is_as_close_to_float32_as_hf_is(tmp_path, family, dtype):
    path = make_hf_checkpoint(tmp_path, family)
    exact = hf_logits(path, PROMPT)
    hf_half = hf_logits(path, PROMPT, dtype)
    model, _, _ = load_model(path, dtype, "cpu")
    assert model.model.embed_tokens.weight.dtype == dtype
    [got] = vibekit_logits(model, dtype, [[PROMPT]])
    assert got.dtype == torch.float32
    hf_err = (hf_half - exact).abs().max().item()
    our_err = (got - exact).abs().max().item()
    assert our_err <= 2 * hf_err + 1e-2, (our_err, hf_err)
