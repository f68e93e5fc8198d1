"""Text CFG for LLMs: guided greedy decoding over paged KV equals HF transformers'
`generate(guidance_scale=..., negative_prompt_ids=...)`, and the CFG cache's catch-up of the
uncond sequence equals recomputing it from scratch."""

from __future__ import annotations

import pytest
import torch
import transformers

from vibekit.cfg import CFGCachePolicy, TextCFGGenerator
from vibekit.models import load_model

VOCAB = 512


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Llama (embeddings with std 1 so greedy output varies), HF and vibekit."""
    path = tmp_path_factory.mktemp("llama-cfg")
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        hf.model.embed_tokens.weight.normal_(0.0, 1.0)
        hf.lm_head.weight.normal_(0.0, 0.25)
    hf.save_pretrained(path)
    model, _, _ = load_model(path, torch.float32, "cpu")
    return hf, model


def hf_cfg(hf, prompt, negative, scale, max_tokens):
    ids = torch.tensor([prompt])
    kwargs = {} if negative is None else {"negative_prompt_ids": torch.tensor([negative])}
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                          max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                          guidance_scale=scale, pad_token_id=0, **kwargs)
    return out[0, len(prompt):].tolist()


PROMPTS = [[5, 77, 300, 12, 9], [400, 3], [31, 41, 59, 26, 53, 58, 97]]
NEGATIVES = [[8, 8, 200], [1], None]


@pytest.mark.parametrize("scale", [1.5, 3.0, 0.5])
def test_guided_greedy_equals_hf_transformers(checkpoint, scale):
    hf, model = checkpoint
    gen = TextCFGGenerator(model, page_size=4)
    outs = gen.generate(PROMPTS, guidance_scale=scale, negative_prompts=NEGATIVES, max_tokens=12)
    for prompt, negative, out in zip(PROMPTS, NEGATIVES, outs):
        assert out.token_ids == hf_cfg(hf, prompt, negative, scale, 12)
        assert out.finish_reason == "length" and out.num_uncond_forwards == 12
    assert gen.manager.num_free_pages == gen.manager.num_pages  # every page returned


def test_guidance_changes_the_output(checkpoint):
    _, model = checkpoint
    gen = TextCFGGenerator(model)
    plain = gen.generate(PROMPTS, guidance_scale=1.0, max_tokens=12)
    guided = gen.generate(PROMPTS, guidance_scale=3.0, negative_prompts=NEGATIVES, max_tokens=12)
    assert all(o.num_uncond_forwards == 0 for o in plain)
    assert [o.token_ids for o in plain] != [o.token_ids for o in guided]


def reference_cached_cfg(hf, prompt, negative, scale, max_tokens, policy):
    """The CFG cache spelled out with full recomputation (no KV cache) on HF's model."""
    uncond_start = negative or prompt[-1:]
    out: list[int] = []
    delta = None
    with torch.no_grad():
        for step in range(max_tokens):
            lp_c = torch.log_softmax(hf(torch.tensor([prompt + out])).logits[0, -1], -1)
            if policy.runs_uncond(step):
                lp_u = torch.log_softmax(hf(torch.tensor([uncond_start + out])).logits[0, -1], -1)
                delta = lp_c - lp_u
            out.append(int((lp_c + (scale - 1) * delta).argmax()))
    return out


def test_cfg_cache_catches_the_uncond_sequence_up(checkpoint):
    hf, model = checkpoint
    policy = CFGCachePolicy.every(3, warmup_steps=2)
    gen = TextCFGGenerator(model, page_size=4)
    outs = gen.generate(PROMPTS, guidance_scale=2.0, negative_prompts=NEGATIVES, max_tokens=11,
                        policy=policy)
    for prompt, negative, out in zip(PROMPTS, NEGATIVES, outs):
        assert out.token_ids == reference_cached_cfg(hf, prompt, negative, 2.0, 11, policy)
        assert out.num_uncond_forwards == policy.num_uncond_steps(11) == 5


def test_stop_tokens_end_a_request_early(checkpoint):
    _, model = checkpoint
    gen = TextCFGGenerator(model)
    full = gen.generate(PROMPTS[:1], guidance_scale=2.0, max_tokens=10)[0].token_ids
    stop = full[3]
    out = gen.generate(PROMPTS[:1], guidance_scale=2.0, max_tokens=10, stop_token_ids=[stop])[0]
    assert out.token_ids == full[:full.index(stop) + 1] and out.finish_reason == "stop"


def test_sampling_is_seeded(checkpoint):
    _, model = checkpoint
    gen = TextCFGGenerator(model)
    a = gen.generate(PROMPTS, guidance_scale=2.0, max_tokens=8, temperature=1.0, seed=3)
    b = gen.generate(PROMPTS, guidance_scale=2.0, max_tokens=8, temperature=1.0, seed=3)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


@pytest.mark.parametrize("kwargs, message", [
    (dict(guidance_scale=21.0), r"guidance_scale 21.0 is out of range; allowed \[0, 20.0\]"),
    (dict(max_tokens=4, policy=CFGCachePolicy.every(5)),
     "cache interval 5 is larger than the step count 4"),
    (dict(prompts=[[]]), "prompt 0 is empty"),
    (dict(prompts=[[1, VOCAB]]), rf"prompt 0 has ids \[{VOCAB}\] outside the vocabulary"),
    (dict(prompts=[[1] * 250], max_tokens=10), "max_model_len is 256"),
    (dict(negative_prompts=[[1], [2]]), "got 2 negative prompts for 1 prompts"),
])
def test_bad_text_requests_name_the_limit(checkpoint, kwargs, message):
    _, model = checkpoint
    args = dict(prompts=[[1, 2, 3]], guidance_scale=2.0, max_tokens=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TextCFGGenerator(model).generate(args.pop("prompts"), **args)


def test_a_pool_too_small_is_refused_before_any_compute(checkpoint):
    _, model = checkpoint
    gen = TextCFGGenerator(model, num_pages=2, page_size=4)
    with pytest.raises(ValueError, match="needs up to 6 KV pages; the pool has 2 free"):
        gen.generate([[1, 2, 3]], guidance_scale=2.0, max_tokens=8)
