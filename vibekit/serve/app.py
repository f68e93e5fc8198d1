"""The OpenAI-compatible FastAPI app: routes only; the work is in serving.py.

    GET  /health               200 while the engine serves, else 503
    GET  /metrics              Prometheus text
    GET  /v1/models            the served model (and /v1/models/{id})
    POST /v1/completions       prompt: str | list[str] | token ids; SSE with "stream": true
    POST /v1/chat/completions  messages through the tokenizer's chat template
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from vibekit import AsyncEngine, Engine, RequestStream
from vibekit.serve import limits, metrics, responses, serving
from vibekit.serve.engine_core import EngineCoreClient
from vibekit.serve.errors import APIError, install_error_handlers
from vibekit.serve.liveness import EngineStalledError
from vibekit.serve.prepare import MAX_CHOICES, Preparer
from vibekit.serve.responses import JSONResponse

__all__ = ["MAX_CHOICES", "create_app"]

T = TypeVar("T")

# Bodies up to this size are parsed, validated and tokenized on the event loop (a few tens of
# microseconds); larger ones in the prepare threads, so that a big prompt never stalls the
# other requests. On a busy loop the hop to a thread and back costs ~2 ms of time to first
# token (the thread waits for the GIL, then the result waits for the loop).
INLINE_PREPARE_BYTES = 4096


def create_app(engine: AsyncEngine | Engine | EngineCoreClient,
               served_model_names: str | Sequence[str],
               shutdown_timeout: float = 30.0, owns_engine: bool = True, *,
               max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES,
               max_prompt_chars: int | None = None, request_timeout: float | None = None,
               max_waiting: int | None = None, num_prepare_threads: int = 2) -> FastAPI:
    """Build the app around an Engine, or an AsyncEngine (started or not) that wraps one, or
    an EngineCoreClient (the engine in a process of its own; vibekit.serve.engine_core).

    served_model_names: the `model` values requests may name (the first is listed first).
    The lifespan starts the engine thread; at shutdown (after uvicorn has stopped accepting
    connections and waited for open ones), it lets what is left finish for `shutdown_timeout`
    seconds, aborts the rest and stops the engine thread (if `owns_engine`).

    max_body_bytes: larger bodies get a 413 before they are read. max_prompt_chars: longer
    prompt text gets a 400 before it is tokenized (default: max_model_len x the longest token
    in characters, what can possibly fit). request_timeout: the deadline in seconds of requests
    that send no `timeout` (None: none). max_waiting: requests that may wait beyond the
    engine's max_num_seqs (429 past it; only when an Engine is given, an AsyncEngine has its
    own). num_prepare_threads: worker threads that parse, render and tokenize requests.

    Example:
        app = create_app(Engine.from_pretrained("dummy:tiny-llama"), "tiny")
        uvicorn.run(app, port=8000)
    """
    if isinstance(engine, Engine):
        engine = AsyncEngine(engine, start=False, max_waiting=max_waiting)
    names = [served_model_names] if isinstance(served_model_names, str) else list(
        served_model_names)
    if not names:
        raise ValueError("served_model_names must name at least one model")
    if request_timeout is not None and not request_timeout > 0:
        raise ValueError(f"request_timeout={request_timeout} must be > 0 seconds or None")
    max_len = engine.config.max_model_len
    limit = limits.Limits(max_body_bytes, max_prompt_chars if max_prompt_chars is not None
                          else limits.default_max_prompt_chars(engine.tokenizer, max_len))
    preparer = Preparer(engine, names, limit, request_timeout)
    pool = ThreadPoolExecutor(num_prepare_threads, thread_name_prefix="vibekit-prepare")
    server_metrics = metrics.ServerMetrics()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if owns_engine:
                await asyncio.to_thread(engine.shutdown, True, shutdown_timeout)
            elif isinstance(engine, EngineCoreClient):
                engine.detach()  # its owner goes on without this loop

    app = _App(title="vibekit", summary="OpenAI-compatible server on a vibekit Engine",
               lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = server_metrics
    app.state.limits = limit
    app.state.draining = False  # set on SIGINT/SIGTERM by run_server: refuse new work
    reply = install_error_handlers(app, server_metrics.count_error)

    def check_accepting() -> None:
        if app.state.draining:
            raise APIError("The server is shutting down and accepts no new requests.",
                           status_code=503, type="server_error", code="shutting_down")

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "vibekit",
                "max_model_len": max_len}

    async def _compile(job: serving.Job) -> None:
        """The job's grammar into the engine's cache (one per job: its choices share it),
        bounded by the compile timeout and the job's own; what it took comes off the job's
        timeout. (The engine core process compiles in its own threads: a no-op there.)"""
        fmt = job.params[0].response_format if job.params else None
        if fmt is None:
            return
        start = time.monotonic()
        await engine.compile_grammar_async(fmt, job.timeout)
        if job.timeout is not None:
            job.timeout = max(1e-3, job.timeout - (time.monotonic() - start))

    async def generation(request: Request, prepare: Callable[[bytes], serving.Job]) -> Response:
        # NOTE: every exception is answered here, so the connection stays usable (see errors).
        try:
            check_accepting()
            body = await limits.read_json_body(request, limit.max_body_bytes)
            if len(body) <= INLINE_PREPARE_BYTES:
                job = prepare(body)  # costs less than the two thread hops it saves
            else:
                job = await asyncio.get_running_loop().run_in_executor(pool, prepare, body)
            await _compile(job)
            return await _serve(request, engine, job)
        except Exception as exc:
            return reply(exc)

    @app.get("/health")
    async def health() -> Response:
        check_accepting()
        if not engine.is_running:
            error = engine.error
            if error is None:
                raise APIError("the engine is not running", status_code=503,
                               type="server_error", code="shutting_down")
            code = "engine_stalled" if isinstance(error, EngineStalledError) else "engine_dead"
            raise APIError(f"the engine is not running: {error}", status_code=503,
                           type="server_error", code=code)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics_text() -> Response:
        text = metrics.render(engine.stats(), server_metrics, engine.is_running)
        return PlainTextResponse(text, media_type=metrics.CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> Response:
        return JSONResponse({"object": "list", "data": [model_card(n) for n in names]})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Response:
        if model_id not in names:
            raise APIError(f"The model `{model_id}` does not exist.", status_code=404,
                           param="model", code="model_not_found")
        return JSONResponse(model_card(model_id))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generation(request, preparer.completion)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generation(request, preparer.chat)

    app.fast_routes = {"/v1/completions": completions,
                       "/v1/chat/completions": chat_completions}
    return app


class _App(FastAPI):
    """FastAPI, except that POST /v1/completions and /v1/chat/completions go straight to their
    handlers, past the whole middleware stack (Starlette's error middleware, which wraps every
    send of a stream, and FastAPI's), the router and FastAPI's per-request dependency and
    task-group machinery. The handlers read, validate and answer everything themselves (errors
    included; an exception that escapes a response is uvicorn's to log, with a 500 if nothing
    was sent yet, as the error middleware would). The routes stay registered, so the OpenAPI
    schema and any other path are FastAPI's as before."""

    fast_routes: dict[str, Callable[[Request], Awaitable[Response]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.fast_routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _serve(request: Request, engine: AsyncEngine, job: serving.Job) -> Response:
    streams = await serving.start(engine, job)  # raises before any status is sent
    if job.stream:
        return _EventStream(streams, serving.stream_events(job, streams))
    try:
        body = await _unless_disconnected(request, serving.complete(job, streams))
    finally:
        for s in streams:
            s.cancel()
    if body is None:
        return Response(status_code=499)  # nobody is listening
    return JSONResponse(body)


class _EventStream(StreamingResponse):
    """SSE response that aborts its requests however the response ends (even unstarted). The
    events are sent from the handler's own task; a watcher task cancels it if the client
    disconnects (StreamingResponse runs an anyio task group per response for the same)."""

    def __init__(self, streams: list[RequestStream], events: Any) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.streams = streams

    async def stream_response(self, send: Any) -> None:
        """StreamingResponse's, except that LastEvents end the response in the same write."""
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            last = isinstance(chunk, responses.LastEvents)
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            await _disconnected(receive)
            gone = True  # (after the last send, this task is cancelled before it gets here)
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone or task.uncancel() > 0:
                raise  # cancelled by someone else too (a shutdown)
            # the client left: nobody to send the rest to
        finally:
            watcher.cancel()
            for s in self.streams:
                s.cancel()


async def _disconnected(receive: Any) -> None:
    """Return once the client has disconnected (the request's other messages are dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, or cancel it and return None if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client left (or this handler was cancelled)
    if not task.done():
        return None
    return task.result()
