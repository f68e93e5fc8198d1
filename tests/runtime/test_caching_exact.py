"""Prefix-cached, chunked-prefill and preempted runs give exactly the tokens of a plain run."""

from __future__ import annotations

import random

import pytest

from vibekit import Engine, SamplingParams

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


def _shared_prefix_prompts(n: int, prefix_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(512) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(512) for _ in range(rng.randint(1, 20))] for _ in range(n)]


@pytest.fixture(scope="module")
def plain(llama_ckpt):
    path, _ = llama_ckpt
    engine = Engine.from_pretrained(path, page_size=4, enable_prefix_caching=False,
                                    enable_chunked_prefill=False, max_num_batched_tokens=512,
                                    max_model_len=512)
    prompts = _shared_prefix_prompts(6, 37)
    return prompts, [o.token_ids for o in engine.generate(prompts, GREEDY)]


def test_prefix_cached_run_is_exact_and_reports_hits(llama_ckpt, plain):
    path, _ = llama_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4)
    first = engine.generate(prompts[:1], GREEDY)
    assert first[0].usage.cached_prompt_tokens == 0
    outs = engine.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == expected
    # 37 shared tokens = 9 full pages of 4 are served from the cache for every later request.
    assert all(o.usage.cached_prompt_tokens >= 36 for o in outs)
    again = engine.generate(prompts, GREEDY)
    assert [o.token_ids for o in again] == expected


def test_chunked_prefill_is_exact(llama_ckpt, plain):
    path, _ = llama_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_num_batched_tokens=7,
                                    enable_prefix_caching=False)
    assert [o.token_ids for o in engine.generate(prompts, GREEDY)] == expected


def test_preempted_then_recomputed_is_exact(llama_ckpt, plain):
    path, _ = llama_ckpt
    prompts, expected = plain
    # 24 pages of 4 tokens: one request needs up to 21 pages at its end, so two cannot both
    # run to completion at once and the later one is preempted.
    engine = Engine.from_pretrained(path, page_size=4, num_pages=24, max_model_len=96)
    outs = engine.generate(prompts, GREEDY)
    assert engine.scheduler.num_preemptions > 0
    assert [o.token_ids for o in outs] == expected
    assert engine.cache.manager.pool.num_used_pages == 0


def test_seeded_sampling_is_independent_of_batch(llama_ckpt):
    path, _ = llama_ckpt
    prompts = _shared_prefix_prompts(4, 5, seed=3)
    params = SamplingParams(max_tokens=16, temperature=0.8, top_p=0.9, top_k=50, seed=1234,
                            ignore_eos=True)
    alone = Engine.from_pretrained(path, page_size=4).generate(prompts[:1], params)
    batched = Engine.from_pretrained(path, page_size=4).generate(prompts, params)
    assert alone[0].token_ids == batched[0].token_ids
    other = SamplingParams(max_tokens=16, temperature=0.8, seed=99, ignore_eos=True)
    assert Engine.from_pretrained(path).generate(prompts[:1], other)[0].token_ids != \
        alone[0].token_ids


def test_decode_graph_buffers_pad_and_replay_exactly(llama_ckpt, plain):
    """The CUDA-graph decode path's static buffers and padding (run eagerly here, no CUDA)."""

    path, _ = llama_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128)
    graphs = engine.runner.make_graph_runner((1, 4, 8), use_graphs=False)
    engine.runner.graphs = graphs
    calls = []
    run = graphs.run
    graphs.run = lambda batch: calls.append(batch.num_seqs) or run(batch)
    outs = engine.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == expected
    assert 6 in calls, "a batch of 6 decodes should have been padded to the size-8 buffers"
