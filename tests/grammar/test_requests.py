"""Response formats at the engine's boundary: shapes, bad input rejected before any compute,
grammars that cannot finish, regex and EBNF outputs, and the compiled-grammar cache."""

from __future__ import annotations

import json
import re

import pytest
import xgrammar as xgr

from vibekit import Engine, InvalidRequestError, SamplingParams
from vibekit.grammar import GrammarSpec, parse_response_format


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("dummy:tiny-llama", page_size=8, num_pages=256,
                                  max_model_len=256)


def test_openai_and_vibekit_shapes_parse():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) is None
    spec = parse_response_format({"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema, "strict": True}})
    assert spec == GrammarSpec("json_schema", json.dumps(schema), strict=True)
    assert parse_response_format({"type": "json_object", "whitespace": "free"}) == GrammarSpec(
        "json_object", "", whitespace="free")
    regex = parse_response_format({"type": "regex", "regex": "[0-9]+", "jump_forward": False})
    assert regex == GrammarSpec("regex", "[0-9]+") and not regex.jump_forward


BAD_FORMATS = {
    "unknown type": ({"type": "xml"}, "not supported"),
    "no schema": ({"type": "json_schema", "json_schema": {"name": "x"}}, "JSON Schema object"),
    "unknown key": ({"type": "regex", "regex": "a", "regexp": "b"}, "unknown keys"),
    "bad whitespace": ({"type": "json_object", "whitespace": "tabs"}, "whitespace"),
    "not a schema": ({"type": "json_schema", "json_schema": {
        "schema": {"type": "object", "properties": {"a": {"minLength": "x"}}}}},
        "not a valid JSON Schema: at properties/a/minLength"),
    "unknown schema type": ({"type": "json_schema", "json_schema": {
        "schema": {"type": "object", "properties": {"a": {"type": "foo"}}}}},
        "not a valid JSON Schema"),
    "dangling ref": ({"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/x"}}},
                     "cannot be compiled"),
    "empty item range": ({"type": "json_schema", "json_schema": {
        "schema": {"type": "array", "minItems": 3, "maxItems": 1}}}, "cannot be compiled"),
    "bad regex": ({"type": "regex", "regex": "a(b"}, "response_format.regex cannot be compiled"),
    "bad grammar": ({"type": "grammar", "grammar": "root ::= foo"},
                    "response_format.grammar cannot be compiled.*foo"),
    "strict uniqueItems": ({"type": "json_schema", "json_schema": {"strict": True, "schema": {
        "type": "array", "uniqueItems": True}}}, "cannot enforce"),
}


@pytest.mark.parametrize("case", list(BAD_FORMATS))
def test_bad_formats_are_rejected_at_add_request_before_any_compute(engine, case):
    fmt, message = BAD_FORMATS[case]
    steps = engine.num_steps
    with pytest.raises(InvalidRequestError, match=message):
        engine.add_request("hi", SamplingParams(response_format=fmt))
    assert engine.num_steps == steps and not engine.has_unfinished_requests()


def test_a_grammar_that_cannot_finish_ends_with_length_and_the_engine_stays_healthy(engine):
    endless = SamplingParams(max_tokens=12, temperature=0.0,
                             response_format={"type": "grammar", "grammar": 'root ::= "ab" root'})
    too_long = SamplingParams(max_tokens=5, temperature=0.0,
                              response_format={"type": "regex", "regex": "x{40}"})
    # an object that requires itself: no finite JSON value exists
    self_ref = {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}},
                                "required": ["c"]}}, "$ref": "#/$defs/n"}
    nested = SamplingParams(max_tokens=20, temperature=0.0, response_format={
        "type": "json_schema", "json_schema": {"schema": self_ref}})
    plain = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    outs = engine.generate(["a", "b", "c", "d"], [endless, too_long, nested, plain])
    assert outs[0].finish_reason == "length" and outs[0].text == "ab" * 6
    assert outs[1].finish_reason == "length" and outs[1].text == "x" * 5
    assert outs[2].finish_reason == "length" and outs[2].text.startswith('{"c":{"c":')
    assert outs[3].finish_reason == "length"
    again = engine.generate(["a"], SamplingParams(max_tokens=8, temperature=0.0, response_format={
        "type": "regex", "regex": "(yes|no)"}))[0]
    assert again.finish_reason == "stop" and again.text in ("yes", "no")
    assert not engine.has_unfinished_requests()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_regex_and_ebnf_outputs_match(engine, temperature):
    regex = r"[A-Z]{2}-[0-9]{3}(-[a-z]{1,4})?"
    ebnf = 'root ::= "(" item ("," item){0,3} ")"\nitem ::= [0-9] | "x" [a-c]'
    outs = engine.generate(["x", "y"], [
        SamplingParams(max_tokens=40, temperature=temperature, seed=1,
                       response_format={"type": "regex", "regex": regex}),
        SamplingParams(max_tokens=40, temperature=temperature, seed=2,
                       response_format={"type": "grammar", "grammar": ebnf})])
    assert outs[0].finish_reason == "stop" and re.fullmatch(regex, outs[0].text)
    assert outs[1].finish_reason == "stop"
    assert re.fullmatch(r"\((?:[0-9]|x[a-c])(?:,(?:[0-9]|x[a-c])){0,3}\)", outs[1].text)


def test_json_object_output_is_a_json_object(engine):
    out = engine.generate(["{"], SamplingParams(max_tokens=60, temperature=1.0, seed=0,
                                                response_format={"type": "json_object"}))[0]
    # a random model rarely closes its strings: check the text is a prefix of a JSON object
    prefix = xgr.GrammarMatcher(xgr.GrammarCompiler(engine.grammars.tokenizer.info)
                                .compile_json_schema({"type": "object"}, strict_mode=False))
    assert out.text.startswith("{") and prefix.accept_string(out.text)


def test_the_grammar_ends_generation_even_with_ignore_eos(engine):
    regex = engine.generate(["{"], SamplingParams(
        max_tokens=50, temperature=0.0, ignore_eos=True,
        response_format={"type": "regex", "regex": "ok"}))[0]
    assert regex.finish_reason == "stop" and regex.text == "ok"
    assert regex.token_ids[-1] in engine.eos_token_ids


def test_compiled_grammars_are_cached_by_grammar_and_tokenizer(engine):
    cache = engine.grammars.cache
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "array", "maxItems": 2,
                                                             "items": {"type": "integer"}}}}
    misses, hits = cache.misses, cache.hits
    for _ in range(3):
        engine.add_request("a", SamplingParams(max_tokens=2, response_format=fmt))
    assert (cache.misses - misses, cache.hits - hits) == (1, 2)
    engine.add_request("a", SamplingParams(max_tokens=2, response_format={**fmt,
                                                                          "whitespace": "free"}))
    assert cache.misses - misses == 2
    other = Engine.from_pretrained("dummy:tiny-llama", page_size=8, num_pages=64,
                                   max_model_len=128)
    other.grammars.cache = cache  # a shared cache: same tokenizer, same entry
    other.add_request("a", SamplingParams(max_tokens=2, response_format=fmt))
    assert cache.misses - misses == 2
    while engine.has_unfinished_requests():
        engine.step()
    while other.has_unfinished_requests():
        other.step()


def test_a_model_without_tokenizer_rejects_response_format(engine):
    bare = Engine(engine.model, engine.config, tokenizer=None)
    with pytest.raises(InvalidRequestError, match="tokenizer"):
        bare.add_request([1, 2], SamplingParams(response_format={"type": "json_object"}))
