"""From a parsed OpenAI request to engine requests, and back to a response or an SSE stream.

A `Job` is one HTTP generation request: len(prompts) * n engine requests, accepted (or all
rejected) before the HTTP status is chosen, so validation errors are 400s and never a broken
stream. Every engine request is aborted when its consumer goes away.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from vibekit import AsyncEngine, RequestOutput, RequestStream, SamplingParams
from vibekit.serve import responses
from vibekit.serve.errors import from_engine_error
from vibekit.serve.protocol import ChatCompletionRequest, SamplingRequest


@dataclass
class Job:
    kind: str  # "completion" or "chat"
    model: str
    prompts: list[list[int]]
    params: list[SamplingParams]  # one per prompt * n, in choice order
    n: int
    stream: bool = False
    prediction: list[int] | None = None  # token ids of the predicted output
    include_usage: bool = False
    return_token_ids: bool = False
    timeout: float | None = None  # seconds; past it every choice fails (504)
    tool_request: ChatCompletionRequest | None = None  # a chat request with tools
    response_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.response_id:
            prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
            self.response_id = f"{prefix}-{uuid.uuid4().hex}"


def sampling_params(req: SamplingRequest, max_tokens: int, choice: int,
                    response_format: dict[str, Any] | None) -> SamplingParams:
    """SamplingParams of one choice; choice i of a seeded request uses seed + i so the n
    samples differ but reproduce. Raises InvalidRequestError for values the engine refuses."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        seed=None if req.seed is None else req.seed + choice,
        stop=req.stop,
        stop_token_ids=req.stop_token_ids,
        ignore_eos=req.ignore_eos,
        response_format=response_format,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        logit_bias={int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None,
    )


async def start(engine: AsyncEngine, job: Job) -> list[RequestStream]:
    """Add every engine request of the job; if any is rejected, abort the others and raise."""
    if len(job.params) == 1:  # no gather: its task would wait for the next loop iteration
        return [await engine.add_request(job.prompts[0], job.params[0], f"{job.response_id}-0",
                                         job.prediction, coalesce=True, timeout=job.timeout)]
    adds = [engine.add_request(job.prompts[i // job.n], params, f"{job.response_id}-{i}",
                               job.prediction, coalesce=True, timeout=job.timeout)
            for i, params in enumerate(job.params)]
    results = await asyncio.gather(*adds, return_exceptions=True)
    streams = [r for r in results if isinstance(r, RequestStream)]
    for r in results:
        if isinstance(r, BaseException):
            for stream in streams:
                stream.cancel()
            raise r
    return streams


async def complete(job: Job, streams: list[RequestStream]) -> dict[str, Any]:
    """Wait for every choice and build the non-streaming response body."""
    try:
        finals = await asyncio.gather(*(_last(s) for s in streams))
    finally:
        for stream in streams:
            stream.cancel()
    if job.kind == "chat":
        choices = [responses.chat_choice(i, out, job.return_token_ids, job.tool_request)
                   for i, out in enumerate(finals)]
    else:
        choices = [responses.completion_choice(i, out, job.return_token_ids)
                   for i, out in enumerate(finals)]
    return responses.body(job.kind, job.response_id, job.created, job.model, choices,
                          responses.usage(finals, job.n))


async def stream_events(job: Job, streams: list[RequestStream]) -> AsyncIterator[bytes]:
    """SSE events: chunks per output, a usage chunk if asked, then `data: [DONE]`. What follows
    the last output (that output's chunk, the usage chunk, [DONE]) comes as one LastEvents, so
    the response can end in one write."""
    chat = job.kind == "chat"
    make = responses.chat_delta if chat else responses.completion_delta

    def event(choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None) -> bytes:
        return responses.sse(responses.body(job.kind, job.response_id, job.created, job.model,
                                            choices, usage_, chunk=True))

    finals: list[RequestOutput | None] = [None] * len(streams)
    num_finished = 0
    tail = b""  # held back once every stream has finished
    calls = ([responses.CallStream(job.tool_request) for _ in streams]
             if job.tool_request is not None else None)
    try:
        if chat:
            yield event([responses.chat_delta(i, None, False) for i in range(len(streams))])
        try:
            async for i, out in _merge(streams):
                if out.finished:
                    finals[i] = out
                    num_finished += 1
                if calls is not None:
                    choice = calls[i].delta(i, out, job.return_token_ids)
                    chunk = None if choice is None else event([choice])
                elif not out.finished and not out.delta_text and not job.return_token_ids:
                    continue  # text held back (partial character or possible stop string)
                else:
                    chunk = event([make(i, out, job.return_token_ids)])
                if chunk is None:
                    continue
                if num_finished == len(streams):
                    tail += chunk
                else:
                    yield chunk
        except Exception as exc:  # the engine died mid-stream: tell the client in-band
            tail += responses.sse(from_engine_error(exc).body())
        else:
            if job.include_usage:
                done = [f for f in finals if f is not None]
                tail += event([], responses.usage(done, job.n))
        yield responses.LastEvents(tail + responses.sse("[DONE]"))
    finally:
        for stream in streams:
            stream.cancel()


async def _last(stream: RequestStream) -> RequestOutput:
    last = None
    async for out in stream:
        last = out
    assert last is not None and last.finished
    return last


async def _merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for out in streams[0]:
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | Exception]] = asyncio.Queue()

    async def pump(i: int, stream: RequestStream) -> None:
        try:
            async for out in stream:
                queue.put_nowait((i, out))
        except Exception as exc:
            queue.put_nowait((i, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(streams)
    try:
        while remaining:
            i, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item.finished:
                remaining -= 1
            yield i, item
    finally:
        for task in tasks:
            task.cancel()
