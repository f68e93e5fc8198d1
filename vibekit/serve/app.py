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
from collections.abc import Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from vibekit import AsyncEngine, Engine, RequestStream
from vibekit.serve import metrics, prompts, serving
from vibekit.serve.errors import APIError, install_error_handlers
from vibekit.serve.protocol import ChatCompletionRequest, CompletionRequest, SamplingRequest

T = TypeVar("T")
MAX_CHOICES = 1024  # prompts * n per HTTP request


def create_app(engine: AsyncEngine | Engine, served_model_names: str | Sequence[str],
               shutdown_timeout: float = 30.0, owns_engine: bool = True) -> FastAPI:
    """Build the app around an Engine, or an AsyncEngine (started or not) that wraps one.

    served_model_names: the `model` values requests may name (the first is listed first).
    The lifespan starts the engine thread; at shutdown (after uvicorn has stopped accepting
    connections and waited for open ones), it lets what is left finish for `shutdown_timeout`
    seconds, aborts the rest and stops the engine thread (if `owns_engine`).

    Example:
        app = create_app(Engine.from_pretrained("dummy:tiny-llama"), "tiny")
        uvicorn.run(app, port=8000)
    """
    if isinstance(engine, Engine):
        engine = AsyncEngine(engine, start=False)
    names = [served_model_names] if isinstance(served_model_names, str) else list(
        served_model_names)
    if not names:
        raise ValueError("served_model_names must name at least one model")
    server_metrics = metrics.ServerMetrics()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        if owns_engine:
            await asyncio.to_thread(engine.shutdown, True, shutdown_timeout)

    app = FastAPI(title="vibekit", summary="OpenAI-compatible server on a vibekit Engine",
                  lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = server_metrics
    app.state.draining = False  # set on SIGINT/SIGTERM by run_server: refuse new work
    install_error_handlers(app, server_metrics.count_error)

    def check_accepting() -> None:
        if app.state.draining:
            raise APIError("The server is shutting down and accepts no new requests.",
                           status_code=503, type="server_error", code="shutting_down")

    def check_model(req: SamplingRequest) -> None:
        if req.model not in names:
            raise APIError(f"The model `{req.model}` does not exist. This server serves "
                           f"{', '.join(repr(n) for n in names)}.", status_code=404,
                           param="model", code="model_not_found")
        req.check_supported()

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "vibekit",
                "max_model_len": engine.config.max_model_len}

    @app.get("/health")
    async def health() -> Response:
        check_accepting()
        if not engine.is_running:
            raise APIError("the engine is not running", status_code=503, type="server_error",
                           code="engine_dead" if engine.error else "shutting_down")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics_text() -> Response:
        text = metrics.render(engine.stats(), server_metrics, engine.is_running)
        return PlainTextResponse(text, media_type=metrics.CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(n) for n in names]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in names:
            raise APIError(f"The model `{model_id}` does not exist.", status_code=404,
                           param="model", code="model_not_found")
        return model_card(model_id)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        check_accepting()
        req = CompletionRequest.model_validate_json(await request.body())
        check_model(req)
        vocab = engine.model_config.vocab_size
        ids = [prompts.encode(engine.tokenizer, p, vocab_size=vocab) for p in req.prompts]
        job = _job("completion", req, ids, "max_tokens", req.max_tokens, engine)
        return await _serve(request, engine, job, req.stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_accepting()
        req = ChatCompletionRequest.model_validate_json(await request.body())
        check_model(req)
        text = prompts.render_chat(engine.tokenizer,
                                   [m.as_template_input() for m in req.messages])
        ids = prompts.encode(engine.tokenizer, text, add_special_tokens=False)
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        job = _job("chat", req, [ids], param, req.requested_max_tokens, engine)
        return await _serve(request, engine, job, req.stream)

    return app


def _job(kind: str, req: SamplingRequest, prompt_ids: list[list[int]], param: str,
         max_tokens: int | None, engine: AsyncEngine) -> serving.Job:
    if len(prompt_ids) * req.n > MAX_CHOICES:
        raise APIError(f"at most {MAX_CHOICES} choices (prompts x n) per request", param="n")
    max_len = engine.config.max_model_len
    params = []
    for ids in prompt_ids:
        budget = prompts.resolve_max_tokens(len(ids), max_tokens, max_len, param)
        params += [serving.sampling_params(req, budget, i) for i in range(req.n)]
    return serving.Job(kind=kind, model=req.model, prompts=prompt_ids, params=params, n=req.n,
                       prediction=req.prediction.text if req.prediction else None,
                       include_usage=req.include_usage, return_token_ids=req.return_token_ids)


async def _serve(request: Request, engine: AsyncEngine, job: serving.Job,
                 stream: bool) -> Response:
    streams = await serving.start(engine, job)  # raises before any status is sent
    if stream:
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
    """SSE response that aborts its requests however the response ends (even unstarted)."""

    def __init__(self, streams: list[RequestStream], events: Any) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.streams = streams

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for s in self.streams:
                s.cancel()


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, or cancel it and return None if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client left (or this handler was cancelled)
    if not task.done():
        return None
    return task.result()
