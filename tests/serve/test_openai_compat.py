"""The server, through the official openai client, gives what Engine.generate gives."""

from __future__ import annotations

import inspect
import json

import pytest

from vibekit import Engine, InvalidRequestError

from .conftest import MAX_MODEL_LEN, MODEL, greedy

PROMPT = "The quick brown fox jumps over the lazy dog. "
IDS = {"ignore_eos": True, "return_token_ids": True}


def chat_prompt(reference: Engine, messages: list[dict[str, str]]) -> str:
    return reference.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                   tokenize=False)


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["max_model_len"] == MAX_MODEL_LEN
    assert client.models.retrieve(MODEL).id == MODEL


def test_completion_equals_engine_generate(client, reference):
    ref = reference.generate([PROMPT], greedy(12, ignore_eos=True))[0]
    res = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                    extra_body=IDS)
    choice = res.choices[0]
    assert choice.text == ref.text
    assert choice.model_extra["token_ids"] == ref.token_ids
    assert choice.finish_reason == "length"
    assert res.object == "text_completion" and res.model == MODEL
    assert res.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert res.usage.completion_tokens == 12
    assert res.usage.total_tokens == len(ref.prompt_token_ids) + 12


def test_penalties_and_logit_bias_reach_the_engine(client, reference):
    params = greedy(12, ignore_eos=True, frequency_penalty=1.0, presence_penalty=0.5,
                    repetition_penalty=1.2, logit_bias={65: 4.0})
    ref = reference.generate([PROMPT], params)[0]
    plain = reference.generate([PROMPT], greedy(12, ignore_eos=True))[0]
    assert ref.token_ids != plain.token_ids
    res = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                    frequency_penalty=1.0, presence_penalty=0.5,
                                    logit_bias={"65": 4.0},
                                    extra_body={**IDS, "repetition_penalty": 1.2})
    assert res.choices[0].model_extra["token_ids"] == ref.token_ids


def test_completion_without_ignore_eos_matches_the_engine_finish(client, reference):
    ref = reference.generate([PROMPT], greedy(40))[0]
    res = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0)
    assert res.choices[0].text == ref.text
    assert res.choices[0].finish_reason == ref.finish_reason
    assert res.usage.completion_tokens == len(ref.token_ids)


def test_streamed_completion_adds_up_to_engine_generate(client, reference):
    ref = reference.generate([PROMPT], greedy(16, ignore_eos=True))[0]
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0,
                                       stream=True, stream_options={"include_usage": True},
                                       extra_body=IDS)
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    ids = [t for c in chunks if c.choices for t in c.choices[0].model_extra["token_ids"]]
    assert text == ref.text and ids == ref.token_ids
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    # Tokens are coalesced per engine step: a fast engine may deliver all 16 in one chunk.
    assert finals[-1] == "length" and all(f is None for f in finals[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_accepts_token_id_prompts_and_batches(client, reference):
    prompts = [[5, 6, 7, 8, 9], [300, 301, 40]]
    refs = reference.generate(prompts, greedy(6, ignore_eos=True))
    res = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0,
                                    extra_body=IDS)
    assert [c.index for c in res.choices] == [0, 1]
    assert [c.model_extra["token_ids"] for c in res.choices] == [r.token_ids for r in refs]
    assert res.usage.prompt_tokens == 8 and res.usage.completion_tokens == 12


def test_chat_equals_engine_generate_on_the_chat_template(client, reference):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a prime number."}]
    ref = reference.generate([chat_prompt(reference, messages)], greedy(10, ignore_eos=True))[0]
    res = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10,
                                         temperature=0, extra_body=IDS)
    msg = res.choices[0].message
    assert msg.role == "assistant" and msg.content == ref.text
    assert res.choices[0].model_extra["token_ids"] == ref.token_ids
    assert res.object == "chat.completion"
    assert res.usage.prompt_tokens == len(ref.prompt_token_ids)


def test_streamed_chat_adds_up_and_reports_usage(client, reference):
    messages = [{"role": "user", "content": "Count to three."}]
    ref = reference.generate([chat_prompt(reference, messages)], greedy(14, ignore_eos=True))[0]
    stream = client.chat.completions.create(model=MODEL, messages=messages,
                                            max_completion_tokens=14, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage.prompt_tokens == len(ref.prompt_token_ids) and usage.completion_tokens == 14
    assert {c.object for c in chunks} == {"chat.completion.chunk"}


def test_n_choices_are_independent_requests(client, reference):
    ref = reference.generate([PROMPT], greedy(8, ignore_eos=True))[0]
    res = client.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=8,
                                    temperature=0, extra_body=IDS)
    assert sorted(c.index for c in res.choices) == [0, 1, 2]
    assert all(c.model_extra["token_ids"] == ref.token_ids for c in res.choices)
    assert res.usage.prompt_tokens == len(ref.prompt_token_ids)  # the prompt counts once
    assert res.usage.completion_tokens == 24


