"""Faults stay with the request that caused them: failing steps, deadlines, a full queue."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from vibekit import Engine
from vibekit.runtime.async_engine import (
    AsyncEngine,
    DeadlineExceededError,
    QueueFullError,
    StepFailedError,
)

from .conftest import MODEL, greedy

POISON = 200  # a token id no other prompt here contains


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(ae: AsyncEngine, prompt, params, **kw):
    return [out async for out in ae.generate(prompt, params, **kw)]


def poisoned_engine(fail_times: int | None = None) -> tuple[Engine, list[int]]:
    """An engine whose model forward raises while the POISON token is in the batch (at most
    `fail_times` times; None: always)."""
    engine = Engine.from_pretrained(MODEL, max_model_len=256, num_pages=128, seed=0)
    model = engine.runner.model
    real_forward = model.forward
    failures = []

    def forward(input_ids, *args, **kwargs):
        if (POISON in input_ids.tolist()
                and (fail_times is None or len(failures) < fail_times)):
            failures.append(1)
            raise RuntimeError("simulated kernel fault")
        return real_forward(input_ids, *args, **kwargs)

    model.forward = forward
    return engine, failures


def test_a_step_that_fails_once_is_retried_and_every_output_is_exact(reference):
    engine, failures = poisoned_engine(fail_times=1)
    ae = AsyncEngine(engine)
    prompts = [[5, 6, 7], [9, 10], [POISON, 3, 4]]
    refs = reference.generate(prompts, greedy(12, ignore_eos=True))

    async def main():
        return await asyncio.gather(*(collect(ae, p, greedy(12, ignore_eos=True))
                                      for p in prompts))

    results = run(main())
    ae.shutdown(timeout=5)
    assert failures == [1]
    assert [r[-1].token_ids for r in results] == [r.token_ids for r in refs]
    assert ae.stats()["num_step_failures"] == 1
    assert engine.cache.manager.pool.num_used_pages == 0, "pages leaked"


def test_a_step_that_keeps_failing_fails_only_the_request_that_breaks_it(reference):
    engine, failures = poisoned_engine()
    ae = AsyncEngine(engine)
    good = [[5, 6, 7], [9, 10, 11, 12]]
    refs = reference.generate(good, greedy(24, ignore_eos=True))

    async def main():
        streams = [asyncio.ensure_future(collect(ae, p, greedy(24, ignore_eos=True)))
                   for p in good]
        await asyncio.sleep(0.05)  # the good ones are decoding when the poison arrives
        bad = await asyncio.gather(collect(ae, [POISON, 1], greedy(24)),
                                   return_exceptions=True)
        after = await collect(ae, [9, 10, 11, 12], greedy(24, ignore_eos=True))
        return await asyncio.gather(*streams), bad[0], after

    results, bad, after = run(main())
    assert isinstance(bad, StepFailedError) and "simulated kernel fault" in str(bad)
    assert [r[-1].token_ids for r in results] == [r.token_ids for r in refs]
    assert after[-1].token_ids == refs[1].token_ids  # the engine still serves
    assert ae.is_running and len(failures) == 4  # twice in the batch, twice alone
    ae.shutdown(timeout=5)
    assert engine.cache.manager.pool.num_used_pages == 0, "pages leaked"


def test_a_breaking_request_admitted_with_others_fails_alone_and_they_stay_exact(reference):
    # The poison arrives first, in the same step as newer innocent requests: the isolation
    # puts requests that have produced nothing yet back one at a time, so only it fails.
    engine, failures = poisoned_engine()
    ae = AsyncEngine(engine)
    good = [[5, 6, 7], [9, 10, 11, 12], [3, 3]]
    refs = reference.generate(good, greedy(16, ignore_eos=True))

    async def main():
        running = asyncio.ensure_future(collect(ae, [20, 21], greedy(40, ignore_eos=True)))
        await asyncio.sleep(0.05)
        return await asyncio.gather(
            collect(ae, [POISON, 1, 2], greedy(16)),
            *(collect(ae, p, greedy(16, ignore_eos=True)) for p in good),
            running, return_exceptions=True)

    bad, *results, running = run(main())
    assert isinstance(bad, StepFailedError) and "simulated kernel fault" in str(bad)
    assert [r[-1].token_ids for r in results] == [r.token_ids for r in refs]
    assert running[-1].token_ids == reference.generate(
        [[20, 21]], greedy(40, ignore_eos=True))[0].token_ids
    ae.shutdown(timeout=5)
    assert engine.cache.manager.pool.num_used_pages == 0, "pages leaked"
    assert ae.stats()["num_finished_error"] == 1


def slow_engine() -> Engine:
    """An engine whose every step takes at least 10 ms (400 tokens take >= 4 s)."""
    engine = Engine.from_pretrained(MODEL, max_model_len=512, num_pages=128)
    real_step = engine.step

    def slow_step():
        time.sleep(0.01)
        return real_step()

    engine.step = slow_step
    return engine


def test_a_request_past_its_deadline_fails_and_frees_its_pages():
    engine = slow_engine()
    ae = AsyncEngine(engine)

    async def main():
        slow = asyncio.ensure_future(collect(ae, "x", greedy(400, ignore_eos=True),
                                             timeout=0.3))
        quick = await collect(ae, "y", greedy(4, ignore_eos=True), timeout=30)
        with pytest.raises(DeadlineExceededError, match="timeout of 0.3 s"):
            await slow
        return quick

    quick = run(main())
    assert quick[-1].finish_reason == "length"
    ae.shutdown(timeout=5)
    stats = ae.stats()
    assert stats["num_finished_deadline"] == 1 and stats["num_in_flight"] == 0
    assert engine.cache.manager.pool.num_used_pages == 0, "pages leaked"


def test_a_reused_request_id_is_not_failed_by_its_predecessors_deadline():
    ae = AsyncEngine(slow_engine())  # the second request's 60 tokens take >= 0.6 s
    ae._deadline_slack = 4

    async def main():
        first = await collect(ae, "x", greedy(2, ignore_eos=True), request_id="r",
                              timeout=0.3)
        assert first[-1].finish_reason == "length"
        # the same id again, well past the first one's deadline of 0.3 s
        return await collect(ae, "x", greedy(60, ignore_eos=True), request_id="r", timeout=30)

    second = run(main())
    assert second[-1].finish_reason == "length" and len(second[-1].token_ids) == 60

    async def many():  # finished requests' deadline entries do not pile up
        for _ in range(12):
            await collect(ae, "x", greedy(1), timeout=30)
            assert len(ae._deadlines) <= 2 * 1 + 4 + 1

    run(many())
    ae.shutdown(timeout=5)
    assert ae.stats()["num_finished_deadline"] == 0


def test_a_full_waiting_queue_refuses_new_requests_until_one_finishes():
    engine = Engine.from_pretrained(MODEL, max_model_len=256, num_pages=128, max_num_seqs=2)
    ae = AsyncEngine(engine, max_waiting=1)
    assert ae.max_in_flight == 3

    async def main():
        streams = [await ae.add_request("x", greedy(40, ignore_eos=True)) for _ in range(3)]
        with pytest.raises(QueueFullError, match="3 requests in flight") as info:
            await ae.add_request("y", greedy(2))
        assert info.value.retry_after > 0
        async for _ in streams[0]:
            pass
        await asyncio.sleep(0.01)
        more = await ae.add_request("y", greedy(2))  # room again
        for s in [*streams[1:], more]:
            async for _ in s:
                pass

    run(main())
    ae.shutdown(timeout=5)
    stats = ae.stats()
    assert stats["num_rejected_queue_full"] == 1 and stats["num_in_flight"] == 0


def test_timeout_must_be_positive():
    ae = AsyncEngine(Engine.from_pretrained(MODEL, max_model_len=64, num_pages=16), start=False)

    async def main():
        with pytest.raises(ValueError, match="timeout"):
            await ae.add_request("x", greedy(2), timeout=0)

    run(main())


def test_seed_beyond_64_bits_is_refused_before_the_engine():
    from vibekit import InvalidRequestError, SamplingParams

    with pytest.raises(InvalidRequestError, match="64 bits"):
        SamplingParams(seed=2**70)
    torch.Generator().manual_seed(2**64 - 1)  # the largest accepted one works in torch
    SamplingParams(seed=2**64 - 1)


def test_a_failed_forward_waits_for_the_grammar_mask_fill_before_raising():
    # Found by bench_soak: a forward that raised left the mask fill running on its thread,
    # and the retried step's propose() then raced it on the same (not thread-safe) matcher.
    engine = Engine.from_pretrained(MODEL, max_model_len=256, num_pages=64)
    masker = engine.grammar_masker
    masker.overlap = True  # fill on the thread, as under load
    real_fill, done = masker._fill, []

    def slow_fill(*args, **kwargs):
        time.sleep(0.2)
        result = real_fill(*args, **kwargs)
        done.append(1)
        return result

    masker._fill = slow_fill
    model = engine.runner.model
    real_forward = model.forward
    model.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("simulated fault"))
    engine.add_request("x", greedy(8, response_format={"type": "json_object"}))
    with pytest.raises(RuntimeError, match="simulated fault"):
        engine.step()
    assert done == [1]  # the fill had finished when step() raised
    model.forward = real_forward
    out = engine.generate(["y"], greedy(8, response_format={"type": "json_object"}))[0]
    assert out.finish_reason in ("stop", "length")
