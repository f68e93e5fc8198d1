"""Bad requests get OpenAI-shaped 4xx errors, never a 500, and the server keeps serving."""

from __future__ import annotations

import openai
import pytest

from vibekit import InvalidRequestError

from .conftest import MAX_MODEL_LEN, MODEL, greedy

USER = [{"role": "user", "content": "hi"}]


def assert_openai_error(exc: openai.APIStatusError, status: int, param: str | None = None,
                        code: str | None = None) -> None:
    assert exc.status_code == status
    error = exc.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.fixture(autouse=True)
def still_healthy(http):
    yield
    assert http.get("/health").status_code == 200
    assert http.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("kwargs, param", [
    (dict(max_tokens="5"), "max_tokens"),
    (dict(temperature="hot"), "temperature"),
    (dict(temperature=3.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(n=0), "n"),
    (dict(stop=[1, 2]), None),
    (dict(seed=1.5), "seed"),
    (dict(stream="yes"), "stream"),
    (dict(stream_options={"include_usage": True}), "stream_options"),
    (dict(presence_penalty=3.0), "presence_penalty"),
    (dict(frequency_penalty=-2.5), "frequency_penalty"),
    (dict(logit_bias={"x": 1}), "logit_bias"),
    (dict(logit_bias={"5": 300}), "logit_bias"),
    (dict(extra_body={"repetition_penalty": 0}), "repetition_penalty"),
    (dict(extra_body={"top_k": "ten"}), "top_k"),
    (dict(extra_body={"ignore_eos": 1}), "ignore_eos"),
])
def test_wrong_types_and_values_are_400(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=USER, **kwargs)
    assert_openai_error(e.value, 400, param)


@pytest.mark.parametrize("messages", [
    "hi", [], [{"role": "wizard", "content": "x"}], [{"content": "no role"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
])
def test_malformed_messages_are_400(client, messages):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert_openai_error(e.value, 400)


@pytest.mark.parametrize("prompt", [[], [[1, 2], "mixed"], [5, 99999], [-1]])
def test_bad_completion_prompts_are_400(client, prompt):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert_openai_error(e.value, 400)


def test_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-9", prompt="x", max_tokens=2)
    assert_openai_error(e.value, 404, "model", "model_not_found")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_max_tokens_beyond_the_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="abcd", max_tokens=MAX_MODEL_LEN)
    assert_openai_error(e.value, 400, "max_tokens", "context_length_exceeded")
    assert f"maximum context length is {MAX_MODEL_LEN}" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=USER,
                                       max_completion_tokens=MAX_MODEL_LEN, stream=True)
    assert_openai_error(e.value, 400, "max_completion_tokens", "context_length_exceeded")


def test_prompt_that_fills_the_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "y" * MAX_MODEL_LEN}])
    assert_openai_error(e.value, 400, code="context_length_exceeded")


def test_response_format_reaches_the_engine(client, reference):
    fmt = {"type": "json_object"}
    try:
        reference.add_request("x", greedy(2, response_format=fmt))
    except InvalidRequestError:  # an engine without structured output: a 400, not a 500
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=USER, response_format=fmt)
        assert_openai_error(e.value, 400)
        assert "response_format" in e.value.message
        return
    while reference.has_unfinished_requests():
        reference.step()
    prompt = reference.tokenizer.apply_chat_template(USER, add_generation_prompt=True,
                                                     tokenize=False)
    ref = reference.generate([prompt], greedy(24, response_format=fmt))[0]
    res = client.chat.completions.create(model=MODEL, messages=USER, response_format=fmt,
                                         max_tokens=24, temperature=0)
    assert res.choices[0].message.content == ref.text
    assert res.choices[0].finish_reason == ref.finish_reason


def test_unknown_response_format_type_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=USER,
                                       response_format={"type": "yaml"})
    assert_openai_error(e.value, 400, "response_format")


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_json_bodies_are_400(http, body):
    for path in ("/v1/completions", "/v1/chat/completions"):
        r = http.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_missing_required_fields_are_400(http):
    r = http.post("/v1/completions", json={"model": MODEL})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = http.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_unknown_routes_and_methods_get_openai_shaped_errors(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = http.get("/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_errors_are_counted_in_metrics(http):
    before = http.get("/metrics").text
    http.post("/v1/completions", content=b"{", headers={"content-type": "application/json"})
    after = http.get("/metrics").text

    def count(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('vibekit_http_errors_total{status="400"}'):
                return float(line.split()[-1])
        return 0.0

    assert count(after) == count(before) + 1
