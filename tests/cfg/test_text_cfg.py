"""Text CFG for LLMs in the engine (SamplingParams guidance_scale / negative_prompt /
guidance_cache): guided greedy decoding over paged KV equals HF transformers'
`generate(guidance_scale=..., negative_prompt_ids=...)`, and the CFG cache's catch-up of the
uncond sequence equals recomputing it from scratch."""

from __future__ import annotations

import pytest
import torch
import transformers

from vibekit import Engine, InvalidRequestError, SamplingParams
from vibekit.cfg import CFGCachePolicy

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
    return hf, path


def guided(scale, negative=None, max_tokens=12, **kwargs):
    return SamplingParams(max_tokens=max_tokens, temperature=kwargs.pop("temperature", 0.0),
                          ignore_eos=True, guidance_scale=scale, negative_prompt=negative,
                          **kwargs)


def run(engine, prompts, negatives, scale, **kwargs):
    """Generate with guidance; also return how many steps ran each uncond branch."""
    rids = [engine.add_request(p, guided(scale, n, **kwargs))
            for p, n in zip(prompts, negatives)]
    guidances = [engine.requests[r].guidance for r in rids]
    final = {}
    while len(final) < len(rids):
        for out in engine.step():
            if out.finished and out.request_id in rids:
                final[out.request_id] = out
    return [final[r] for r in rids], [g.num_uncond_steps if g else 0 for g in guidances]


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
    hf, path = checkpoint
    engine = Engine.from_pretrained(path, page_size=4)
    outs, uncond_steps = run(engine, PROMPTS, NEGATIVES, scale)
    for prompt, negative, out, steps in zip(PROMPTS, NEGATIVES, outs, uncond_steps):
        assert out.token_ids == hf_cfg(hf, prompt, negative, scale, 12)
        assert out.finish_reason == "length" and steps == 12
    assert engine.cache.manager.pool.num_used_pages == 0  # every page returned


def test_guidance_changes_the_output(checkpoint):
    _, path = checkpoint
    engine = Engine.from_pretrained(path)
    plain = engine.generate(PROMPTS, SamplingParams(max_tokens=12, temperature=0.0))
    outs, _ = run(engine, PROMPTS, NEGATIVES, 3.0)
    assert [o.token_ids for o in plain] != [o.token_ids for o in outs]


def test_guided_requests_batch_with_plain_ones_and_chunked_prefill(checkpoint):
    """A tight token budget splits prompts into chunks and preempts nothing; guided and plain
    requests share steps and still give HF's tokens."""
    hf, path = checkpoint
    engine = Engine.from_pretrained(path, page_size=4, max_num_batched_tokens=6)
    plain = engine.add_request([9, 8, 7, 6, 5, 4, 3], SamplingParams(max_tokens=12,
                                                                    temperature=0.0))
    outs, _ = run(engine, PROMPTS, NEGATIVES, 1.5)
    for prompt, negative, out in zip(PROMPTS, NEGATIVES, outs):
        assert out.token_ids == hf_cfg(hf, prompt, negative, 1.5, 12)
    assert plain not in engine.requests


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
    hf, path = checkpoint
    policy = CFGCachePolicy.every(3, warmup_steps=2)
    engine = Engine.from_pretrained(path, page_size=4)
    outs, uncond_steps = run(engine, PROMPTS, NEGATIVES, 2.0, max_tokens=11,
                             guidance_cache=policy)
    for prompt, negative, out, steps in zip(PROMPTS, NEGATIVES, outs, uncond_steps):
        assert out.token_ids == reference_cached_cfg(hf, prompt, negative, 2.0, 11, policy)
        assert steps == policy.num_uncond_steps(11) == 5


def test_stop_tokens_end_a_request_early(checkpoint):
    _, path = checkpoint
    engine = Engine.from_pretrained(path)
    full = engine.generate(PROMPTS[:1], guided(2.0, max_tokens=10))[0].token_ids
    stop = full[3]
    out = engine.generate(PROMPTS[:1], guided(2.0, max_tokens=10, stop_token_ids=[stop]))[0]
    assert out.token_ids == full[:full.index(stop) + 1] and out.finish_reason == "stop"
    assert engine.cache.manager.pool.num_used_pages == 0


def test_sampling_is_seeded(checkpoint):
    _, path = checkpoint
    engine = Engine.from_pretrained(path)
    params = [guided(2.0, max_tokens=8, temperature=1.0, seed=3 + i) for i in range(3)]
    a = engine.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


@pytest.mark.parametrize("kwargs, message", [
    (dict(guidance_scale=21.0), r"guidance_scale=21.0 is invalid; it must be .* in \[0, 20\]"),
    (dict(max_tokens=4, guidance_cache=CFGCachePolicy.every(5)),
     "cache interval 5 is larger than the step count 4"),
    (dict(guidance_cache={"every": 2}), "guidance_cache has unknown fields"),
    (dict(negative_prompt=[1, VOCAB]), rf"negative_prompt .* \[0, {VOCAB}\): \[{VOCAB}\]"),
    (dict(negative_prompt=[1] * 250, max_tokens=10), "max_model_len is 256"),
    (dict(guidance_scale=1.0, negative_prompt=[3]), "need guidance_scale != 1.0"),
])
def test_bad_guided_requests_name_the_limit(checkpoint, kwargs, message):
    _, path = checkpoint
    args = dict(max_tokens=8, temperature=0.0, guidance_scale=2.0)
    args.update(kwargs)
    engine = Engine.from_pretrained(path)
    with pytest.raises(InvalidRequestError, match=message):
        engine.add_request([1, 2, 3], SamplingParams(**args))


def test_guidance_with_a_prediction_is_refused(checkpoint):
    engine = Engine.from_pretrained(checkpoint[1])
    with pytest.raises(InvalidRequestError, match="cannot be combined with a prediction"):
        engine.add_request([1, 2, 3], guided(2.0), prediction=[4, 5])


def test_a_pool_too_small_for_both_sequences_is_refused_before_any_compute(checkpoint):
    engine = Engine.from_pretrained(checkpoint[1], num_pages=4, page_size=4)
    engine.add_request([1, 2, 3], SamplingParams(max_tokens=8))  # 3 pages alone: fits
    with pytest.raises(InvalidRequestError, match="needs 6 KV pages .* and its unconditional"):
        engine.add_request([1, 2, 3], guided(2.0, max_tokens=8))
