"""N vibekit engine replicas behind one OpenAI ingress on Ray Serve, routed by prompt prefix.

    from vibekit.serve.ray import build_app
    from ray import serve
    serve.run(build_app("dummy:tiny-llama", num_replicas=2))   # or: vibekit serve M --replicas 2

Needs the `ray` extra (ray[serve]). Each replica (`VibekitReplica`) is the ordinary server of
vibekit.serve: an Engine in an AsyncEngine under `create_app`'s FastAPI app, driven in-process
through ASGI, so every route, limit, error and SSE stream is the single-process server's. The
ingress (`OpenAIIngress`) reads the body, tokenizes the prompt with the replicas' tokenizer (a
chat request through its chat template), hashes its first KV pages and hands the key to Ray
Serve's router, which here is `PrefixAwareRequestRouter`: consistent hashing with bounded loads
over the replicas (vibekit.serve.routing), least-loaded for prompts shorter than a page.

Failures: a replica that dies before the client got a byte (every non-streamed request, and a
stream before its first chunk), or answers 503 because its engine died or it is draining, is
retried on another replica, up to `max_attempts` tries; a
stream cut after chunks were sent cannot be replayed (the client already holds part of the
output), so it ends with an in-band error event (`code: "replica_died"`) and `data: [DONE]`.
Ray Serve restarts the dead replica; its prefix cache starts empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

try:
    import ray
    from ray import serve
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.config import RequestRouterConfig
    from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica
except ImportError as exc:  # pragma: no cover - exercised only without ray
    raise ImportError(
        "vibekit.serve.ray needs Ray Serve: install the `ray` extra from the checkout "
        "(pip install -e \".[ray]\", i.e. ray[serve]); the single-process server "
        "(vibekit serve MODEL) does not need it") from exc

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vibekit.serve import limits, prompts
from vibekit.serve.errors import APIError
from vibekit.serve.routing import PrefixRouter, route_key

__all__ = ["ATTEMPTS_HEADER", "REPLICA_HEADER", "ROUTERS", "OpenAIIngress",
           "PrefixAwareRequestRouter", "RoundRobinRequestRouter", "VibekitReplica", "build_app",
           "deploy", "replica_actor", "run_ray_server"]

logger = logging.getLogger("vibekit.serve.ray")

REPLICA_HEADER = "x-vibekit-replica"  # the full Ray Serve id of the replica that answered
ATTEMPTS_HEADER = "x-vibekit-attempts"  # replicas tried for this response (1: no retry)
_RETRYABLE = (RayActorError, ActorUnavailableError)


class PrefixAwareRequestRouter(RequestRouter):
    """Ray Serve request router: the replica that owns the request's route key on a
    consistent-hash ring, unless its load is past the bound, then the next clockwise; requests
    without a key go to the least loaded. Loads are Ray Serve's queue lengths (requests in
    flight per replica, probed when not cached). The later ranks are fallbacks Ray Serve tries
    when the first replica is full (max_ongoing_requests) or gone."""

    def initialize_state(self, load_factor: float = 1.25, num_virtual_nodes: int = 64) -> None:
        self._prefix = PrefixRouter(load_factor=load_factor, num_virtual_nodes=num_virtual_nodes)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        key = pending_request.kwargs.get("route_key") if pending_request is not None else None
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        loads = await self._loads(candidate_replicas)
        return [[by_id[rid]] for rid in self._prefix.rank(key, loads)]

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, int]:
        loads: dict[str, int] = {}
        unknown = []
        for r in replicas:
            queue_len = self._replica_queue_len_cache.get(r.replica_id)
            if queue_len is None:
                unknown.append(r)
            else:
                loads[r.replica_id.unique_id] = queue_len
        if unknown:
            for r, queue_len in await self._probe_queue_lens(unknown, 0):
                if queue_len is not None:
                    loads[r.replica_id.unique_id] = queue_len
        # A replica that did not answer the probe: no better guess than the busiest one.
        busiest = max(loads.values(), default=0)
        return {r.replica_id.unique_id: loads.get(r.replica_id.unique_id, busiest)
                for r in replicas}


class RoundRobinRequestRouter(RequestRouter):
    """The baseline: replicas in turn (by id), whatever the prompt; the others are fallbacks."""

    def initialize_state(self) -> None:
        self._next = 0

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
        if not ordered:
            return []
        start = self._next % len(ordered)
        self._next += 1
        return [[r] for r in ordered[start:] + ordered[:start]]


ROUTERS = {"prefix": PrefixAwareRequestRouter, "round_robin": RoundRobinRequestRouter}


class VibekitReplica:
    """One engine and its OpenAI app (vibekit.serve.create_app), served through ASGI calls."""

    async def __init__(self, model: str, served_model_names: Sequence[str],
                       engine_options: dict[str, Any], app_options: dict[str, Any],
                       chat_template: str | None = None) -> None:
        from vibekit import AsyncEngine, Engine
        from vibekit.serve.app import create_app

        options, app_options = dict(engine_options), dict(app_options)
        dtype, device = options.pop("dtype", "float32"), options.pop("device", "cpu")
        max_waiting = app_options.pop("max_waiting", None)
        engine = Engine.from_pretrained(model, dtype=dtype, device=device, **options)
        if chat_template is not None:
            if engine.tokenizer is None:
                raise ValueError(f"{model} has no tokenizer to give a chat template to")
            engine.tokenizer.chat_template = chat_template
        self.engine = AsyncEngine(engine, start=False, max_waiting=max_waiting)
        self.app = create_app(self.engine, list(served_model_names), **app_options)
        self.page_size = engine.config.cache.page_size
        self.replica_id = serve.get_replica_context().replica_id.to_full_id_str()
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # starts the engine thread

    def routing_info(self) -> dict[str, Any]:
        """What the ingress needs to compute route keys the way this replica caches pages."""
        return {"tokenizer": self.engine.tokenizer, "page_size": self.page_size,
                "vocab_size": self.engine.model_config.vocab_size}

    async def handle_http(self, method: str, path: str, query_string: bytes,
                          headers: list[tuple[bytes, bytes]], body: bytes,
                          route_key: int | None = None) -> AsyncIterator[tuple]:
        """Run one HTTP request through the app: yields ("start", status, headers), then
        ("body", bytes) chunks. route_key is read by the router only."""
        async for message in _call_asgi(self.app, method, path, query_string, headers, body):
            if message["type"] == "http.response.start":
                out = [*message.get("headers", ()),
                       (REPLICA_HEADER.encode(), self.replica_id.encode())]
                yield ("start", message["status"], out)
            elif message.get("body"):
                yield ("body", bytes(message["body"]))

    def check_health(self) -> None:
        """Ray Serve's health check: a dead engine makes Serve replace the replica."""
        if not self.engine.is_running:
            raise RuntimeError(f"the engine of replica {self.replica_id} is not running "
                               f"({self.engine.error!r})")

    async def __del__(self) -> None:
        await self._lifespan.__aexit__(None, None, None)  # drains, then stops the engine


