"""Tool calling on /v1/chat/completions, built on structured output.

tool_choice decides what the model may write:
  "none"       plain text (tools are still shown to the model)
  "auto"       plain text or one call `{"name": ..., "arguments": {...}}` (also inside
               `<tool_call>...</tool_call>`), recognised after generation; no constraint
  "required"   one call, constrained by a JSON schema: anyOf over the tools of
               `{"name": <const>, "arguments": <that tool's parameters>}`
  named        the arguments of that function, constrained by its parameters schema
So a forced call ("required" or named) always parses and validates against its tool's schema
(vibekit.grammar compiles the schema; the engine masks every token).

Tools reach the model through the chat template's `tools` variable when the template uses it;
otherwise a system message lists them and the call format. Each choice makes at most one call
(`parallel_tool_calls` is accepted and ignored).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from vibekit.serve.protocol import ChatCompletionRequest, ChatMessage

_CALL_TAG = re.compile(r"^\s*<tool_call>\s*(.*?)\s*</tool_call>\s*$", re.DOTALL)


def parameters_schema(tool: Any) -> dict[str, Any]:
    """A function's parameters schema; a function without one takes an empty object."""
    return tool.function.parameters or {"type": "object", "properties": {}}


def response_format(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The structured-output constraint of the request's tool mode (None: unconstrained)."""
    mode = req.tool_mode
    if mode == "named":
        name = req.tool_choice.function.name  # type: ignore[union-attr]
        tool = next(t for t in req.tools if t.function.name == name)  # type: ignore[union-attr]
        schema = parameters_schema(tool)
    elif mode == "required":
        schema = {"anyOf": [
            {"type": "object",
             "properties": {"name": {"const": t.function.name},
                            "arguments": parameters_schema(t)},
             "required": ["name", "arguments"], "additionalProperties": False}
            for t in req.tools  # type: ignore[union-attr]
        ]}
    else:
        return None
    return {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema,
                                                   "strict": True}}


def template_tools(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools in the shape HF chat templates take (OpenAI's)."""
    if not req.tools:
        return None
    return [{"type": "function", "function": t.function.model_dump(exclude_none=True)}
            for t in req.tools]


def template_messages(messages: list[ChatMessage], native: bool) -> list[dict[str, Any]]:
    """Messages for the chat template. native: the template knows tool calls and tool
    messages (HF shape, arguments as a dict); else calls are written into the assistant's
    content as the JSON the model is asked to emit, and tool results become user messages."""
    out = []
    for m in messages:
        if m.role == "tool":
            if native:
                out.append({"role": "tool", "content": m.text, "tool_call_id": m.tool_call_id,
                            **({"name": m.name} if m.name else {})})
            else:
                out.append({"role": "user",
                            "content": f"Result of tool call {m.tool_call_id}: {m.text}"})
            continue
        msg: dict[str, Any] = {"role": m.role, "content": m.text}
        if m.tool_calls:
            calls = [{"name": c.function.name, "arguments": _loads_or_text(c.function.arguments)}
                     for c in m.tool_calls]
            if native:
                msg["tool_calls"] = [{"id": c.id, "type": "function", "function": call}
                                     for c, call in zip(m.tool_calls, calls)]
            else:
                msg["content"] = (m.text + "\n" if m.text else "") + "\n".join(
                    json.dumps(call) for call in calls)
        out.append(msg)
    return out


def tools_system_message(tools: list[dict[str, Any]]) -> dict[str, str]:
    """For templates that ignore `tools`: what the model may call and how."""
    listing = "\n".join(json.dumps(t["function"]) for t in tools)
    return {"role": "system", "content":
            "You may call one of these functions:\n" + listing + "\nTo call one, reply with "
            'only a JSON object {"name": <function name>, "arguments": <its arguments>}.'}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def forced_call(req: ChatCompletionRequest, text: str) -> dict[str, Any] | None:
    """The tool call a finished forced generation wrote (None if it was cut off, e.g. by
    max_tokens, and does not parse)."""
    if req.tool_mode == "named":
        name = req.tool_choice.function.name  # type: ignore[union-attr]
        try:
            json.loads(text)
        except ValueError:
            return None
        return _call(name, text)
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return _call(obj["name"], json.dumps(obj["arguments"], ensure_ascii=False))


def call_of(req: ChatCompletionRequest, text: str) -> dict[str, Any] | None:
    """The tool call in a finished generation of this request, if it made one. A named call
    cut off by max_tokens is still that call, with the arguments written so far."""
    mode = req.tool_mode
    if mode == "named":
        return _call(req.tool_choice.function.name, text)  # type: ignore[union-attr]
    if mode == "required":
        return forced_call(req, text)
    if mode == "auto":
        return auto_call(req, text)
    return None


def auto_call(req: ChatCompletionRequest, text: str) -> dict[str, Any] | None:
    """The call a free generation wrote, if its whole text is one (else it is content)."""
    match = _CALL_TAG.match(text)
    body = match.group(1) if match else text.strip()
    if not body.startswith("{"):
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    names = {t.function.name for t in req.tools or ()}
    if (not isinstance(obj, dict) or obj.get("name") not in names
            or not isinstance(obj.get("arguments", {}), dict)):
        return None
    return _call(obj["name"], json.dumps(obj.get("arguments", {}), ensure_ascii=False))


def may_be_call(text: str) -> bool:
    """Whether a free generation that starts with `text` might still turn out to be a call (a
    stream holds such text back until it knows)."""
    head = text.lstrip()
    return (not head or head.startswith(("{", "<tool_call>"))
            or "<tool_call>".startswith(head))


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": new_call_id(), "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _loads_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
