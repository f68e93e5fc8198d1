"""A real uvicorn server on 127.0.0.1 (background thread) serving dummy:tiny-llama, plus a
separate Engine on the same weights to compute reference outputs with Engine.generate.

The server runs in both modes: the engine on a thread of the server process (AsyncEngine) and
in an engine core process of its own (EngineCoreClient); tests that use it run in both."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import openai
import pytest
import uvicorn

from vibekit import Engine, SamplingParams
from vibekit.runtime.async_engine import AsyncEngine
from vibekit.serve import create_app
from vibekit.serve.engine_core import EngineCoreClient, load_engine

MODEL = "dummy:tiny-llama"
MAX_MODEL_LEN = 1024
ENGINE_OPTIONS = dict(max_model_len=MAX_MODEL_LEN, num_pages=1024, seed=0)


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    engine: AsyncEngine | EngineCoreClient
    mode: str = "thread"  # "thread" (AsyncEngine) or "process" (EngineCoreClient)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def wait_idle(self, timeout: float = 10.0) -> dict[str, float]:
        """Engine stats once nothing runs, waits or holds a KV page (fails on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.engine.stats()
            idle = stats["num_running"] == 0 and stats["num_waiting"] == 0
            if idle and stats["kv_usage"] == 0.0:
                return stats
            assert time.monotonic() < deadline, f"engine still busy: {stats}"
            time.sleep(0.02)


@pytest.fixture(scope="session", params=["thread", "process"])
def server(request):
    if request.param == "process":
        engine = EngineCoreClient(load_engine, MODEL, **ENGINE_OPTIONS)
    else:
        engine = AsyncEngine(Engine.from_pretrained(MODEL, **ENGINE_OPTIONS), start=False)
    with serving(engine) as url:
        yield Server(url, engine, request.param)


@contextlib.contextmanager
def serving(engine, **app_options):
    """Serve `engine` (an AsyncEngine or EngineCoreClient) on a free port; yields the URL and
    shuts the app (and the engine) down afterwards."""
    app = create_app(engine, MODEL, shutdown_timeout=5.0, **app_options)
    # NOTE: proto IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections; with
    # proto 0 it does not, and Nagle + delayed ACKs hold stream chunks back ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()
        engine.shutdown(timeout=5.0)  # no-op if the lifespan did it


@pytest.fixture(scope="session")
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0,
                       timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def reference():
    """An Engine on the same weights as the server's; used only from the test thread."""
    return Engine.from_pretrained(MODEL, **ENGINE_OPTIONS)


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)
