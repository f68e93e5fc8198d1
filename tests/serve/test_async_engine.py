"""AsyncEngine: one engine thread, asyncio streams, aborts, crashes and shutdown."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from vibekit import Engine, InvalidRequestError
from vibekit.runtime.async_engine import AsyncEngine, EngineClosedError, EngineDeadError

from .conftest import MODEL, greedy


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained(MODEL, max_model_len=256, num_pages=128)


@pytest.fixture
def async_engine(engine):
    ae = AsyncEngine(engine)
    yield ae
    ae.shutdown(graceful=False, timeout=5)
    assert not ae._thread.is_alive()
    assert engine.cache.manager.pool.num_used_pages == 0, "pages leaked"


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(ae: AsyncEngine, prompt, params, **kw):
    return [out async for out in ae.generate(prompt, params, **kw)]


def test_streams_add_up_to_engine_generate(async_engine, reference):
    prompts = ["one", "two two", [7, 8, 9]]
    refs = reference.generate(prompts, greedy(9, ignore_eos=True))

    async def main():
        return await asyncio.gather(*(collect(async_engine, p, greedy(9, ignore_eos=True))
                                      for p in prompts))

    for outs, ref in zip(run(main()), refs):
        assert [o.finished for o in outs] == [False] * (len(outs) - 1) + [True]
        assert sum((o.delta_token_ids for o in outs), []) == ref.token_ids
        assert "".join(o.delta_text for o in outs) == ref.text == outs[-1].text
    stats = async_engine.stats()
    assert stats["num_finished_length"] >= 3 and stats["num_completion_tokens"] >= 27


def test_invalid_requests_raise_before_any_output(async_engine):
    async def main():
        with pytest.raises(InvalidRequestError, match="empty"):
            await async_engine.add_request([], greedy(2))
        gen = async_engine.generate(list(range(300)), greedy(2))
        with pytest.raises(InvalidRequestError, match="max_model_len"):
            await gen.__anext__()
        # Long enough to still be running when the duplicate id arrives.
        stream = await async_engine.add_request("x", greedy(200, ignore_eos=True),
                                                request_id="dup")
        with pytest.raises(InvalidRequestError, match="already in use"):
            await async_engine.add_request("y", greedy(2), request_id="dup")
        return [out async for out in stream]  # the first one is unharmed

    outs = run(main())
    assert outs[-1].finish_reason is not None


def test_consumer_that_stops_early_aborts_its_request(async_engine, engine):
    async def main():
        gen = async_engine.generate("long", greedy(200, ignore_eos=True))
        async for out in gen:
            if len(out.token_ids) >= 2:
                break
        await gen.aclose()
        await async_engine.abort("no-such-request")  # a round trip through the engine thread

    run(main())
    assert async_engine.stats()["num_finished_abort"] == 1
    assert not engine.has_unfinished_requests()


def test_cancelled_consumer_aborts_its_request(async_engine, engine):
    async def main():
        started = asyncio.Event()

        async def consume():
            async for _ in async_engine.generate("long", greedy(200, ignore_eos=True)):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await async_engine.abort("no-such-request")

    run(main())
    assert async_engine.stats()["num_finished_abort"] == 1
    assert not engine.has_unfinished_requests()


def test_abort_by_id_ends_the_stream(async_engine):
    async def main():
        stream = await async_engine.add_request("abc", greedy(200, ignore_eos=True), "mine")
        first = await stream.__anext__()
        await async_engine.abort("mine")
        rest = [out async for out in stream]
        return first, rest

    first, rest = run(main())
    assert first.finish_reason is None and rest[-1].finish_reason == "abort"


def test_graceful_shutdown_finishes_in_flight_requests(engine):
    ae = AsyncEngine(engine)

    async def main():
        streams = [await ae.add_request(p, greedy(30, ignore_eos=True)) for p in ("a", "b")]
        await streams[0].__anext__()
        closing = asyncio.create_task(asyncio.to_thread(ae.shutdown, True, 30))
        await asyncio.sleep(0.05)
        with pytest.raises(EngineClosedError):
            await ae.add_request("late", greedy(2))
        finals = []
        for stream in streams:
            finals.append([out async for out in stream][-1])
        await closing
        return finals

    finals = run(main())
    assert [f.finish_reason for f in finals] == ["length", "length"]
    assert [len(f.token_ids) for f in finals] == [30, 30]
    assert not ae.is_running and engine.cache.manager.pool.num_used_pages == 0


def test_shutdown_without_grace_aborts_in_flight_requests(engine):
    ae = AsyncEngine(engine)

    async def main():
        stream = await ae.add_request("a", greedy(200, ignore_eos=True))
        await stream.__anext__()
        await asyncio.to_thread(ae.shutdown, False, 5)
        return [out async for out in stream]

    assert run(main())[-1].finish_reason == "abort"
    assert engine.cache.manager.pool.num_used_pages == 0


def test_engine_thread_crash_fails_every_in_flight_request():
    # A crash outside engine.step() (here: engine.stats) kills the engine thread; nobody hangs.
    engine = Engine.from_pretrained(MODEL, max_model_len=128, num_pages=64)
    real_stats = engine.stats
    calls = []

    def failing_stats():
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("boom")
        return real_stats()

    engine.stats = failing_stats
    ae = AsyncEngine(engine)

    async def main():
        gens = [collect(ae, p, greedy(50, ignore_eos=True)) for p in ("a", "b", "c")]
        results = await asyncio.gather(*gens, return_exceptions=True)
        with pytest.raises(EngineDeadError):
            await ae.add_request("after", greedy(2))
        return results

    results = run(main(), timeout=30)
    assert all(isinstance(r, EngineDeadError) for r in results), results
    assert "boom" in str(results[0]) and isinstance(results[0].__cause__, RuntimeError)
    assert not ae.is_running and isinstance(ae.error, RuntimeError)
    ae.shutdown(timeout=1)  # a no-op on a dead engine


class _NoPrediction:
    """An engine whose add_request predates predicted outputs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def add_request(self, prompt, params=None, request_id=None):
        return self._engine.add_request(prompt, params, request_id)


