"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with a status code.

Bad input is a 400 (404 for an unknown model, code "model_not_found"; 413 for a body over the
limit; 415 for a body that is not JSON), a full waiting queue a 429 with Retry-After, a request
past its deadline a 504, a dead or closing engine a 503, and an engine step that failed with the
request in its batch, or a bug in this server, a 500 naming the cause. Every handler keeps the
server serving and the connection open.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vibekit import EngineClosedError, EngineDeadError, InvalidRequestError
from vibekit.runtime.async_engine import DeadlineExceededError, QueueFullError, StepFailedError
from vibekit.serve.liveness import EngineStalledError

logger = logging.getLogger("vibekit.serve")


_PARAMS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
                     "stop_token_ids", "response_format", "prediction", "prompt", "messages"})


class APIError(Exception):
    """An error to send to the client as-is."""

    def __init__(self, message: str, status_code: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def from_validation_error(exc: ValidationError) -> APIError:
    """The first problem pydantic found, with its field path as `param`."""
    err = exc.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return APIError(f"We could not parse the JSON body of your request ({err['msg']}). "
                        "The body must be a JSON object.")
    # loc is the field path, with union members named in it: ("stop", "list[str]", 0)
    loc = ".".join(str(part) for part in err["loc"])
    param = str(err["loc"][0]) if err["loc"] else None
    if err["type"] == "missing":
        return APIError(f"Missing required parameter: '{loc}'.", param=param)
    got = err.get("input")
    shown = repr(got) if len(repr(got)) < 80 else repr(got)[:76] + "..."
    where = f"'{loc}'" if loc else "the request body"
    return APIError(f"Invalid value for {where}: {err['msg']} (got {shown}).", param=param)


def from_engine_error(exc: Exception) -> APIError:
    if isinstance(exc, InvalidRequestError):
        # Engine messages start with the field at fault: "top_p=0.0 is invalid; ...",
        # "response_format.type 'yaml' is not supported", "prompt has 5000 tokens; ..."
        match = re.match(r"^(\w+)", str(exc))
        param = match.group(1) if match and match.group(1) in _PARAMS else None
        return APIError(str(exc), param=param)
    if isinstance(exc, QueueFullError):
        retry_after = max(1, round(exc.retry_after))
        return APIError(str(exc), status_code=429, type="rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(retry_after)})
    if isinstance(exc, DeadlineExceededError):
        return APIError(f"{exc}. Send a larger `timeout` (seconds) or fewer max_tokens.",
                        status_code=504, type="timeout_error", code="deadline_exceeded",
                        param="timeout")
    if isinstance(exc, StepFailedError):
        logger.error("request failed in the engine: %s", exc)
        return APIError(f"The engine failed on this request: {exc}", status_code=500,
                        type="server_error", code="engine_step_failed")
    if isinstance(exc, EngineStalledError):
        return APIError(f"The engine is not running: {exc}", status_code=503,
                        type="server_error", code="engine_stalled")
    if isinstance(exc, EngineDeadError):
        return APIError(f"The engine is not running: {exc}", status_code=503,
                        type="server_error", code="engine_dead")
    if isinstance(exc, EngineClosedError):
        return APIError("The server is shutting down and accepts no new requests.",
                        status_code=503, type="server_error", code="shutting_down")
    logger.exception("internal error", exc_info=exc)
    return APIError(f"Internal server error: {type(exc).__name__}: {exc}", status_code=500,
                    type="server_error")


def from_exception(exc: BaseException) -> APIError:
    """Any exception a route raises, as the APIError to send."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    return from_engine_error(exc)  # type: ignore[arg-type]


def install_error_handlers(app: FastAPI, on_error: Any = None) -> Any:
    """Route every exception to an OpenAI-shaped JSON response; `on_error(status)` counts them.

    Returns `reply(exc) -> JSONResponse` for routes to answer their own exceptions with.
    NOTE: Starlette re-raises what its catch-all `Exception` handler answered, and uvicorn then
    closes the connection, resetting the client's next keep-alive request; so routes catch
    their exceptions themselves and the catch-all is only a last resort.
    """

    def reply(err: APIError) -> JSONResponse:
        if on_error is not None:
            on_error(err.status_code)
        return err.response()

    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return reply(exc)

    async def validation_error(request: Request, exc: ValidationError) -> JSONResponse:
        return reply(from_validation_error(exc))

    async def engine_error(request: Request, exc: Exception) -> JSONResponse:
        return reply(from_engine_error(exc))

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return reply(APIError(f"{exc.detail} ({request.method} {request.url.path})",
                              status_code=exc.status_code, type=kind))

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for cls in (InvalidRequestError, EngineDeadError, EngineClosedError, QueueFullError,
                DeadlineExceededError, StepFailedError, Exception):
        app.add_exception_handler(cls, engine_error)

    def reply_to(exc: BaseException) -> JSONResponse:
        return reply(from_exception(exc))

    return reply_to
