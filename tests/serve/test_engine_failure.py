"""Engine faults over HTTP: a failing step fails its requests with a 500 naming the cause and
the server keeps serving; a crashed engine thread turns into 503s instead of hangs."""

from __future__ import annotations

import asyncio
import json

import httpx

from vibekit import Engine
from vibekit.runtime.async_engine import AsyncEngine
from vibekit.serve import create_app

from .conftest import MODEL

BODY = {"model": MODEL, "prompt": "x", "max_tokens": 50, "temperature": 0, "ignore_eos": True}


async def _exchange(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        streamed = await client.post("/v1/completions", json={**BODY, "stream": True})
        after = await client.post("/v1/completions", json=BODY)
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    return streamed, after, health, metrics


def _in_band_error(streamed: httpx.Response) -> dict:
    assert streamed.status_code == 200  # accepted before the fault
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    return json.loads(events[-2])["error"]


def test_a_step_that_always_fails_gives_500s_naming_the_cause_and_the_server_stays_up():
    engine = Engine.from_pretrained(MODEL, max_model_len=128, num_pages=32)
    real_step, calls = engine.step, []

    def step_that_fails():
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("simulated kernel fault")
        return real_step()

    engine.step = step_that_fails
    app = create_app(AsyncEngine(engine), MODEL)
    streamed, after, health, metrics = asyncio.run(asyncio.wait_for(_exchange(app), 30))
    error = _in_band_error(streamed)
    assert "simulated kernel fault" in error["message"]
    assert error["code"] == "engine_step_failed"
    assert after.status_code == 500 and after.json()["error"]["code"] == "engine_step_failed"
    assert "RuntimeError: simulated kernel fault" in after.json()["error"]["message"]
    assert health.status_code == 200
    assert "vibekit_engine_healthy 1.0" in metrics.text
    assert engine.cache.manager.pool.num_used_pages == 0


def test_engine_thread_crash_becomes_503s_and_an_in_band_stream_error():
    engine = Engine.from_pretrained(MODEL, max_model_len=128, num_pages=32)
    real_stats, calls = engine.stats, []

    def stats_that_die():  # outside engine.step(): nothing to retry, the thread dies
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated bug")
        return real_stats()

    engine.stats = stats_that_die
    app = create_app(AsyncEngine(engine), MODEL)
    streamed, after, health, metrics = asyncio.run(asyncio.wait_for(_exchange(app), 30))
    error = _in_band_error(streamed)
    assert "simulated bug" in error["message"] and error["code"] == "engine_dead"
    assert after.status_code == 503 and after.json()["error"]["code"] == "engine_dead"
    assert health.status_code == 503
    assert "vibekit_engine_healthy 0.0" in metrics.text