def test_prediction_needs_an_engine_that_takes_it(engine):
    old = AsyncEngine(_NoPrediction(engine))
    try:
        with pytest.raises(InvalidRequestError, match="prediction is not supported"):
            run(old.add_request("x", greedy(2), prediction="a guess"))
        outs = run(collect(old, "x", greedy(2)))  # without a prediction it serves
        assert outs[-1].finished
    finally:
        old.shutdown(timeout=5)


def test_prediction_reaches_an_engine_that_takes_it(async_engine, reference):
    if "prediction" not in inspect.signature(Engine.add_request).parameters:
        pytest.skip("this Engine has no predicted outputs yet")
    ref = reference.generate(["predict me"], greedy(16, ignore_eos=True))[0]
    outs = run(collect(async_engine, "predict me", greedy(16, ignore_eos=True),
                       prediction=ref.token_ids))
    assert outs[-1].token_ids == ref.token_ids
    assert outs[-1].usage.accepted_prediction_tokens > 0


def test_coalesced_stream_merges_what_a_slow_consumer_missed(async_engine, reference):
    ref = reference.generate(["slow reader"], greedy(12, ignore_eos=True))[0]

    async def main():
        done = async_engine.stats()["num_finished_length"]
        stream = await async_engine.add_request("slow reader", greedy(12, ignore_eos=True),
                                                coalesce=True)
        first = await stream.__anext__()
        while async_engine.stats()["num_finished_length"] == done:  # the engine runs ahead
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        return first, [out async for out in stream]

    first, rest = run(main())
    # Everything after the first read arrives merged into one output (or, if the engine
    # finished before the first read, the first output already holds it all).
    outs = [first] + rest
    assert len(rest) <= 1 and outs[-1].finish_reason == "length"
    assert [t for o in outs for t in o.delta_token_ids] == ref.token_ids
    assert "".join(o.delta_text for o in outs) == ref.text
