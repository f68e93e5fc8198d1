"""FlowCFGSampler on a random unified model: determinism, batched == unbatched cond/uncond, prompt
K/V reuse == recomputation, and bad input rejected at the boundary."""

from __future__ import annotations

import pytest
import torch

from vibekit.cfg import CFGCachePolicy, FlowCFGSampler, flow_noise

PROMPTS = ["a handwritten 7", "the digit three", "", "a picture of the number nine"]
SEEDS = [11, 12, 13, 14]


def generate(model, **kwargs):
    policy = kwargs.pop("policy", CFGCachePolicy.full())
    steps = kwargs.pop("num_steps", 6)
    return FlowCFGSampler(model, num_steps=steps, guidance_scale=3.0, policy=policy,
                          **kwargs).generate(PROMPTS, SEEDS)


def test_full_cfg_is_deterministic_for_a_seed(tiny_model):
    a, b = generate(tiny_model), generate(tiny_model)
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (4, 16, 16)
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0


@pytest.mark.parametrize("reuse_prompt_kv", [True, False])
def test_batched_cond_uncond_equals_two_forwards(tiny_model, reuse_prompt_kv):
    batched = generate(tiny_model, batch_cfg=True, reuse_prompt_kv=reuse_prompt_kv)
    unbatched = generate(tiny_model, batch_cfg=False, reuse_prompt_kv=reuse_prompt_kv)
    # NOTE: bitwise equal on the development CPU; the bound allows a BLAS whose GEMM blocking
    # depends on the row count (at batch 1 vs 2 that moves the last bit: PSNR ~138 dB).
    torch.testing.assert_close(batched.images, unbatched.images, atol=1e-6, rtol=0)
    assert batched.num_forwards == 6 and unbatched.num_forwards == 12


def test_prompt_kv_reuse_matches_recomputing_the_prompt(tiny_model):
    ids, mask = tiny_model.tokenizer.batch(PROMPTS)
    x = flow_noise(SEEDS, (16, 16))
    t = torch.tensor([0.0, 0.3, 0.6, 0.9])
    with torch.no_grad():
        cached = tiny_model.velocity(x, t, tiny_model.encode_prompt(ids, mask))
        plain = tiny_model(ids, mask, x, t)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
    kv = generate(tiny_model, reuse_prompt_kv=True)
    recomputed = generate(tiny_model, reuse_prompt_kv=False)
    torch.testing.assert_close(kv.images, recomputed.images, atol=1e-5, rtol=0)


def test_padding_does_not_leak_into_the_image(tiny_model):
    ids, mask = tiny_model.tokenizer.batch(["a 7"])
    x = flow_noise([0], (16, 16))
    t = torch.tensor([0.5])
    with torch.no_grad():
        base = tiny_model(ids, mask, x, t)
        ids[0, ~mask[0]] = 5  # change what sits in the padded slots
        assert torch.equal(tiny_model(ids, mask, x, t), base)


def test_a_request_does_not_depend_on_its_batch(tiny_model):
    batch = generate(tiny_model)
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS)):
        alone = FlowCFGSampler(tiny_model, num_steps=6, guidance_scale=3.0).generate(
            [prompt], [seed])
        torch.testing.assert_close(alone.images[0], batch.images[i], atol=1e-5, rtol=0)


def test_cache_runs_uncond_only_on_scheduled_steps(tiny_model):
    full = generate(tiny_model, num_steps=12)
    cached = generate(tiny_model, num_steps=12, policy=CFGCachePolicy.every(4, warmup_steps=2))
    assert full.num_uncond_rows == 12 * 4
    assert cached.num_uncond_rows == len([0, 1, 2, 6, 10]) * 4
    assert cached.num_forwards == 12  # cond and the scheduled uncond rows share one forward
    assert not torch.equal(full.images, cached.images)
    torch.testing.assert_close(cached.images, full.images, atol=0.3, rtol=0)


def test_scale_one_skips_the_uncond_branch(tiny_model):
    out = FlowCFGSampler(tiny_model, num_steps=4, guidance_scale=1.0,
                         batch_cfg=False).generate(PROMPTS, SEEDS)
    assert out.num_uncond_rows == 0 and out.num_forwards == 4


def test_negative_prompt_replaces_the_empty_prompt(tiny_model):
    sampler = FlowCFGSampler(tiny_model, num_steps=4, guidance_scale=3.0)
    default = sampler.generate(["a 7"], [0]).images
    assert torch.equal(sampler.generate(["a 7"], [0], negative_prompts=[""]).images, default)
    assert not torch.equal(sampler.generate(["a 7"], [0], negative_prompts=["a 1"]).images,
                           default)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_steps=0), "num_steps 0 is out of range; allowed 1..1000"),
    (dict(num_steps=1001), "num_steps 1001 is out of range"),
    (dict(guidance_scale=25.0), r"guidance_scale 25.0 is out of range; allowed \[0, 20.0\]"),
    (dict(guidance_scale=-1.0), "guidance_scale -1.0 is out of range"),
    (dict(num_steps=10, policy=CFGCachePolicy.every(11)),
     "cache interval 11 is larger than the step count 10"),
])
def test_bad_sampler_arguments_name_the_limit(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowCFGSampler(tiny_model, **kwargs)


@pytest.mark.parametrize("prompt, message", [
    ("a handwritten cat", r"unknown word\(s\) \['cat'\]"),
    ("a a a a a a a a", "has 8 words; the limit is 6"),
])
def test_unknown_or_long_prompts_are_rejected(tiny_model, prompt, message):
    with pytest.raises(ValueError, match=message):
        FlowCFGSampler(tiny_model, num_steps=2).generate([prompt], [0])


def test_seed_count_must_match(tiny_model):
    with pytest.raises(ValueError, match="got 1 seeds for 2 prompts"):
        FlowCFGSampler(tiny_model, num_steps=2).generate(["a 1", "a 2"], [0])
