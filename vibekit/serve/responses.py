"""OpenAI response and stream-chunk shapes, built from RequestOutputs.

Choice `i` of prompt `p` has index `p * n + i`. Usage counts each prompt once (its first choice's
prompt and cached tokens) and sums completion and prediction tokens over all choices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vibekit import RequestOutput


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


def chat_choice(index: int, out: RequestOutput, token_ids: bool) -> dict[str, Any]:
    choice = {"index": index,
              "message": {"role": "assistant", "content": out.text, "refusal": None},
              "logprobs": None, "finish_reason": out.finish_reason}
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


def body(kind: str, response_id: str, created: int, model: str, choices: list[dict[str, Any]],
         usage_: dict[str, Any] | None, chunk: bool = False) -> dict[str, Any]:
    """The envelope: kind "completion" or "chat"; chunk=True for stream events."""
    if kind == "chat":
        obj = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        obj = "text_completion"
    return {"id": response_id, "object": obj, "created": created, "model": model,
            "choices": choices, "usage": usage_}


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n"
