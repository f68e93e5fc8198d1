"""Tool calling through the official openai client (and instructor when installed): forced
calls are constrained by the tool's schema, so they always parse and validate."""

from __future__ import annotations

import json

import jsonschema
import pytest

from vibekit.serve import tools
from vibekit.serve.protocol import ChatCompletionRequest

from .conftest import MODEL, greedy

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                          "unit": {"type": "string", "enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ALARM = {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0,
                                                   "maximum": 23},
                                          "loud": {"type": "boolean"}},
         "required": ["hour", "loud"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "set_alarm", "parameters": ALARM}}]
USER = [{"role": "user", "content": "What is the weather in Oslo?"}]
SCHEMAS = {"get_weather": WEATHER, "set_alarm": ALARM}


def named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def test_a_named_tool_choice_returns_a_valid_call_equal_to_the_engine(client, reference):
    res = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS,
                                         tool_choice=named("get_weather"), max_tokens=64,
                                         temperature=0)
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    # the same constrained decode run on the Engine directly
    req = ChatCompletionRequest.model_validate({"model": MODEL, "messages": USER,
                                                "tools": TOOLS,
                                                "tool_choice": named("get_weather")})
    prompt = reference.tokenizer.apply_chat_template(
        [tools.tools_system_message(tools.template_tools(req)), *USER],
        add_generation_prompt=True, tokenize=False)
    ids = reference.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ref = reference.generate([ids], greedy(64, response_format=tools.response_format(req)))[0]
    assert call.function.arguments == ref.text


def test_required_calls_one_of_the_tools_with_valid_arguments(client):
    for temperature in (0.0, 1.0):
        res = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS,
                                             tool_choice="required", max_tokens=64,
                                             temperature=temperature, seed=3)
        (call,) = res.choices[0].message.tool_calls
        assert res.choices[0].finish_reason == "tool_calls"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("tool_choice", ["required", named("set_alarm")])
def test_a_streamed_call_adds_up_to_the_unstreamed_one(client, tool_choice):
    kw = dict(model=MODEL, messages=USER, tools=TOOLS, tool_choice=tool_choice,
              max_tokens=64, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    name, arguments, ids, reasons = None, "", set(), []
    for chunk in client.chat.completions.create(**kw, stream=True):
        for choice in chunk.choices:
            reasons.append(choice.finish_reason)
            for call in choice.delta.tool_calls or ():
                assert call.index == 0
                ids.add(call.id) if call.id else None
                name = call.function.name or name
                arguments += call.function.arguments or ""
    assert name == whole.function.name and arguments == whole.function.arguments
    assert len(ids) == 1 and reasons[-1] == "tool_calls"


def test_tool_choice_none_and_auto_answer_in_text_with_this_model(client):
    for choice in ("none", "auto"):
        res = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS,
                                             tool_choice=choice, max_tokens=8, temperature=0)
        message = res.choices[0].message
        if message.tool_calls:  # auto may call; then the call must be well formed
            assert choice == "auto"
            json.loads(message.tool_calls[0].function.arguments)
        else:
            assert isinstance(message.content, str)


def test_auto_recognises_a_whole_call_and_nothing_else():
    req = ChatCompletionRequest.model_validate({"model": MODEL, "messages": USER,
                                                "tools": TOOLS})
    assert req.tool_mode == "auto"
    call = tools.auto_call(req, '<tool_call>{"name": "set_alarm", "arguments": '
                                '{"hour": 7, "loud": true}}</tool_call>')
    assert call["function"] == {"name": "set_alarm", "arguments": '{"hour": 7, "loud": true}'}
    assert tools.auto_call(req, '{"name": "get_weather", "arguments": {}}') is not None
    assert tools.auto_call(req, '{"name": "launch", "arguments": {}}') is None  # unknown tool
    assert tools.auto_call(req, "It is sunny.") is None
    assert tools.may_be_call("  {") and tools.may_be_call("<tool") and tools.may_be_call(" ")
    assert not tools.may_be_call("Sure") and not tools.may_be_call("<b>")


def test_tool_results_go_back_through_the_chat_template(client, reference):
    messages = [*USER,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather",
                                  "arguments": '{"city": "Oslo", "unit": "c"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "-3 and snowing"}]
    res = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                         max_tokens=4, temperature=0,
                                         extra_body={"return_token_ids": True})
    text = reference.tokenizer.decode(res.choices[0].model_extra["prompt_token_ids"])
    assert "-3 and snowing" in text and '"city": "Oslo"' in text


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tools": TOOLS, "tool_choice": named("nope")}, "tool_choice"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools"),
    ({"tools": TOOLS, "tool_choice": "required",
      "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),  # no tool_call_id
])
def test_bad_tool_requests_are_400(http, body, param):
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_instructor_tools_mode_gets_a_validated_object(client):
    instructor = pytest.importorskip("instructor")
    from typing import Literal

    from pydantic import BaseModel, ConfigDict

    class Weather(BaseModel):
        # NOTE: closed (additionalProperties false): the open schema lets a random-weight model
        # add properties until max_tokens, which the llguidance grammar rightly allows.
        model_config = ConfigDict(extra="forbid")
        city: Literal["Paris", "Oslo", "Lima"]
        freezing: bool

    patched = instructor.from_openai(client, mode=instructor.Mode.TOOLS)
    result = patched.chat.completions.create(model=MODEL, messages=USER, response_model=Weather,
                                             max_tokens=64, temperature=0, max_retries=0)
    assert isinstance(result, Weather)
