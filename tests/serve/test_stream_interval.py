"""--stream-interval: after the first token, streamed chunks carry at least `stream_interval`
tokens (the last may carry fewer), in both server modes, and the tokens are the plain ones."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from vibekit import AsyncEngine, Engine
from vibekit.core.outputs import RequestOutput, Usage
from vibekit.runtime.async_engine import RequestStream
from vibekit.serve.engine_core import EngineCoreClient, load_engine

from .conftest import ENGINE_OPTIONS, MODEL, greedy, serving


def _served(mode: str, interval: int):
    if mode == "process":
        return EngineCoreClient(load_engine, MODEL, stream_interval=interval, **ENGINE_OPTIONS)
    return AsyncEngine(Engine.from_pretrained(MODEL, **ENGINE_OPTIONS), start=False,
                       stream_interval=interval)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_chunks_carry_stream_interval_tokens_and_the_plain_tokens(mode, reference):
    prompt, n = [5, 6, 7], 23
    ref = reference.generate([prompt], greedy(n, ignore_eos=True))[0]
    with serving(_served(mode, 4)) as url:
        r = httpx.post(url + "/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": prompt, "max_tokens": n, "temperature": 0,
            "ignore_eos": True, "stream": True, "return_token_ids": True})
        assert r.status_code == 200, r.text
    chunks = [json.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    ids = [c["choices"][0]["token_ids"] for c in chunks if c["choices"]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert [t for part in ids for t in part] == ref.token_ids and text == ref.text
    # (a busy consumer may merge more: at least, never fewer)
    assert all(len(part) >= 4 for part in ids[1:-1]), [len(part) for part in ids]
    assert len(ids) < n  # fewer chunks than tokens


@pytest.mark.parametrize("late", [0, 6])
def test_a_stream_wakes_its_consumer_at_the_first_output_then_every_interval_tokens(late):
    """late: outputs queued before the consumer starts reading (a busy consumer); the interval
    counts from its read."""
    n = 14

    async def main():
        stream = RequestStream(None, "r", asyncio.get_running_loop(), coalesce=True,
                               interval=4)  # type: ignore[arg-type]
        reads = []

        async def consume():
            async for out in stream:
                reads.append(out.delta_token_ids)

        task = None
        for i in range(n):
            if i == late:
                task = asyncio.create_task(consume())
            await asyncio.sleep(0)  # the consumer waits again, if it was woken
            stream._put(RequestOutput("r", [1], list(range(i + 1)), "",
                                      "length" if i == n - 1 else None, Usage(), [i], ""))
        await asyncio.wait_for(task, 5)
        return reads

    expected = ([[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13]] if late == 0 else
                [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13]])
    assert asyncio.run(main()) == expected


def test_stream_interval_must_be_a_positive_integer():
    engine = Engine.from_pretrained(MODEL, **ENGINE_OPTIONS)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="stream_interval"):
            AsyncEngine(engine, start=False, stream_interval=bad)
    with pytest.raises(ValueError, match="stream_interval"):
        EngineCoreClient(load_engine, MODEL, stream_interval=0, **ENGINE_OPTIONS)
