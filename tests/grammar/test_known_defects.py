"""xgrammar defects that let invalid JSON through are detected here and fixed by vibekit.grammar.

Each probe shows the defect in plain xgrammar (so the test notices when an upgrade fixes it and
the workaround can go) and its absence in vibekit's compiled grammar. The random-walk suite
checks every schema of the suite against jsonschema, without any model.
"""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import xgrammar as xgr

from vibekit import InvalidRequestError
from vibekit.grammar import GrammarCache, GrammarSpec, GrammarTokenizer, prepare_json_schema
from vibekit.grammar.analysis import always_finishes
from vibekit.grammar.workarounds import exclude_surrogates
from vibekit.models.tokenizer import byte_level_tokenizer

from .fuzz import closer_ids, random_walk
from .schemas import SCHEMAS

COMPACT = dict(any_whitespace=False, separators=(",", ":"))


@pytest.fixture(scope="module")
def byte_tok():
    return GrammarTokenizer(byte_level_tokenizer(512), 512, [256])


@pytest.fixture(scope="module")
def raw_compiler():
    info = xgr.TokenizerInfo.from_huggingface(byte_level_tokenizer(512), vocab_size=512,
                                              stop_token_ids=[256])
    return xgr.GrammarCompiler(info, max_threads=1)


def ours(tok, schema, strict=False):
    return GrammarCache().get(GrammarSpec("json_schema", json.dumps(schema), strict), tok).grammar


def accepts(compiled, data: bytes) -> bool:
    return xgr.GrammarMatcher(compiled).accept_string(data)


