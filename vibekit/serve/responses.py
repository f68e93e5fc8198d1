"""OpenAI response and stream-chunk shapes, built from RequestOutputs.

Choice `i` of prompt `p` has index `p * n + i`. Usage counts each prompt once (its first choice's
prompt and cached tokens) and sums completion and prediction tokens over all choices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

from vibekit import RequestOutput
from vibekit.serve import tools
from vibekit.serve.protocol import ChatCompletionRequest


def usage(outputs: Sequence[RequestOutput], n: int) -> dict[str, Any]:
    firsts = outputs[::n]
    prompt = sum(o.usage.prompt_tokens for o in firsts)
    completion = sum(o.usage.completion_tokens for o in outputs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": sum(o.usage.cached_prompt_tokens for o in firsts),
        },
        "completion_tokens_details": {
            "accepted_prediction_tokens": sum(o.usage.accepted_prediction_tokens
                                              for o in outputs),
            "rejected_prediction_tokens": sum(o.usage.rejected_prediction_tokens
                                              for o in outputs),
            "reasoning_tokens": 0,
        },
    }


def completion_choice(index: int, out: RequestOutput, token_ids: bool) -> dict[str, Any]:
    choice = {"index": index, "text": out.text, "logprobs": None,
              "finish_reason": out.finish_reason}
    if token_ids:
        choice["token_ids"] = out.token_ids
        choice["prompt_token_ids"] = out.prompt_token_ids
    return choice


def chat_choice(index: int, out: RequestOutput, token_ids: bool,
                tool_request: ChatCompletionRequest | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": out.text, "refusal": None}
    finish_reason = out.finish_reason
    call = tools.call_of(tool_request, out.text) if tool_request is not None else None
    if call is not None:
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
    choice = {"index": index, "message": message, "logprobs": None,
              "finish_reason": finish_reason}
    if token_ids:
        choice["token_ids"] = out.token_ids
        choice["prompt_token_ids"] = out.prompt_token_ids
    return choice


def completion_delta(index: int, out: RequestOutput, token_ids: bool) -> dict[str, Any]:
    choice = {"index": index, "text": out.delta_text, "logprobs": None,
              "finish_reason": out.finish_reason}
    if token_ids:
        choice["token_ids"] = out.delta_token_ids
    return choice


def chat_delta(index: int, out: RequestOutput | None, token_ids: bool) -> dict[str, Any]:
    """A chat chunk choice; out=None gives the opening `{"role": "assistant"}` delta."""
    if out is None:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}
    delta = {"content": out.delta_text} if out.delta_text or not out.finished else {}
    choice = {"index": index, "delta": delta, "logprobs": None,
              "finish_reason": out.finish_reason}
    if token_ids:
        choice["token_ids"] = out.delta_token_ids
    return choice


class CallStream:
    """The chat stream of one choice of a request with tools: a named call streams its
    arguments as they come; a "required" call is sent whole once it is complete; under "auto",
    text that may be a call is held back until it is known to be one (sent as a call) or not
    (sent as content)."""

    def __init__(self, req: ChatCompletionRequest) -> None:
        self.req = req
        self.mode = req.tool_mode
        self.started = False
        self.is_content = self.mode == "none"
        self.held_text = ""
        self.held_ids: list[int] = []

    def delta(self, index: int, out: RequestOutput, token_ids: bool) -> dict[str, Any] | None:
        """The chunk choice for this output, or None to send nothing yet."""
        if self.is_content:
            if not out.finished and not out.delta_text and not token_ids:
                return None
            return chat_delta(index, out, token_ids)
        self.held_text += out.delta_text
        self.held_ids += out.delta_token_ids
        if self.mode == "named":
            call: dict[str, Any] = {"index": 0, "function": {"arguments": self.held_text}}
            if not self.started:
                name = self.req.tool_choice.function.name  # type: ignore[union-attr]
                call = {"index": 0, "id": tools.new_call_id(), "type": "function",
                        "function": {"name": name, "arguments": self.held_text}}
                self.started = True
            elif not self.held_text and not out.finished:
                return None
            return self._choice(index, {"tool_calls": [call]} if self.held_text or len(call) > 2
                                else {}, out, token_ids, tool=True)
        if not out.finished:
            if self.mode == "auto" and not tools.may_be_call(self.held_text):
                self.is_content = True
                return self._choice(index, {"content": self.held_text}, out, token_ids)
            return None
        whole = tools.call_of(self.req, self.held_text)
        if whole is not None:
            return self._choice(index, {"tool_calls": [{"index": 0, **whole}]}, out, token_ids,
                                tool=True)
        return self._choice(index, {"content": self.held_text} if self.held_text else {}, out,
                            token_ids)

    def _choice(self, index: int, delta: dict[str, Any], out: RequestOutput, token_ids: bool,
                tool: bool = False) -> dict[str, Any]:
        reason = out.finish_reason
        if tool and reason == "stop":
            reason = "tool_calls"
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        if token_ids:
            choice["token_ids"] = self.held_ids
        self.held_text, self.held_ids = "", []
        return choice


def body(kind: str, response_id: str, created: int, model: str, choices: list[dict[str, Any]],
         usage_: dict[str, Any] | None, chunk: bool = False) -> dict[str, Any]:
    """The envelope: kind "completion" or "chat"; chunk=True for stream events."""
    if kind == "chat":
        obj = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        obj = "text_completion"
    return {"id": response_id, "object": obj, "created": created, "model": model,
            "choices": choices, "usage": usage_}


try:  # orjson (the serve extra) encodes response bodies several times faster than json
    import orjson

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes (orjson when installed, else json)."""
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover - depends on the environment
    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes (orjson when installed, else json)."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class JSONResponse(_StarletteJSONResponse):
    """A JSON response encoded with `dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line (UTF-8)."""
    text = data.encode() if isinstance(data, str) else dumps(data)
    return b"data: " + text + b"\n\n"


class LastEvents(bytes):
    """The last events of an SSE stream, sent with the end of the response in one write."""
