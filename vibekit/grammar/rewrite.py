"""Schema rewrites that keep exactly the same valid instances, so more schemas can be enforced.

1. `format` values no JSON Schema draft defines (`"format": "topic"`, OpenAPI's "byte") are
   annotations: every validator ignores them, so they are dropped (grammar backends would refuse
   them). Formats the drafts define stay; a backend that cannot enforce one refuses the schema.
2. `oneOf` whose branches provably exclude each other (their JSON types are disjoint, or they
   are objects that require one property with disjoint const / enum values: a tagged union) is
   `anyOf`: exactly one matches iff at least one does. Other `oneOf`s are left for the backend
   to refuse.
"""

from __future__ import annotations

import copy
import json
from typing import Any

# Every format a JSON Schema draft (3 to 2020-12) defines.
STANDARD_FORMATS = frozenset({
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname",
    "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template",
    "json-pointer", "relative-json-pointer", "regex", "host-name", "ip-address", "color",
    "utc-millisec", "style", "phone",
})
_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_ONE = ("additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "string", "integer", "number"})


def rewrite_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` with the rewrites above applied everywhere in it."""
    root = copy.deepcopy(schema)
    _walk(root, root)
    return root


def subschemas(node: dict[str, Any]):
    """The subschemas directly under `node` (not through $ref)."""
    for key in _MAPS:
        if isinstance(node.get(key), dict):
            yield from (v for v in node[key].values() if isinstance(v, dict))
    for key in _LISTS:
        if isinstance(node.get(key), list):
            yield from (v for v in node[key] if isinstance(v, dict))
    for key in _ONE:
        if isinstance(node.get(key), dict):
            yield node[key]
    items = node.get("items")
    if isinstance(items, dict):
        yield items
    elif isinstance(items, list):
        yield from (v for v in items if isinstance(v, dict))


def _walk(node: Any, root: dict[str, Any]) -> None:
    if not isinstance(node, dict):
        return
    if isinstance(node.get("format"), str) and node["format"] not in STANDARD_FORMATS:
        del node["format"]
    branches = node.get("oneOf")
    if isinstance(branches, list) and all(isinstance(b, dict) for b in branches):
        if _pairwise_disjoint(branches, root):
            if "anyOf" not in node:
                node["anyOf"] = node.pop("oneOf")
            else:  # both: the disjoint oneOf becomes one more allOf branch
                node.setdefault("allOf", []).append({"anyOf": node.pop("oneOf")})
    for sub in list(subschemas(node)):
        _walk(sub, root)


def _pairwise_disjoint(branches: list[dict[str, Any]], root: dict[str, Any]) -> bool:
    if len(branches) < 2:
        return True
    types = [_types(b, root, 0) for b in branches]
    tags = [_tags(b, root) for b in branches]
    for i in range(len(branches)):
        for j in range(i + 1, len(branches)):
            if types[i] is not None and types[j] is not None and not types[i] & types[j]:
                continue
            if any(k in tags[j] and not tags[i][k] & tags[j][k] for k in tags[i]):
                continue
            return False
    return True


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    target: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target if isinstance(target, dict) else None


def _value_types(value: Any) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, (int, float)):  # 1.0 is an integer in JSON Schema
        return {"integer", "number"}
    if isinstance(value, str):
        return {"string"}
    return {"array"} if isinstance(value, list) else {"object"}


def _types(node: dict[str, Any], root: dict[str, Any], depth: int) -> set[str] | None:
    """The JSON types an instance of `node` may have (a superset), or None when unknown."""
    if depth > 16:
        return None
    if "$ref" in node:  # drafts <= 7 ignore the siblings of $ref: the target alone is a superset
        target = _resolve(node, root)
        return None if target is None else _types(target, root, depth + 1)
    known: set[str] | None = None

    def meet(types: set[str] | None) -> None:
        nonlocal known
        if types is not None:
            known = set(types) if known is None else known & types

    t = node.get("type")
    if isinstance(t, str):
        t = [t]
    if isinstance(t, list) and all(isinstance(x, str) for x in t):
        meet(set(t) | ({"integer"} if "number" in t else set()))
    if "const" in node:
        meet(_value_types(node["const"]))
    if isinstance(node.get("enum"), list):
        meet(set().union(*(_value_types(v) for v in node["enum"])))
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            parts = [_types(b, root, depth + 1) if isinstance(b, dict) else None
                     for b in node[key]]
            meet(None if any(p is None for p in parts) else set().union(*parts))
    if isinstance(node.get("allOf"), list):
        for b in node["allOf"]:
            if isinstance(b, dict):
                meet(_types(b, root, depth + 1))
    return None if known is None else known & _ALL_TYPES


def _tags(node: dict[str, Any], root: dict[str, Any]) -> dict[str, set[str]]:
    """Required properties of an object-only branch whose values are a fixed set (const/enum),
    as JSON texts: two branches with disjoint sets for one such property never both match."""
    target = _resolve(node, root) if "$ref" in node else node
    if target is None or _types(target, root, 0) != {"object"}:
        return {}
    props = target.get("properties")
    if not isinstance(props, dict):
        return {}
    out: dict[str, set[str]] = {}
    for name in target.get("required", []) or []:
        prop = props.get(name)
        if not isinstance(prop, dict):
            continue
        if "$ref" in prop:
            prop = _resolve(prop, root) or {}
        if "const" in prop:
            out[name] = {_key(prop["const"])}
        elif isinstance(prop.get("enum"), list):
            out[name] = {_key(v) for v in prop["enum"]}
    return out


def _key(value: Any) -> str:
    """Equal JSON values give equal keys (1 and 1.0 too)."""
    return json.dumps(_normal(value), sort_keys=True)


def _normal(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value
