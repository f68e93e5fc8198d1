"""The hybrid prefix cache: cached, uncached, evicted-and-recomputed and predicted-output runs of
hybrid models give identical token ids; concurrent requests sharing a prefix stay exact and hit."""

from __future__ import annotations

import random

import pytest

from vibekit import Engine, SamplingParams

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)


def _shared_prefix_prompts(n: int, prefix_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(300) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(300) for _ in range(rng.randint(1, 9))] for _ in range(n)]


@pytest.fixture(scope="module")
def plain(hybrid_ckpt):
    """Prompts and the outputs of a run with every cache feature off."""
    _, path, _ = hybrid_ckpt
    prompts = _shared_prefix_prompts(6, 37)
    engine = Engine.from_pretrained(path, page_size=4, enable_prefix_caching=False,
                                    max_model_len=128)
    return prompts, [o.token_ids for o in engine.generate(prompts, GREEDY)]


def test_concurrent_shared_prefix_is_exact_and_hits(hybrid_ckpt, plain):
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128)
    outs = engine.generate(prompts, GREEDY)  # all queued at once
    assert [o.token_ids for o in outs] == expected
    # The first prompt snapshots where the prompts diverge (36 = 9 pages); the others wait for
    # that snapshot instead of recomputing the prefix, and restore it.
    assert outs[0].usage.cached_prompt_tokens == 0
    assert all(o.usage.cached_prompt_tokens == 36 for o in outs[1:])
    stats = engine.stats()
    assert stats["hybrid_prefix_hit_rate"] > 0.5
    assert stats["snapshot_bytes"] == stats["num_snapshots"] * stats["state_slot_bytes"] > 0


def test_repeated_prompts_hit_and_stay_exact(hybrid_ckpt, plain):
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128,
                                    max_num_batched_tokens=9)  # many chunks
    assert [o.token_ids for o in engine.generate(prompts, GREEDY)] == expected
    again = engine.generate(prompts, GREEDY)
    assert [o.token_ids for o in again] == expected
    # last_page policy: a repeated prompt reuses all its full pages below the last token
    assert all(o.usage.cached_prompt_tokens == (len(p) - 1) // 4 * 4
               for o, p in zip(again, prompts))


def test_evicted_snapshots_are_recomputed_exactly(hybrid_ckpt, plain):
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    probe = Engine.from_pretrained(path, page_size=4, max_model_len=128)
    one = probe.cache.pool.bytes_per_slot
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128,
                                    snapshot_memory_bytes=one)  # room for one snapshot
    for _ in range(2):
        assert [o.token_ids for o in engine.generate(prompts, GREEDY)] == expected
    assert engine.stats()["snapshot_evictions"] > 0
    assert engine.stats()["num_snapshots"] == 1


def test_every_n_pages_policy_is_exact(hybrid_ckpt, plain):
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128,
                                    snapshot_policy="none", snapshot_every_pages=3)
    assert [o.token_ids for o in engine.generate(prompts, GREEDY)] == expected
    # snapshots every 12 tokens: the 37-token prefix reuses 36
    assert all(o.usage.cached_prompt_tokens == 36 for o in engine.generate(prompts, GREEDY))


def test_predicted_outputs_restore_state_to_last_accepted_token(hybrid_ckpt, plain):
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128, num_draft_tokens=4)
    # predictions right at first, then wrong in the middle, then right again
    predictions = [e[:3] + [(t + 1) % 300 for t in e[3:5]] + e[5:] for e in expected]
    outs = engine.generate(prompts, GREEDY, predictions=predictions)
    assert [o.token_ids for o in outs] == expected
    assert all(o.usage.accepted_prediction_tokens > 0 for o in outs)
    assert all(o.usage.rejected_prediction_tokens > 0 for o in outs)


def test_preempted_hybrid_requests_are_exact(hybrid_ckpt, plain):
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=64, num_pages=16)
    assert [o.token_ids for o in engine.generate(prompts, GREEDY)] == expected
    assert engine.stats()["num_preemptions"] > 0


def test_miss_diagnostics_say_why(hybrid_ckpt):
    _, path, _ = hybrid_ckpt
    rng = random.Random(3)
    prefix = [rng.randrange(300) for _ in range(18)]
    prompts = [prefix + [rng.randrange(300) for _ in range(9)] for _ in range(2)]
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128,
                                    snapshot_policy="last_page")
    engine.generate(prompts[:1], GREEDY)
    rid = engine.add_request(prompts[1], GREEDY)
    req = engine.requests[rid]
    while not req.finished:
        engine.step()
    # 16 shared tokens are in the KV cache, but the first prompt only snapshotted at 24
    assert "no state snapshot" in req.prefix_cache_reason
    assert engine.cache.diagnostics()["miss"] == 2


@pytest.mark.parametrize("with_predictions", [False, True])
def test_a_failed_forward_is_retried_exactly(hybrid_ckpt, plain, with_predictions):
    """Every third forward raises after the first layers ran (recurrent states half-advanced):
    the step's reservations are given back, verify blocks restore their snapshot and other
    requests are recomputed, so retrying until done gives the plain outputs and frees all."""
    _, path, _ = hybrid_ckpt
    prompts, expected = plain
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=128, num_draft_tokens=4)
    layers = engine.model.model.layers
    real = layers[1].forward
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) % 3 == 0:
            raise RuntimeError("simulated kernel fault")
        return real(*args, **kwargs)

    layers[1].forward = flaky
    predictions = [e[:3] + [(t + 1) % 300 for t in e[3:5]] + e[5:] for e in expected] \
        if with_predictions else [None] * len(prompts)
    rids = [engine.add_request(p, GREEDY, prediction=q) for p, q in zip(prompts, predictions)]
    final, failures = {}, 0
    while len(final) < len(rids):
        try:
            outs = engine.step()
        except RuntimeError:
            failures += 1
            continue
        final.update({o.request_id: o for o in outs if o.finished})
    assert failures > 0
    assert [final[r].token_ids for r in rids] == expected
    assert engine.cache.manager.pool.num_used_pages == 0
