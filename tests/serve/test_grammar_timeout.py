"""A grammar that takes forever to compile costs its own request a clear error, never the
others: plain and other structured requests keep being served meanwhile (both server modes)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from vibekit import AsyncEngine
from vibekit.serve.engine_core import EngineCoreClient

from .conftest import MODEL, serving
from .core_helpers import HANG_SCHEMA, slow_grammar_engine

OPTIONS = dict(max_model_len=256, num_pages=128, seed=0)
LIMIT = 1.0
SCHEMA = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"],
          "additionalProperties": False}


def _fmt(name: str) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMA}}


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_grammar_that_never_compiles_fails_alone_and_on_time(mode):
    if mode == "process":
        engine = EngineCoreClient(slow_grammar_engine, MODEL, grammar_compile_timeout=LIMIT,
                                  **OPTIONS)
    else:
        engine = AsyncEngine(slow_grammar_engine(MODEL, **OPTIONS), start=False,
                             grammar_compile_timeout=LIMIT)
    body = {"model": MODEL, "max_tokens": 8, "temperature": 0, "prompt": "x"}

    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            async def timed(extra):
                start = time.monotonic()
                r = await c.post("/v1/completions", json={**body, **extra})
                return r, time.monotonic() - start

            def hang():
                return asyncio.ensure_future(timed({"response_format": _fmt(HANG_SCHEMA)}))

            # two compiles that never return hold two of the four compile threads for good
            hung = [hang() for _ in range(2)]
            await asyncio.sleep(0.2)
            plain = await timed({})
            structured = await timed({"response_format": _fmt("fine"), "max_tokens": 64})
            # four more: two take the last threads, two cannot start within the limit
            hung += [hang() for _ in range(4)]
            await asyncio.sleep(0.2)
            starved = await timed({"response_format": _fmt("fine too")})
            deadline = await timed({"response_format": _fmt(HANG_SCHEMA), "timeout": 0.3})
            return await asyncio.gather(*hung), plain, structured, starved, deadline

    with serving(engine) as url:
        hung, plain, structured, starved, deadline = asyncio.run(asyncio.wait_for(main(url), 60))
    for r, elapsed in [*hung, starved]:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "response_format", error
        assert f"did not compile within {LIMIT:g} s" in error["message"], error
        assert elapsed < LIMIT + 3.0, elapsed
    # the plain request was not held up by the compiles, and a schema that compiles is served
    assert plain[0].status_code == 200 and plain[1] < LIMIT, plain
    assert structured[0].status_code == 200, structured[0].text
    choice = structured[0].json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["text"])["a"], bool), choice
    # the request's own timeout, when it is the shorter limit, is a 504
    assert deadline[0].status_code == 504, deadline[0].text
    assert deadline[0].json()["error"]["code"] == "deadline_exceeded"
    assert deadline[1] < 0.3 + 2.0