PROBES = {
    # (schema, output the grammar must reject, output it must still accept)
    "control char in maxLength string": (
        {"type": "string", "maxLength": 5}, b'"a\x01b"', b'"ab"'),
    "raw tab in minLength string": (
        {"type": "string", "minLength": 1}, b'"a\tb"', b'"a b"'),
    "surrogate bytes in a string": (
        {"type": "string"}, b'"\xed\xb9\xaa"', '"é€"'.encode()),
    "surrogate bytes in a pattern": (
        {"type": "string", "pattern": "^.{1,3}$"}, b'"\xed\xa0\x80"', b'"abc"'),
    "pattern ignores minLength": (
        {"type": "string", "pattern": "^[a-z]+$", "minLength": 3}, b'"ab"', b'"abc"'),
    "pattern ignores maxLength": (
        {"type": "string", "pattern": "^[0-9]*$", "maxLength": 2}, b'"123"', b'"12"'),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_shows_the_defect_in_xgrammar_and_not_in_vibekit(name, byte_tok, raw_compiler):
    schema, invalid, valid = PROBES[name]
    raw = raw_compiler.compile_json_schema(schema, **COMPACT)
    assert accepts(raw, invalid), f"xgrammar fixed '{name}'? then drop its workaround"
    fixed = ours(byte_tok, schema)
    assert not accepts(fixed, invalid)
    assert accepts(fixed, valid)


def test_escapes_count_as_one_character_in_bounded_strings(byte_tok, raw_compiler):
    schema = {"type": "string", "maxLength": 3}
    raw = raw_compiler.compile_json_schema(schema, **COMPACT)
    assert not accepts(raw, b'"a\\nb"'), "xgrammar now allows escapes in bounded strings"
    fixed = ours(byte_tok, schema)
    assert accepts(fixed, b'"a\\nb"') and accepts(fixed, b'"\\"\\\\x"')
    assert not accepts(fixed, b'"a\\nbc"') and not accepts(fixed, b'"\\q"')


def test_special_tokens_never_stand_for_their_text(byte_tok, raw_compiler):
    im_start = 257  # "<|im_start|>": dropped by decode(skip_special_tokens=True)
    raw = xgr.GrammarMatcher(raw_compiler.compile_json_schema({"type": "string"}, **COMPACT))
    assert raw.accept_string('"') and raw.accept_token(im_start)
    fixed = xgr.GrammarMatcher(ours(byte_tok, {"type": "string"}))
    assert fixed.accept_string('"') and not fixed.accept_token(im_start)


def test_regex_rewrite_excludes_surrogates_and_keeps_the_language():
    assert exclude_surrogates(r"^a.[^x]\.[\]^.]$") == (
        r"^a[^\n\r\u2028\u2029\uD800-\uDFFF][^\uD800-\uDFFFx]\.[\]^.]$")
    assert exclude_surrogates(r"[^]a]\[^") == r"[^\uD800-\uDFFF]a]\[^"


UNSUPPORTED = {
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "multipleOf": {"type": "number", "multipleOf": 0.5},
    "not": {"not": {"type": "string"}},
    "oneOf": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    "allOf": {"allOf": [{"type": "object"}, {"required": ["a"]}]},
    "contains": {"type": "array", "contains": {"const": 1}},
    "dependentRequired": {"type": "object", "dependentRequired": {"a": ["b"]}},
    "if": {"if": {"type": "integer"}, "then": {"minimum": 1}},
    "propertyNames": {"type": "object", "propertyNames": {"maxLength": 3}},
    "pattern with lengths": {"type": "string", "pattern": "^(ab|c)+$", "maxLength": 4},
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_keywords_the_grammar_cannot_enforce_are_rejected_under_strict(name, byte_tok):
    schema = {"type": "object", "properties": {"x": UNSUPPORTED[name]}, "required": ["x"]}
    with pytest.raises(InvalidRequestError, match="cannot enforce") as e:
        ours(byte_tok, schema, strict=True)
    assert "#/properties/x" in str(e.value)
    ours(byte_tok, schema, strict=False)  # best effort without strict


def test_pattern_lengths_are_folded_into_the_quantifier():
    schema = prepare_json_schema({"type": "string", "pattern": "^[a-z]+$", "minLength": 3,
                                  "maxLength": 6}, strict=True)
    assert schema == {"type": "string", "pattern": "^[a-z]{3,6}$"}
    with pytest.raises(InvalidRequestError, match="cannot be satisfied"):
        prepare_json_schema({"type": "string", "pattern": "^x{5}$", "maxLength": 2}, True)


def _walk_suite(compiled_for, decoded_vocab, stop_ids, walks: int, seed: int = 0):
    """(number of finished walks, [(schema name, output, error)])."""
    rng = random.Random(seed)
    closers = closer_ids(decoded_vocab, stop_ids)
    finished, invalid = 0, []
    for name, schema in SCHEMAS.items():
        compiled = compiled_for(schema)
        for _ in range(walks):
            data = random_walk(compiled, decoded_vocab, rng, closers=closers)
            if data is None:
                continue
            finished += 1
            try:
                jsonschema.validate(json.loads(data.decode("utf-8")), schema)
            except (ValueError, jsonschema.ValidationError) as e:
                invalid.append((name, data, str(e).splitlines()[0]))
    return finished, invalid


def test_every_walk_through_every_suite_schema_validates(bpe_ckpt):
    _, _, tokenizer = bpe_ckpt
    tok = GrammarTokenizer(tokenizer, 640, [tokenizer.eos_token_id])
    cache = GrammarCache()
    finished, invalid = _walk_suite(
        lambda s: cache.get(GrammarSpec("json_schema", json.dumps(s), True), tok).grammar,
        tok.info.decoded_vocab, tok.stop_token_ids, walks=12)
    assert finished >= 0.9 * 12 * len(SCHEMAS)
    assert invalid == []


def test_the_walk_suite_detects_the_defects_of_plain_xgrammar(bpe_ckpt):
    _, _, tokenizer = bpe_ckpt
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=640)
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    finished, invalid = _walk_suite(lambda s: compiler.compile_json_schema(s, **COMPACT),
                                    info.decoded_vocab, info.stop_token_ids, walks=12)
    assert finished > 0
    assert invalid, "plain xgrammar passed the walk suite: were its defects fixed upstream?"
    assert any("control character" in err for _, _, err in invalid)


FINISHING = {
    'root ::= "ab" root': False,  # xgrammar's find_jump_forward_string allocates until killed
    'root ::= "ab" root | "c"': True,
    'root ::= "a" | "b" loop\nloop ::= "c" loop': False,  # finite from root, not after "b"
    'root ::= "a" x{0,3}\nx ::= "b" x': False,
    'root ::= ("a" root)*': True,
    'root ::= ("a" root)+': False,
    'root ::= x{2,3} (= "q")\nx ::= [a-z]+ "q"': True,
}


@pytest.mark.parametrize("ebnf", list(FINISHING))
def test_grammars_with_endless_forced_continuations_are_found(ebnf):
    assert always_finishes(str(xgr.Grammar.from_ebnf(ebnf))) is FINISHING[ebnf]


def test_every_suite_schema_always_finishes():
    for schema in SCHEMAS.values():
        assert always_finishes(str(xgr.Grammar.from_json_schema(schema, **COMPACT)))


@pytest.mark.parametrize("fmt", ["json_object", "free_whitespace"])
def test_walks_through_json_object_and_free_whitespace_grammars_validate(bpe_ckpt, fmt):
    _, _, tokenizer = bpe_ckpt
    tok = GrammarTokenizer(tokenizer, 640, [tokenizer.eos_token_id])
    names = ["order", "refs", "payment", "counters", "shape"]
    if fmt == "json_object":
        specs = [(GrammarSpec("json_object", ""), {"type": "object"})]
    else:
        specs = [(GrammarSpec("json_schema", json.dumps(SCHEMAS[n]), True, "free"), SCHEMAS[n])
                 for n in names]
    rng = random.Random(0)
    closers = closer_ids(tok.info.decoded_vocab, tok.stop_token_ids)
    finished = 0
    for spec, schema in specs:
        compiled = GrammarCache().get(spec, tok).grammar
        for _ in range(40 if fmt == "json_object" else 8):
            data = random_walk(compiled, tok.info.decoded_vocab, rng, closers=closers,
                               max_tokens=120, p_close=0.5)
            if data is not None:
                finished += 1
                jsonschema.validate(json.loads(data.decode("utf-8")), schema)
    assert finished >= 5
