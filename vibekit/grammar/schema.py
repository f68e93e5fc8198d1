"""JSON schemas before compiling: validate, tighten what xgrammar would get wrong, reject the rest.

Keywords xgrammar cannot enforce (it ignores or approximates them; see workarounds.py; found
by the fuzzer and by MaskBench, benchmarks/bench_maskbench.py): uniqueItems, multipleOf on
non-integers, not, oneOf (unless rewrite.py proves its branches disjoint), allOf with several
branches, anyOf / allOf beside other constraining keywords (their siblings are dropped),
contains / minContains / maxContains, if / then / else, dependentRequired / dependentSchemas /
dependencies, propertyNames beyond a pattern, format with minLength / maxLength, with a pattern
or without "type": "string", $ref other than a JSON pointer into the schema ("#foo" ids), and
pattern with minLength / maxLength when the pattern is not a single repeated atom. Under strict
(the default) they are rejected with an UnsupportedSchemaError listing where they are; with
`"strict": false` they are compiled best effort: the output is always valid JSON and satisfies
every other keyword.

Tightened (any schema): `pattern` with minLength / maxLength, when the pattern is one repeated
atom (`^[a-z ]+$`), becomes a pattern with the length bounds in its quantifier; every pattern
is rewritten so it cannot match surrogate code points; `enum` values that break their sibling
keywords (xgrammar emits any listed value) are dropped, and a `const` that breaks them is an error.
"""

from __future__ import annotations

import re
from typing import Any

from vibekit.errors import InvalidRequestError
from vibekit.grammar.rewrite import rewrite_schema
from vibekit.grammar.workarounds import exclude_surrogates

_NEVER = ("not", "if", "then", "else", "contains", "minContains", "maxContains",
          "dependentRequired", "dependentSchemas", "dependencies", "oneOf")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedProperties", "unevaluatedItems")
# One atom (a class, an escape or a literal character) with an optional quantifier.
_SIMPLE = re.compile(
    r"^(?P<atom>\[(?:\\.|[^\]\\])+\]|\\[^dDwWsS]|\\[dDwWsS]|[^\\\[\](){}|?*+.^$])"
    r"(?P<q>[*+?]|\{\d+(?:,\d*)?\})?$"
)


class UnsupportedSchemaError(InvalidRequestError):
    """The schema is valid but uses a keyword a grammar backend cannot enforce (a 400)."""


class InvalidSchemaError(InvalidRequestError):
    """The schema breaks its meta-schema: no backend can help (a 400)."""


