"""The speech-recognition app: OpenAI's transcription route plus a WebSocket for live audio.

    GET  /health                          200 while the engine thread runs
    GET  /v1/models                       the served model
    POST /v1/audio/transcriptions         multipart: file (PCM WAV), model, response_format
                                          (json | text), stream (true: SSE of
                                          transcript.text.delta events, then
                                          transcript.text.done), max_tokens (vibekit's own)
    WS   /v1/audio/transcriptions/stream  live audio, see `stream_route`

Built on the public API only (vibekit.SpeechEngine, AsyncSpeechEngine, read_wav).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from vibekit import AsyncSpeechEngine, InvalidRequestError, SpeechEngine, read_wav
from vibekit.serve import limits
from vibekit.serve.errors import APIError, install_error_handlers
from vibekit.serve.responses import JSONResponse

_ENCODINGS = {"pcm_f32le": "<f4", "pcm_s16le": "<i2"}


def _usage(seconds: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(seconds, 3)}


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def create_speech_app(engine: SpeechEngine | AsyncSpeechEngine,
                      served_model_names: str | Sequence[str], *,
                      max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """Serve a speech engine. Example::

        app = create_speech_app(SpeechEngine.from_pretrained(path), "asr")
        uvicorn.run(app, port=8000)
    """
    if isinstance(engine, SpeechEngine):
        engine = AsyncSpeechEngine(engine)
    names = [served_model_names] if isinstance(served_model_names, str) else list(
        served_model_names)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.shutdown)

    app = FastAPI(title="vibekit speech", lifespan=lifespan)
    app.state.engine = engine
    reply = install_error_handlers(app)

    def check_model(model: str | None) -> None:
        if model is not None and model not in names:
            raise APIError(f"The model `{model}` does not exist.", status_code=404,
                           param="model", code="model_not_found")

    @app.get("/health")
    async def health() -> Response:
        if not engine.is_running:
            raise APIError("the engine is not running", status_code=503, type="server_error")
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def list_models() -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": n, "object": "model", "owned_by": "vibekit"} for n in names]})

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        try:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_body_bytes:
                raise APIError(f"Request body of {length} bytes exceeds the limit of "
                               f"{max_body_bytes} bytes.", status_code=413,
                               code="request_too_large")
            media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if media != "multipart/form-data":
                raise APIError(f"Unsupported Content-Type {media!r}: send multipart/form-data "
                               "with the audio in a `file` field.", status_code=415,
                               code="unsupported_media_type")
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise APIError("Missing required parameter: 'file' (an audio file upload).",
                               param="file")
            check_model(form.get("model"))
            fmt = form.get("response_format") or "json"
            if fmt not in ("json", "text"):
                raise APIError(f"response_format {fmt!r} is not supported; supported: json, "
                               "text.", param="response_format")
            stream = str(form.get("stream") or "false").lower()
            if stream not in ("true", "false"):
                raise APIError(f"stream must be true or false, got {stream!r}.", param="stream")
            max_tokens = form.get("max_tokens")
            try:
                max_tokens = None if max_tokens is None else int(max_tokens)
            except ValueError:
                raise APIError(f"max_tokens must be an integer, got {max_tokens!r}.",
                               param="max_tokens") from None
            data = await upload.read()
            if not data:
                raise APIError("The uploaded file is empty.", param="file")
            samples, rate = await asyncio.to_thread(read_wav, data)
            handle = await engine.open(samples, sample_rate=rate, max_tokens=max_tokens)
        except Exception as exc:
            return reply(exc)
        if stream == "true":
            return _TranscriptEvents(handle)
        try:
            final = None
            async for out in handle:
                final = out
        finally:
            handle.cancel()
        if final.error is not None:
            return reply(APIError(final.error, status_code=500, type="server_error",
                                  code=final.finish_reason))
        if fmt == "text":
            return PlainTextResponse(final.text)
        return JSONResponse({"text": final.text, "usage": _usage(final.audio_seconds)})

    @app.websocket("/v1/audio/transcriptions/stream")
    async def stream_route(ws: WebSocket) -> None:
        """Live audio. The client sends one JSON text message first,
        {"type": "start", "sample_rate": 16000, "encoding": "pcm_f32le" | "pcm_s16le",
        "max_tokens": N (optional), "model": name (optional)}, then binary messages of raw
        mono PCM in that encoding, then {"type": "end"}. The server sends
        {"type": "transcript.partial", "revision", "text", "delta", "revised",
        "chunk_latencies"} as hypotheses grow, then {"type": "transcript.text.done", "text",
        "usage"} and closes; a bad message gets {"type": "error", "error": {...}} and a close
        (code 1008); other connections are unaffected."""
        await ws.accept()
        handle = None
        try:
            start = json.loads(await ws.receive_text())
            if not isinstance(start, dict) or start.get("type") != "start":
                raise APIError('the first message must be {"type": "start", ...}')
            check_model(start.get("model"))
            encoding = start.get("encoding", "pcm_f32le")
            if encoding not in _ENCODINGS:
                raise APIError(f"encoding {encoding!r} is not supported; supported: "
                               f"{sorted(_ENCODINGS)}", param="encoding")
            handle = await engine.open(stream=True, sample_rate=start.get("sample_rate"),
                                       max_tokens=start.get("max_tokens"))
            sender = asyncio.create_task(_send_outputs(ws, handle))
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(msg.get("code", 1000))
                if msg.get("bytes") is not None:
                    raw = msg["bytes"]
                    width = np.dtype(_ENCODINGS[encoding]).itemsize
                    if len(raw) % width:
                        raise APIError(f"a binary message of {len(raw)} bytes is not whole "
                                       f"{encoding} samples ({width} bytes each)")
                    await handle.append(np.frombuffer(raw, dtype=_ENCODINGS[encoding]),
                                        start.get("sample_rate"))
                    continue
                text = json.loads(msg.get("text") or "null")
                if isinstance(text, dict) and text.get("type") == "end":
                    await handle.end()
                    break
                raise APIError('text messages after start must be {"type": "end"}; audio goes '
                               "in binary messages")
            await sender
            await ws.close()
        except WebSocketDisconnect:
            pass
        except Exception as exc:
            err = exc if isinstance(exc, APIError) else APIError(str(exc)) if isinstance(
                exc, (InvalidRequestError, ValueError)) else APIError(
                f"Internal server error: {exc!r}", status_code=500, type="server_error")
            try:
                await ws.send_json({"type": "error", **err.body()})
                await ws.close(code=1008 if err.status_code < 500 else 1011)
            except Exception:  # noqa: BLE001 (the client is gone)
                pass
        finally:
            if handle is not None:
                handle.cancel()

    return app


async def _send_outputs(ws: WebSocket, handle) -> None:
    async for out in handle:
        if out.finished:
            if out.error is not None:
                await ws.send_json({"type": "error", "error": {
                    "message": out.error, "type": "server_error", "code": out.finish_reason}})
            else:
                await ws.send_json({"type": "transcript.text.done", "text": out.text,
                                    "usage": _usage(out.audio_seconds)})
            return
        await ws.send_json({"type": "transcript.partial", "revision": out.revision,
                            "text": out.text, "delta": out.delta_text, "revised": out.revised,
                            "chunk_latencies": out.chunk_latencies})


class _TranscriptEvents(StreamingResponse):
    """SSE of transcript.text.delta events and a closing transcript.text.done (OpenAI's
    shapes); the request is aborted however the response ends."""

    def __init__(self, handle) -> None:
        self.handle = handle
        super().__init__(self._events(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _events(self):
        async for out in self.handle:
            if out.finished:
                if out.error is not None:
                    yield _sse({"type": "error", "error": {
                        "message": out.error, "type": "server_error",
                        "code": out.finish_reason}})
                else:
                    if out.delta_text and not out.revised:
                        yield _sse({"type": "transcript.text.delta", "delta": out.delta_text})
                    yield _sse({"type": "transcript.text.done", "text": out.text,
                                "usage": _usage(out.audio_seconds)})
                return
            if out.delta_text:
                yield _sse({"type": "transcript.text.delta", "delta": out.delta_text})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.cancel()


def is_speech_model(source: str) -> bool:
    """Whether `source` (an HF folder or "zoo:<name>") holds a speech model SpeechEngine
    serves (its config.json model_type is moonshine_streaming)."""
    from pathlib import Path

    if source.startswith("zoo:"):
        from vibekit import zoo

        try:
            source = str(zoo.path(source[len("zoo:"):]))
        except (KeyError, ValueError, FileNotFoundError):
            return False
    config = Path(source) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "moonshine_streaming"
    except (OSError, ValueError):
        return False


def run_speech_server(model: str, host: str = "127.0.0.1", port: int = 8000,
                      served_model_name: str | None = None, dtype: str = "float32",
                      device: str = "cpu", log_level: str = "info",
                      max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES,
                      **engine_options: Any) -> None:
    """Serve a speech model with uvicorn until SIGINT/SIGTERM (engine_options go to
    SpeechEngine.from_pretrained: max_num_seqs, max_tokens, max_audio_seconds, page_size,
    num_pages, num_cross_pages, idle_timeout_s, num_threads)."""
    import uvicorn

    engine = SpeechEngine.from_pretrained(model, dtype=dtype, device=device, **engine_options)
    app = create_speech_app(engine, served_model_name or model, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