async def _call_asgi(app: Any, method: str, path: str, query_string: bytes,
                     headers: list[tuple[bytes, bytes]], body: bytes
                     ) -> AsyncIterator[dict[str, Any]]:
    """The ASGI messages `app` sends for one HTTP request; closing this generator (the
    ingress's client went away) tells the app the client disconnected."""
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_given = False

    async def receive() -> dict[str, Any]:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await sent.put(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": query_string, "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
             "state": {}}
    task = asyncio.ensure_future(app(scope, receive, send))
    try:
        while True:
            getter = asyncio.ensure_future(sent.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                task.result()  # the app returned without finishing its response, or raised
                raise RuntimeError(f"{method} {path}: the app ended without a response body")
            message = getter.result()
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body"):
                return
    finally:
        disconnected.set()
        if not task.done():
            task.cancel()


class OpenAIIngress:
    """The HTTP entry: the same routes as `vibekit serve`, each request sent to a replica
    chosen by its prompt's route key, retried on another replica if its replica dies before
    the client received anything."""

    def __init__(self, replicas: Any, num_prefix_pages: int = 4, max_attempts: int = 3,
                 max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts} must be >= 1")
        self.replicas = replicas
        self.num_prefix_pages = num_prefix_pages
        self.max_attempts = max_attempts
        self.max_body_bytes = max_body_bytes
        self._info: dict[str, Any] | None = None
        self._info_lock = asyncio.Lock()

    async def __call__(self, request: Request) -> Response:
        # The app's routes are relative to the application's route_prefix (the root_path).
        path, root = request.url.path, request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        try:
            body = b""
            if request.method == "POST":
                body = await limits.read_json_body(request, self.max_body_bytes)
            key = await self._route_key(path, body)
        except APIError as err:
            return err.response()
        headers = [(k, v) for k, v in request.headers.raw
                   if k.lower() not in (b"host", b"content-length")]
        headers.append((b"content-length", str(len(body)).encode()))
        call = (request.method, path, request.url.query.encode(), headers, body)
        return await self._forward(call, key)

    async def _route_key(self, path: str, body: bytes) -> int | None:
        if path not in ("/v1/completions", "/v1/chat/completions") or not body:
            return None
        try:
            info = await self._routing_info()
        except _RETRYABLE:  # the replica asked died: route this one least-loaded, ask again later
            return None
        try:
            ids = await asyncio.to_thread(_prompt_ids, path, body, info)
        except Exception:  # noqa: BLE001 - a bad body: the replica answers it with the 4xx
            return None
        return route_key(ids, info["page_size"], self.num_prefix_pages)

    async def _routing_info(self) -> dict[str, Any]:
        async with self._info_lock:
            if self._info is None:
                self._info = await self.replicas.routing_info.remote()
            return self._info

    async def _forward(self, call: tuple, key: int | None) -> Response:
        last_error: BaseException | None = None
        for attempt in range(self.max_attempts):
            stream = self.replicas.options(stream=True).handle_http.remote(*call, route_key=key)
            try:
                _, status, headers = await stream.__anext__()
                media = dict(headers).get(b"content-type", b"").decode()
                if not media.startswith("text/event-stream"):
                    body = b"".join([chunk async for _, chunk in stream])
                    if attempt + 1 < self.max_attempts and _replica_unavailable(status, body):
                        last_error = RuntimeError(body.decode(errors="replace"))
                        continue  # its engine died or it is draining: another replica
                    return Response(body, status_code=status,
                                    headers=_header_dict(headers, attempt + 1))
                first = await anext(stream, None)
            except _RETRYABLE as exc:
                stream.cancel()
                last_error = exc
                logger.warning("replica failed before answering (attempt %d of %d): %s",
                               attempt + 1, self.max_attempts, exc)
                continue
            except BaseException:
                stream.cancel()
                raise
            return StreamingResponse(_pass_through(first, stream), status_code=status,
                                     headers=_header_dict(headers, attempt + 1))
        err = APIError(f"no replica could serve the request after {self.max_attempts} "
                       f"attempts: {last_error}", status_code=503, type="server_error",
                       code="replicas_unavailable")
        return err.response()


async def _pass_through(first: tuple | None, stream: Any) -> AsyncIterator[bytes]:
    try:
        if first is None:
            return
        yield first[1]
        try:
            async for _, chunk in stream:
                yield chunk
        except _RETRYABLE as exc:  # the replica died mid-stream: say so in-band, then end
            logger.warning("replica died mid-stream: %s", exc)
            err = APIError(f"the replica serving this stream died mid-way ({type(exc).__name__}); "
                           "the output so far is incomplete and was not retried",
                           status_code=503, type="server_error", code="replica_died")
            yield f"data: {json.dumps(err.body())}\n\n".encode()
            yield b"data: [DONE]\n\n"
    finally:
        stream.cancel()


def _replica_unavailable(status: int, body: bytes) -> bool:
    """A 503 that says this replica (not the request) is the problem."""
    if status != 503:
        return False
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return code in ("engine_dead", "shutting_down")


def _header_dict(headers: list[tuple[bytes, bytes]], attempts: int) -> dict[str, str]:
    skip = {"content-length", "transfer-encoding", "connection"}
    out = {k.decode(): v.decode() for k, v in headers if k.decode().lower() not in skip}
    out[ATTEMPTS_HEADER] = str(attempts)
    return out


def _prompt_ids(path: str, body: bytes, info: dict[str, Any]) -> list[int]:
    """The token ids the replica will see first: the first prompt of a completion, or the
    rendered chat prompt."""
    from vibekit.serve.prepare import render_request
    from vibekit.serve.protocol import ChatCompletionRequest, CompletionRequest

    tokenizer = info["tokenizer"]
    if path == "/v1/chat/completions":
        text = render_request(tokenizer, ChatCompletionRequest.model_validate_json(body))
        return prompts.encode(tokenizer, text, add_special_tokens=False)
    req = CompletionRequest.model_validate_json(body)
    return prompts.encode(tokenizer, req.prompts[0], vocab_size=info["vocab_size"])


def build_app(model: str, num_replicas: int = 2, *, served_model_name: str | None = None,
              engine_options: dict[str, Any] | None = None,
              app_options: dict[str, Any] | None = None, chat_template: str | None = None,
              num_prefix_pages: int = 4, load_factor: float = 1.25, max_attempts: int = 3,
              replica_num_cpus: float = 1.0, max_ongoing_requests: int = 256,
              router: str = "prefix", max_constructor_retry_count: int = 3,
              ) -> serve.Application:
    """The Ray Serve application: `num_replicas` engines and the OpenAI ingress.

    engine_options: Engine.from_pretrained's (dtype, device, max_model_len, page_size, ...).
    app_options: create_app's (shutdown_timeout, max_body_bytes, request_timeout,
    max_waiting, num_prepare_threads). chat_template: the template's text, for tokenizers
    without one. num_prefix_pages: KV pages the route key hashes. load_factor: the bounded-load
    factor (>= 1). max_attempts: tries per request when replicas die. replica_num_cpus: Ray
    CPUs each replica reserves. max_ongoing_requests: requests Ray Serve sends one replica at
    once (beyond it they wait in the router). router: "prefix" (PrefixAwareRequestRouter) or
    "round_robin" (the baseline RoundRobinRequestRouter). max_constructor_retry_count: failed
    replica starts before the deployment fails (serve.run then raises the replica's error).

    Example: serve.run(build_app("dummy:tiny-llama", 2), route_prefix="/")
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas} must be >= 1")
    if router not in ROUTERS:
        raise ValueError(f"router={router!r}; allowed: {', '.join(map(repr, ROUTERS))}")
    PrefixRouter(num_prefix_pages=num_prefix_pages, load_factor=load_factor)  # validates
    app_options = dict(app_options or {})
    if "max_body_bytes" in app_options:
        limits.Limits(app_options["max_body_bytes"], 1)  # validates
    replica = serve.deployment(
        VibekitReplica, name="VibekitReplica", num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": replica_num_cpus},
        request_router_config=RequestRouterConfig(
            request_router_class=ROUTERS[router],
            request_router_kwargs={"load_factor": load_factor} if router == "prefix" else {}),
        health_check_period_s=2.0, health_check_timeout_s=30.0,
        max_constructor_retry_count=max_constructor_retry_count,
    ).bind(model, [served_model_name or model], dict(engine_options or {}), app_options,
           chat_template)
    ingress = serve.deployment(OpenAIIngress, name="OpenAIIngress",
                               max_ongoing_requests=max(1000, 4 * max_ongoing_requests),
                               ray_actor_options={"num_cpus": 0})
    return ingress.bind(replica, num_prefix_pages=num_prefix_pages, max_attempts=max_attempts,
                        max_body_bytes=app_options.get("max_body_bytes",
                                                       limits.DEFAULT_MAX_BODY_BYTES))


def deploy(app: serve.Application, name: str = "vibekit", route_prefix: str = "/") -> None:
    """serve.run(app), waiting until every replica serves; a replica that cannot start makes
    it raise a RuntimeError that carries the replicas' own error (Ray's names only the
    deployment)."""
    try:
        serve.run(app, name=name, route_prefix=route_prefix)
    except RuntimeError as exc:
        status = serve.status().applications.get(name)
        details = [] if status is None else [
            f"{dep}: {info.message}" for dep, info in status.deployments.items() if info.message]
        raise RuntimeError(f"{exc}\n" + "\n".join(details)) from exc


def run_ray_server(model: str, num_replicas: int, host: str = "127.0.0.1", port: int = 8000,
                   address: str | None = None, **build_options: Any) -> None:
    """Start (or join, with `address`) a Ray cluster, serve build_app(model, num_replicas,
    **build_options) on http://host:port until SIGINT/SIGTERM, then shut Serve down."""
    import signal
    import threading

    app = build_app(model, num_replicas, **build_options)  # bad options fail before Ray starts
    if not ray.is_initialized():
        local = {} if address else {"_node_ip_address": "127.0.0.1"} if host in (
            "127.0.0.1", "localhost") else {}
        # "local": a new cluster of this process, never one another process started here.
        ray.init(address=address or "local", include_dashboard=False, **local)
    serve.start(http_options={"host": host, "port": port})
    deploy(app)
    logger.info("serving %s on http://%s:%d with %d replicas (Ray Serve)", model, host, port,
                num_replicas)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:  # a SIGINT that reached Python's default handler
        pass
    finally:
        serve.shutdown()
        if address is None:
            ray.shutdown()


def replica_actor(replica_id: str) -> Any:
    """The Ray actor of a replica named by its REPLICA_HEADER value (to inspect or kill)."""
    return ray.get_actor(replica_id, namespace="serve")
