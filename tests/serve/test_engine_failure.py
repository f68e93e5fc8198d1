"""When the engine thread crashes, requests fail with OpenAI-shaped 503s instead of hanging."""

from __future__ import annotations

import asyncio
import json

import httpx

from vibekit import Engine
from vibekit.runtime.async_engine import AsyncEngine
from vibekit.serve import create_app

from .conftest import MODEL


def test_engine_crash_becomes_503s_and_an_in_band_stream_error():
    engine = Engine.from_pretrained(MODEL, max_model_len=128, num_pages=32)
    real_step, calls = engine.step, []

    def step_that_dies():
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("simulated kernel fault")
        return real_step()

    engine.step = step_that_dies
    app = create_app(AsyncEngine(engine), MODEL)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 50, "temperature": 0,
            "ignore_eos": True}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            streamed = await client.post("/v1/completions", json={**body, "stream": True})
            after = await client.post("/v1/completions", json=body)
            health = await client.get("/health")
            metrics = await client.get("/metrics")
        return streamed, after, health, metrics

    streamed, after, health, metrics = asyncio.run(asyncio.wait_for(main(), 30))
    assert streamed.status_code == 200  # accepted before the crash
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "simulated kernel fault" in error["message"] and error["code"] == "engine_dead"
    assert after.status_code == 503 and after.json()["error"]["code"] == "engine_dead"
    assert health.status_code == 503
    assert "vibekit_engine_healthy 0.0" in metrics.text
