"""The engine core in its own process (EngineCoreClient): faults in the core stay with their
requests, a dead core turns into 503s (not hangs), and no process outlives the server.

Streaming, aborts on disconnect, tools, grammars and the rest run through the core in every
test that uses the `server` fixture (it is parametrized over both modes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from vibekit.serve import create_app
from vibekit.serve.engine_core import EngineCoreClient

from .conftest import MODEL, greedy, serving
from .core_helpers import (
    HANG,
    POISON,
    SLOW,
    broken_engine,
    hanging_engine,
    poisoned_engine,
    slow_engine,
)

OPTIONS = dict(max_model_len=256, num_pages=128, seed=0)


def _wait(predicate, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.text.splitlines() if line]


def test_a_poisoned_step_in_the_core_fails_one_request_and_the_others_stay_exact(reference):
    core = EngineCoreClient(poisoned_engine, MODEL, **OPTIONS)
    good = [[5, 6, 7], [9, 10, 11, 12], [3, 3]]
    refs = reference.generate(good, greedy(16, ignore_eos=True))
    with serving(core) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0)

        async def complete(prompt):
            r = await client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=16, temperature=0,
                extra_body={"ignore_eos": True, "return_token_ids": True})
            return r.choices[0].model_extra["token_ids"]

        async def main():
            return await asyncio.gather(complete([POISON, 1, 2]),
                                        *(complete(p) for p in good), return_exceptions=True)

        bad, *results = asyncio.run(asyncio.wait_for(main(), 60))
        assert isinstance(bad, openai.InternalServerError), bad
        assert bad.body["code"] == "engine_step_failed"
        assert "simulated kernel fault in the core" in bad.body["message"]
        assert results == [r.token_ids for r in refs]
        _wait(lambda: core.stats()["num_finished_error"] == 1 and core.stats()["kv_usage"] == 0,
              what="the core to free the failed request's pages")
        assert core.is_running
        assert httpx.get(url + "/health").status_code == 200
        # a schema compiles in the core: one that does not is the add's rejection, a 400
        fmt = {"type": "json_schema", "json_schema": {"name": "t",
                                                      "schema": {"type": "no-such-type"}}}
        r = httpx.post(url + "/v1/completions", timeout=30, json={
            "model": MODEL, "prompt": "x", "max_tokens": 4, "response_format": fmt})
        assert r.status_code == 400, r.text


def test_killing_the_core_gives_503s_and_an_in_band_error_not_hangs():
    core = EngineCoreClient(slow_engine, MODEL, **OPTIONS)
    app = create_app(core, MODEL, shutdown_timeout=5.0)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 200, "temperature": 0,
            "ignore_eos": True}

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=30) as c:
                streamed = asyncio.ensure_future(
                    c.post("/v1/completions", json={**body, "stream": True}))
                plain = asyncio.ensure_future(c.post("/v1/completions", json=body))
                while core.stats()["num_running"] < 2:
                    await asyncio.sleep(0.02)
                os.kill(core.process.pid, signal.SIGKILL)
                results = await streamed, await plain
                after = await c.post("/v1/completions", json=body)
                health = await c.get("/health")
                metrics = await c.get("/metrics")
                return (*results, after, health, metrics)

    streamed, plain, after, health, metrics = asyncio.run(asyncio.wait_for(main(), 60))
    events = _events(streamed)
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_dead"
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "engine_dead"
    assert after.status_code == 503 and "exited unexpectedly" in after.json()["error"]["message"]
    assert health.status_code == 503 and health.json()["error"]["code"] == "engine_dead"
    assert "vibekit_engine_healthy 0.0" in metrics.text
    assert not core.is_running and "exit code -9" in str(core.error)


def test_the_core_keeps_the_waiting_queue_and_deadlines():
    core = EngineCoreClient(slow_engine, MODEL, max_waiting=1, max_num_seqs=1, **OPTIONS)
    app = create_app(core, MODEL, shutdown_timeout=5.0)
    long = {"model": MODEL, "prompt": "x", "max_tokens": 60, "temperature": 0,
            "ignore_eos": True}

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=60) as c:
                first = asyncio.ensure_future(c.post("/v1/completions", json=long))
                second = asyncio.ensure_future(c.post("/v1/completions", json=long))
                while core.stats()["num_in_flight"] < 2:
                    await asyncio.sleep(0.02)
                third = await c.post("/v1/completions", json=long)
                done = await first, await second
                late = await c.post("/v1/completions",
                                    json={**long, "max_tokens": 200, "timeout": 0.3})
                return third, *done, late

    third, first, second, late = asyncio.run(asyncio.wait_for(main(), 60))
    assert first.status_code == second.status_code == 200
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
    assert third.json()["error"]["code"] == "queue_full"
    assert late.status_code == 504 and "timeout of 0.3 s" in late.json()["error"]["message"]
    assert not core.process.is_alive()  # the lifespan shut it down
    stats = core.stats()
    assert stats["kv_usage"] == 0 and stats["num_finished_deadline"] == 1


def test_an_engine_that_cannot_be_built_fails_construction_with_the_cause():
    with pytest.raises(RuntimeError, match="simulated bad checkpoint"):
        EngineCoreClient(broken_engine, MODEL)


def _descendants(pid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL,
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_no_process_outlives_the_server(sig):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibekit.cli", "serve", MODEL, "--port", str(port),
         "--max-model-len", "256", "--num-pages", "64", "--engine-process",
         "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.stdout.read()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(healthy, timeout=90, what="the server to come up")
        children = _descendants(proc.pid)
        assert children, "no engine core process"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        # SIGKILL: the core reads EOF on its pipe and exits by itself
        _wait(lambda: not any(_alive(pid) for pid in children), timeout=20,
              what=f"the server's children {children} to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("fault", ["hung forward", "frozen process"])
def test_a_stalled_core_fails_its_requests_with_503_engine_stalled_not_hangs(fault):
    timeout = 1.0
    core = EngineCoreClient(hanging_engine, MODEL, stall_timeout=timeout, **OPTIONS)
    app = create_app(core, MODEL, shutdown_timeout=5.0)
    body = {"model": MODEL, "max_tokens": 200, "temperature": 0, "ignore_eos": True}

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=30) as c:
                # a step slower than the heartbeat but within the timeout is no stall; nor is
                # an idle core, however long it idles
                slow = await c.post("/v1/completions",
                                    json={**body, "prompt": [SLOW, 1], "max_tokens": 2})
                await asyncio.sleep(1.5 * timeout)
                streamed = asyncio.ensure_future(
                    c.post("/v1/completions", json={**body, "prompt": "x", "stream": True}))
                while core.stats()["num_running"] < 1:
                    await asyncio.sleep(0.02)
                start = time.monotonic()
                if fault == "hung forward":
                    plain = await c.post("/v1/completions", json={**body, "prompt": [HANG, 1]})
                else:
                    os.kill(core.process.pid, signal.SIGSTOP)
                    plain = await c.post("/v1/completions", json={**body, "prompt": "y"})
                streamed = await streamed
                elapsed = time.monotonic() - start
                after = await c.post("/v1/completions", json={**body, "prompt": "z"})
                return (slow, streamed, plain, after, elapsed, await c.get("/health"),
                        await c.get("/metrics"))

    slow, streamed, plain, after, elapsed, health, metrics = asyncio.run(
        asyncio.wait_for(main(), 60))
    assert slow.status_code == 200, slow.text
    assert elapsed < timeout + 5.0
    why = "heartbeat kept coming" if fault == "hung forward" else "not even a heartbeat"
    events = _events(streamed)
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_stalled"
    for r in (plain, after, health):
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_stalled", r.text
        message = r.json()["error"]["message"]
        assert "made no progress" in message and why in message, message
    assert "vibekit_engine_stalls_total 1.0" in metrics.text
    assert "vibekit_engine_healthy 0.0" in metrics.text
    assert not core.process.is_alive() and not core.is_running


def test_the_client_reads_on_the_loop_that_started_it_and_back_on_a_thread_after_detach():
    from vibekit import SamplingParams
    from vibekit.serve.engine_core import load_engine

    core = EngineCoreClient(load_engine, MODEL, **OPTIONS)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)

    async def generate() -> list[int]:
        last = None
        async for out in core.generate("the loop reads", params):
            last = out
        return last.token_ids

    async def on_the_loop():
        core.start()
        assert core._loop is asyncio.get_running_loop() and not core._reader.is_alive()
        ids = await generate()
        other = await asyncio.to_thread(asyncio.run, generate())  # another loop: refused
        return ids, other

    try:
        by_thread = asyncio.run(generate())
        with pytest.raises(RuntimeError, match="reads on another event loop"):
            asyncio.run(on_the_loop())
        core.detach()  # that loop is closed: back to a reader thread
        assert core._loop is None and core._reader.is_alive()
        assert asyncio.run(generate()) == by_thread

        async def attach_and_compare():
            core.start()
            ids = await generate()
            core.detach()
            return ids

        assert asyncio.run(attach_and_compare()) == by_thread
        assert asyncio.run(generate()) == by_thread
    finally:
        core.shutdown(timeout=5.0)
    assert not core.process.is_alive() and core._reading_done.is_set()


def test_core_outputs_are_snapshots_of_their_step(reference):
    """Each streamed RequestOutput's token_ids is what was generated up to it, read after the
    request finished (the client builds them lazily over one growing list)."""
    from vibekit.serve.engine_core import load_engine

    core = EngineCoreClient(load_engine, MODEL, **OPTIONS)
    try:
        ref = reference.generate([[5, 6, 7]], greedy(24, ignore_eos=True))[0]

        async def main():
            return [out async for out in core.generate([5, 6, 7], greedy(24, ignore_eos=True))]

        outs = asyncio.run(asyncio.wait_for(main(), 60))
        assert len(outs) > 1 and outs[-1].token_ids == ref.token_ids
        seen: list[int] = []
        for out in outs:
            seen += out.delta_token_ids
            assert out.token_ids == seen
    finally:
        core.shutdown(timeout=5.0)
