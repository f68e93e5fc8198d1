"""The `response_format` shapes a request may carry, parsed into a hashable GrammarSpec."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vibekit.errors import InvalidRequestError

KINDS = ("json_schema", "json_object", "regex", "grammar")
WHITESPACE = ("compact", "free")
GRAMMAR_BACKENDS = ("auto", "llguidance", "xgrammar")
_OPTIONS = {"whitespace", "jump_forward", "grammar_backend"}
_SHAPES = (
    '{"type": "text"}, {"type": "json_object"}, '
    '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": true}}, '
    '{"type": "regex", "regex": "..."}, {"type": "grammar", "grammar": "root ::= ..."}'
)


@dataclass(frozen=True)
class GrammarSpec:
    """What to compile, and how: the compiled-grammar cache key (with the tokenizer).

    kind: "json_schema", "json_object", "regex" or "grammar" (xgrammar EBNF with a `root` rule).
    source: the schema as JSON text (key order kept: it is the property order), the regex, the
    EBNF, or "" for json_object. strict: reject schema keywords the grammar cannot enforce
    (False: compile them best effort, a looser grammar). whitespace: "compact" (no optional
    whitespace, separators "," and ":") or "free" (any JSON whitespace between tokens).
    jump_forward and backend ("" for the engine's grammar_backend, or one of GRAMMAR_BACKENDS)
    are per-request options, not part of the key (the tokenizer's fingerprint names the backend).
    """

    kind: str
    source: str
    strict: bool = True
    whitespace: str = "compact"
    jump_forward: bool = field(default=True, compare=False)
    backend: str = field(default="", compare=False)


def parse_response_format(response_format: dict[str, Any] | None, whitespace: str = "compact",
                          jump_forward: bool = True) -> GrammarSpec | None:
    """Check a request's `response_format` and return its GrammarSpec (None for plain text).

    Shapes (the first three are OpenAI's):
      {"type": "text"}                                   no constraint
      {"type": "json_object"}                            any JSON object
      {"type": "json_schema", "json_schema": {"name": "person", "schema": {...},
                                             "strict": true}}
          strict (default true): every keyword of the schema is enforced, or the request is
          refused with a 400 naming the keyword no backend can enforce; false opts into a
          looser grammar (such keywords are ignored or approximated, e.g. oneOf as anyOf)
      {"type": "regex", "regex": "[0-9]{3}-[a-z]+"}       the whole output matches the regex
      {"type": "grammar", "grammar": 'root ::= "yes" | "no"'}   xgrammar EBNF, start rule `root`
    vibekit options, at the top level of any of them:
      "whitespace": "compact" (default) | "free"          JSON kinds only
      "jump_forward": true (default) | false              see vibekit.grammar.matcher
      "grammar_backend": "auto" | "llguidance" | "xgrammar"   default: the engine's option
          (auto: per schema, a backend that enforces every keyword; see vibekit.grammar.backend)
    `whitespace` and `jump_forward` are the defaults of a format that does not say (the
    engine's grammar_whitespace / grammar_jump_forward). Raises InvalidRequestError naming what
    is wrong.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequestError(f"response_format must be a dict, one of: {_SHAPES}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind not in KINDS:
        raise InvalidRequestError(
            f"response_format.type {kind!r} is not supported; use one of: {_SHAPES}"
        )
    allowed = {"type", kind} | _OPTIONS if kind != "json_object" else {"type"} | _OPTIONS
    unknown = set(response_format) - allowed
    if unknown:
        raise InvalidRequestError(
            f"response_format has unknown keys {sorted(unknown)}; a {kind!r} format takes "
            f"{sorted(allowed)}"
        )
    whitespace = response_format.get("whitespace", whitespace)
    if whitespace not in WHITESPACE:
        raise InvalidRequestError(
            f"response_format.whitespace={whitespace!r} is invalid; use 'compact' or 'free'"
        )
    jump_forward = response_format.get("jump_forward", jump_forward)
    if not isinstance(jump_forward, bool):
        raise InvalidRequestError("response_format.jump_forward must be true or false")
    backend = response_format.get("grammar_backend", "")
    if backend not in ("",) + GRAMMAR_BACKENDS:
        raise InvalidRequestError(f"response_format.grammar_backend={backend!r} is invalid; use "
                                  f"one of {', '.join(GRAMMAR_BACKENDS)}")
    strict = True
    if kind == "json_object":
        source = ""
    elif kind == "json_schema":
        source, strict = _json_schema(response_format.get("json_schema"))
    else:
        source = response_format.get(kind)
        if not isinstance(source, str) or not source:
            raise InvalidRequestError(
                f"response_format.{kind} must be a non-empty string, got {type(source).__name__}"
            )
    return GrammarSpec(kind, source, strict, whitespace, jump_forward, backend)


def _json_schema(body: Any) -> tuple[str, bool]:
    if not isinstance(body, dict):
        raise InvalidRequestError(
            'response_format.json_schema must be an object like {"name": "...", "schema": {...}}'
        )
    unknown = set(body) - {"name", "schema", "strict", "description"}
    if unknown:
        raise InvalidRequestError(
            f"response_format.json_schema has unknown keys {sorted(unknown)}; allowed: "
            f"name, description, schema, strict"
        )
    schema = body.get("schema")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"response_format.json_schema.schema is not JSON: {e}") from e
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            f"response_format.json_schema.schema must be a JSON Schema object, got "
            f"{type(schema).__name__}"
        )
    strict = body.get("strict", True)
    if not isinstance(strict, bool):
        raise InvalidRequestError("response_format.json_schema.strict must be true or false")
    return json.dumps(schema, ensure_ascii=False), strict
