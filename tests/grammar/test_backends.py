"""Two grammar backends (llguidance, xgrammar) behind one RequestGrammar protocol: auto's choice,
refusals that name the keyword, sound schema rewrites, outputs validated by jsonschema, and one
stop set for the engine and the grammar."""

from __future__ import annotations

import copy
import json
import warnings

import jsonschema
import pytest
import torch

from vibekit import Engine, InvalidRequestError, SamplingParams
from vibekit.grammar import GrammarBackend, RequestGrammar, parse_response_format
from vibekit.grammar.llg import LLGuidanceGrammar
from vibekit.grammar.rewrite import rewrite_schema
from vibekit.grammar.schema import UnsupportedSchemaError

from .checkpoint import make_bpe_checkpoint, make_bpe_tokenizer
from .schemas import SCHEMAS

pytest.importorskip("llguidance")


def fmt(schema, **json_schema_options):
    return {"type": "json_schema",
            "json_schema": {"name": "out", "schema": schema, **json_schema_options}}


@pytest.fixture(scope="module")
def grammars(bpe_ckpt):
    _, _, tokenizer = bpe_ckpt
    return GrammarBackend(tokenizer, 640, [tokenizer.eos_token_id])


def accepts(grammar, token_ids, stop_id) -> bool:
    """Every token, then the stop token, allowed by the grammar's masks (as the engine sees)."""
    bitmask = torch.zeros(1, 20, dtype=torch.int32)
    for token in list(token_ids) + [stop_id]:
        grammar.fill_bitmask(bitmask, 0, ())
        if not (int(bitmask[0, token // 32]) >> (token % 32)) & 1:
            return False
        grammar.advance(token)
    return True


def test_auto_refuses_a_keyword_no_backend_enforces_and_names_it(grammars):
    schema = {"type": "object", "properties": {"id": {"not": {"type": "string"}}}}
    with pytest.raises(InvalidRequestError, match=r"\bnot\b") as e:
        grammars.request_grammar(fmt(schema))
    assert '"strict": false' in str(e.value)
    # opting into leniency gives a (looser) grammar
    assert grammars.request_grammar(fmt(schema, strict=False)) is not None


def test_auto_picks_llguidance_for_schemas_and_xgrammar_for_ebnf(grammars):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert isinstance(grammars.request_grammar(fmt(schema)), LLGuidanceGrammar)
    ebnf = {"type": "grammar", "grammar": 'root ::= "yes" | "no"'}
    assert isinstance(grammars.request_grammar(ebnf), RequestGrammar)


def test_a_request_chooses_its_backend(grammars):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = fmt(schema)
    assert isinstance(grammars.request_grammar({**rf, "grammar_backend": "xgrammar"}),
                      RequestGrammar)
    assert isinstance(grammars.request_grammar({**rf, "grammar_backend": "llguidance"}),
                      LLGuidanceGrammar)
    with pytest.raises(InvalidRequestError, match="grammar_backend"):
        parse_response_format({**rf, "grammar_backend": "outlines"})
    with pytest.raises(InvalidRequestError, match="'llguidance' does not take xgrammar EBNF"):
        grammars.request_grammar({"type": "grammar", "grammar": 'root ::= "a"',
                                  "grammar_backend": "llguidance"})


def test_disjoint_one_of_is_enforced_and_overlapping_one_of_is_refused(grammars, bpe_ckpt):
    _, _, tok = bpe_ckpt
    disjoint = {"oneOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}]}
    assert "anyOf" in rewrite_schema(disjoint) and "oneOf" not in rewrite_schema(disjoint)
    for backend in ("llguidance", "xgrammar"):
        rf = {**fmt(disjoint), "grammar_backend": backend}
        for value, valid in (("ab", True), (12, True), (True, False), ("abcdef", False)):
            ids = tok.encode(json.dumps(value), add_special_tokens=False)
            assert accepts(grammars.request_grammar(rf), ids, tok.eos_token_id) == valid, value
    overlapping = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    assert rewrite_schema(overlapping) == overlapping  # 3 matches both: not an anyOf
    with pytest.raises(InvalidRequestError, match="oneOf"):
        grammars.request_grammar(fmt(overlapping))


def test_rewrites_keep_the_valid_instances():
    tagged = {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
         "required": ["kind"]},
        {"$ref": "#/$defs/b"}],
        "$defs": {"b": {"type": "object", "properties": {"kind": {"enum": ["b", "c"]}},
                        "required": ["kind"]}}}
    assert "anyOf" in rewrite_schema(tagged)
    untagged = copy.deepcopy(tagged)
    untagged["$defs"]["b"]["properties"]["kind"]["enum"].append("a")
    assert "oneOf" in rewrite_schema(untagged)
    # 1 and 1.0 are the same JSON value: not disjoint tags
    numbers = {"oneOf": [{"type": "object", "properties": {"v": {"const": 1}}, "required": ["v"]},
                         {"type": "object", "properties": {"v": {"const": 1.0}},
                          "required": ["v"]}]}
    assert "oneOf" in rewrite_schema(numbers)
    formats = {"type": "object", "properties": {"t": {"type": "string", "format": "topic"},
                                                "d": {"type": "string", "format": "date"}}}
    out = rewrite_schema(formats)
    assert "format" not in out["properties"]["t"] and out["properties"]["d"]["format"] == "date"
    # the rewrites never change what validates
    for schema in (tagged, numbers, formats):
        for instance in ({"kind": "a"}, {"kind": "c"}, {"v": 1}, {"t": "x", "d": "2020-01-01"}, 3):
            assert (jsonschema.Draft202012Validator(schema).is_valid(instance)
                    == jsonschema.Draft202012Validator(rewrite_schema(schema)).is_valid(instance))


def closed(schema):
    """The schema with additionalProperties false on every object that does not say otherwise
    (a random model rarely closes an open object)."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object":
                node.setdefault("additionalProperties", False)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


@pytest.fixture(scope="module")
def llg_engine(bpe_ckpt):
    path, _, _ = bpe_ckpt
    return Engine.from_pretrained(path, page_size=8, num_pages=1024, max_model_len=512,
                                  max_num_seqs=64, grammar_backend="llguidance")


def test_llguidance_sampled_outputs_validate_over_the_schema_suite(llg_engine):
    names = []
    for name, schema in SCHEMAS.items():
        try:
            llg_engine.grammars.request_grammar(fmt(closed(schema)))
            names.append(name)
        except UnsupportedSchemaError:  # e.g. propertyNames: refused, never loosened
            pass
    assert len(names) >= len(SCHEMAS) - 2
    params = [SamplingParams(max_tokens=400, temperature=1.0, seed=i,
                             response_format=fmt(closed(SCHEMAS[n])))
              for i, n in enumerate(names)]
    outs = llg_engine.generate([f"Return the {n} as JSON: " for n in names], params)
    for name, out in zip(names, outs):
        assert out.finish_reason == "stop", (name, out.text)
        jsonschema.validate(json.loads(out.text), SCHEMAS[name])


def test_llguidance_jump_forward_and_predictions_do_not_change_greedy_output(llg_engine):
    names = ["person", "order", "payment", "contact", "sentiment"]
    prompts = [f"Return the {n} as JSON: " for n in names]

    def run(jump_forward, predictions=None):
        params = [SamplingParams(max_tokens=300, temperature=0.0, response_format={
            **fmt(closed(SCHEMAS[n])), "jump_forward": jump_forward}) for n in names]
        return llg_engine.generate(prompts, params, predictions=predictions)

    before = llg_engine.num_steps
    off = run(False)
    steps_off, before = llg_engine.num_steps - before, llg_engine.num_steps
    on = run(True)
    assert llg_engine.num_steps - before < steps_off  # forced keys came as drafts
    predicted = run(False, predictions=[o.text[: len(o.text) // 2] + "xx" for o in off])
    for a, b, c in zip(off, on, predicted):
        assert a.token_ids == b.token_ids == c.token_ids


@pytest.mark.parametrize("backend", ["llguidance", "xgrammar"])
def test_an_ordinary_token_as_config_eos_does_not_cut_structured_output(tmp_path, backend):
    # the config names the token every output starts with ('{"') as its EOS
    first = make_bpe_tokenizer().encode('{"name":', add_special_tokens=False)[0]
    _, tokenizer = make_bpe_checkpoint(tmp_path, eos_token=make_bpe_tokenizer()
                                       .convert_ids_to_tokens(first))
    with pytest.warns(UserWarning, match="ordinary vocabulary tokens"):
        engine = Engine.from_pretrained(tmp_path, max_model_len=512, grammar_backend=backend)
    assert engine.eos_token_ids == {tokenizer.eos_token_id}
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                               "tag": {"enum": ["a", "b"]}},
              "required": ["name", "tag"], "additionalProperties": False}
    outs = engine.generate([f"Person {i}:" for i in range(4)], SamplingParams(
        max_tokens=64, temperature=1.0, seed=3, response_format=fmt(schema)))
    for out in outs:
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), schema)
    assert all(out.token_ids[0] == first for out in outs)  # text now, not a stop


def test_a_tokenizer_eos_is_not_warned_about(bpe_ckpt):
    path, _, _ = bpe_ckpt
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Engine.from_pretrained(path, max_model_len=64)