def test_streamed_n_choices_each_add_up(client, reference):
    messages = [{"role": "user", "content": "Hello"}]
    ref = reference.generate([chat_prompt(reference, messages)], greedy(9, ignore_eos=True))[0]
    stream = client.chat.completions.create(model=MODEL, messages=messages, n=2, max_tokens=9,
                                            temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    texts = ["", ""]
    finished = [None, None]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finished[choice.index] = finished[choice.index] or choice.finish_reason
    assert texts == [ref.text, ref.text] and finished == ["length", "length"]


def test_seeded_sampling_reproduces_and_choices_differ(client):
    kw = dict(model=MODEL, prompt=PROMPT, n=3, max_tokens=12, temperature=1.0, seed=1234,
              extra_body=IDS)
    first = client.completions.create(**kw)
    second = client.completions.create(**kw)
    ids = [c.model_extra["token_ids"] for c in first.choices]
    assert ids == [c.model_extra["token_ids"] for c in second.choices]
    assert len({tuple(i) for i in ids}) == 3  # seed + i per choice


@pytest.mark.parametrize("as_list", [False, True])
def test_stop_strings_end_the_text_like_the_engine(client, reference, as_list):
    full = reference.generate([PROMPT], greedy(40, ignore_eos=True))[0].text
    # a printable ASCII character from past the start of the (gibberish) greedy text
    stop = next(c for c in full[3:] if c.isascii() and c.isprintable())
    ref = reference.generate([PROMPT], greedy(40, ignore_eos=True, stop=[stop]))[0]
    assert ref.finish_reason == "stop" and stop not in ref.text
    res = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0,
                                    stop=[stop] if as_list else stop,
                                    extra_body={"ignore_eos": True})
    assert res.choices[0].text == ref.text and res.choices[0].finish_reason == "stop"
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40,
                                       temperature=0, stop=stop, stream=True,
                                       extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in stream) == ref.text


def test_repeated_prompt_reports_cached_tokens(client):
    prompt = "A long shared system prompt that fills several KV pages. " * 2
    kw = dict(model=MODEL, prompt=prompt, max_tokens=2, temperature=0)
    client.completions.create(**kw)
    usage = client.completions.create(**kw).usage
    assert usage.prompt_tokens == len(prompt.encode())  # byte-level tokenizer
    cached = usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < usage.prompt_tokens and cached % 16 == 0  # whole pages


def test_prediction_is_passed_to_the_engine(client, reference):
    # Random weights emit bytes that rarely re-tokenize to the same ids, so predict the longest
    # prefix that round-trips (then a wrong tail) for the message where that prefix is longest.
    tok = reference.tokenizer

    def round_trip(ids: list[int]) -> int:
        return max(k for k in range(len(ids) + 1)
                   if tok(tok.decode(ids[:k]), add_special_tokens=False)["input_ids"] == ids[:k])

    cases = []
    for content in ("Echo this", "Repeat the file.", "Hello"):
        messages = [{"role": "user", "content": content}]
        ref = reference.generate([chat_prompt(reference, messages)],
                                 greedy(24, ignore_eos=True))[0]
        cases.append((round_trip(ref.token_ids), messages, ref))
    num_exact, messages, ref = max(cases, key=lambda c: c[0])
    predicted = tok.decode(ref.token_ids[:num_exact]) + "zzzzzzzz"
    kw = dict(model=MODEL, messages=messages, max_tokens=24, temperature=0,
              extra_body={"ignore_eos": True},
              prediction={"type": "content", "content": [{"type": "text", "text": predicted}]})
    if "prediction" not in inspect.signature(Engine.add_request).parameters:
        import openai

        with pytest.raises(openai.BadRequestError, match="prediction is not supported"):
            client.chat.completions.create(**kw)
        return
    res = client.chat.completions.create(**kw)
    assert res.choices[0].message.content == ref.text  # a prediction never changes the output
    details = res.usage.completion_tokens_details
    assert details.rejected_prediction_tokens > 0  # the wrong tail reached the verifier
    if num_exact:
        assert details.accepted_prediction_tokens >= 1


def test_default_chat_max_tokens_fills_the_context(client, reference):
    messages = [{"role": "user", "content": "x" * 900}]
    prompt_len = len(reference.tokenizer(chat_prompt(reference, messages),
                                         add_special_tokens=False)["input_ids"])
    res = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert res.usage.completion_tokens == MAX_MODEL_LEN - prompt_len
    assert res.choices[0].finish_reason == "length"


def test_json_schema_response_format_through_the_client(client, reference):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                               "n": {"type": "integer"}},
              "required": ["ok", "n"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                  "strict": True}}
    messages = [{"role": "user", "content": "Answer in JSON."}]
    try:
        ref = reference.generate([chat_prompt(reference, messages)],
                                 greedy(64, response_format=fmt))[0]
    except InvalidRequestError:
        pytest.skip("this Engine has no structured output yet (test_errors covers the 400)")
    res = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=64,
                                         temperature=0, response_format=fmt)
    text = res.choices[0].message.content
    assert text == ref.text
    value = json.loads(text)
    assert set(value) == {"ok", "n"} and isinstance(value["ok"], bool)