def prepare_json_schema(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    """For xgrammar: validate `schema` against its meta-schema, rewrite it (rewrite.py), tighten
    it, and under `strict` reject keywords the grammar cannot enforce. Returns a new schema;
    raises UnsupportedSchemaError or InvalidRequestError."""
    check_meta_schema(schema)
    schema = rewrite_schema(schema)
    unsupported: list[str] = []
    _walk(schema, "#", unsupported)
    if strict and unsupported:
        raise UnsupportedSchemaError(
            "response_format.json_schema uses keywords xgrammar cannot enforce: "
            f"{', '.join(unsupported[:8])}; remove them or set \"strict\": false "
            "(then they are not enforced)"
        )
    return schema


def prepare_for_llguidance(schema: dict[str, Any]) -> dict[str, Any]:
    """For llguidance: validate `schema` against its meta-schema and rewrite it (rewrite.py);
    llguidance itself refuses what it cannot enforce."""
    check_meta_schema(schema)
    return rewrite_schema(schema)


def check_meta_schema(schema: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError:  # the grammar compiler still rejects what it cannot parse
        return
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise InvalidSchemaError(
            f"response_format.json_schema.schema is not a valid JSON Schema: at {where}: "
            f"{e.message}"
        ) from None


def _walk(node: Any, path: str, unsupported: list[str]) -> None:
    if not isinstance(node, dict):
        return
    for key in _NEVER:
        if key in node:
            unsupported.append(f"{path}/{key}")
    if node.get("uniqueItems") is True:
        unsupported.append(f"{path}/uniqueItems")
    if "multipleOf" in node and not (
        node.get("type") == "integer" and isinstance(node["multipleOf"], int)
    ):
        unsupported.append(f"{path}/multipleOf (only integer multiples of integers)")
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) > 1:
        unsupported.append(f"{path}/allOf (more than one branch)")
    names = node.get("propertyNames")
    if isinstance(names, dict) and set(names) - {"pattern", "type"}:
        unsupported.append(f"{path}/propertyNames (only a pattern)")
    if "format" in node and ("minLength" in node or "maxLength" in node):
        unsupported.append(f"{path}/format with minLength/maxLength")
    if "format" in node and ("pattern" in node or node.get("type") != "string"):
        unsupported.append(f"{path}/format without type string, or with pattern")
    ref = node.get("$ref")
    if isinstance(ref, str) and not (ref == "#" or ref.startswith("#/")):
        unsupported.append(f"{path}/$ref {ref!r} (only JSON pointers into the schema)")
    for key in ("anyOf", "allOf"):
        if isinstance(node.get(key), list) and set(node) - _INERT - {key}:
            unsupported.append(f"{path}/{key} beside other keywords")
    if "enum" in node or "const" in node:
        _drop_values_breaking_siblings(node, path)
    if isinstance(node.get("pattern"), str):
        if ("minLength" in node or "maxLength" in node) and not _fold_lengths(node):
            unsupported.append(f"{path}/pattern with minLength/maxLength")
        node["pattern"] = exclude_surrogates(node["pattern"])
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                _walk(sub, f"{path}/{key}/{name}", unsupported)
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                _walk(sub, f"{path}/{key}/{i}", unsupported)
    for key in _SCHEMA_ONE:
        _walk(node.get(key), f"{path}/{key}", unsupported)
    items = node.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            _walk(sub, f"{path}/items/{i}", unsupported)
    else:
        _walk(items, f"{path}/items", unsupported)


def _fold_lengths(node: dict[str, Any]) -> bool:
    """Move minLength / maxLength into the quantifier of a one-atom pattern (xgrammar ignores
    lengths next to a pattern). Returns False when the pattern is not of that form."""
    body = node["pattern"]
    body = body[1:] if body.startswith("^") else body
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    m = _SIMPLE.match(body)
    if m is None:
        return False
    q = m.group("q")
    lo, hi = {None: (1, 1), "*": (0, None), "+": (1, None), "?": (0, 1)}.get(q, (None, None))
    if lo is None:
        parts = q[1:-1].split(",")
        lo = int(parts[0])
        hi = lo if len(parts) == 1 else (int(parts[1]) if parts[1] else None)
    lo = max(lo, node.pop("minLength", 0))
    max_len = node.pop("maxLength", None)
    if max_len is not None:
        hi = max_len if hi is None else min(hi, max_len)
    if hi is not None and lo > hi:
        raise InvalidRequestError(
            f"string schema cannot be satisfied: pattern {node['pattern']!r} with the length "
            f"bounds allows no string of length in [{lo}, {hi}]"
        )
    node["pattern"] = f"^{m.group('atom')}{{{lo},{'' if hi is None else hi}}}$"
    return True


_ANNOTATIONS = {"enum", "const", "title", "description", "default", "examples", "$comment"}
# Keywords that constrain nothing (xgrammar drops the siblings of anyOf / allOf, see _walk).
_INERT = {"$defs", "definitions", "$schema", "$id", "id", "title", "description", "default",
          "examples", "$comment", "deprecated", "readOnly", "writeOnly"}


def _drop_values_breaking_siblings(node: dict[str, Any], path: str) -> None:
    siblings = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
    if not siblings or any("$ref" in str(v) for v in siblings.values()):
        return
    try:
        import jsonschema
    except ImportError:
        return
    validator = jsonschema.Draft202012Validator(siblings)
    if "const" in node and not validator.is_valid(node["const"]):
        raise InvalidRequestError(f"schema at {path} cannot be satisfied: its const "
                                  f"{node['const']!r} breaks its other keywords")
    if isinstance(node.get("enum"), list):
        kept = [v for v in node["enum"] if validator.is_valid(v)]
        if not kept:
            raise InvalidRequestError(f"schema at {path} cannot be satisfied: no enum value "
                                      f"meets its other keywords")
        node["enum"] = kept
