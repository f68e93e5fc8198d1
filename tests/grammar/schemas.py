"""A suite of realistic JSON schemas for structured output, every string and array bounded so a
random-weight model finishes them within a few hundred tokens."""

from __future__ import annotations

S = {"type": "string", "maxLength": 12}  # a short free string
NAME = {"type": "string", "minLength": 1, "maxLength": 16}
SLUG = {"type": "string", "pattern": "^[a-z][a-z0-9-]{1,10}$"}
DATE = {"type": "string", "format": "date"}
INT = {"type": "integer", "minimum": 0, "maximum": 1000}
MONEY = {"type": "number", "minimum": 0, "maximum": 10000}
BOOL = {"type": "boolean"}


def obj(properties: dict, required: list | None = None, **extra) -> dict:
    out = {"type": "object", "properties": properties,
           "required": list(properties) if required is None else required}
    out.update(extra)
    return out


def arr(items: dict, lo: int = 0, hi: int = 3) -> dict:
    return {"type": "array", "items": items, "minItems": lo, "maxItems": hi}


ADDRESS = obj({"street": S, "city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
               "country": {"enum": ["US", "DE", "FR", "JP", "BR"]}})

SCHEMAS: dict[str, dict] = {
    # flat objects, every field required
    "person": obj({"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 130}}),
    "point": obj({"x": {"type": "number", "minimum": -10, "maximum": 10},
                  "y": {"type": "number", "minimum": -10, "maximum": 10}}),
    "flag": obj({"enabled": BOOL}),
    "sentiment": obj({"label": {"enum": ["positive", "negative", "neutral"]},
                      "score": {"type": "number", "minimum": 0, "maximum": 1}}),
    "weather": obj({"city": NAME, "temp_c": {"type": "number", "minimum": -60, "maximum": 60},
                    "sky": {"enum": ["clear", "cloudy", "rain", "snow"]}}),
    "login": obj({"username": SLUG, "remember": BOOL}),
    "http_status": obj({"code": {"type": "integer", "minimum": 100, "maximum": 599},
                        "reason": S}),
    "color": obj({"hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
                  "alpha": {"type": "number", "minimum": 0, "maximum": 1}}),
    "version": obj({"semver": {"type": "string",
                               "pattern": "^[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,3}$"}}),
    "rating": obj({"stars": {"type": "integer", "minimum": 1, "maximum": 5}, "comment": S}),
    # enums and consts
    "enum_only": {"enum": ["red", "green", "blue"]},
    "enum_mixed": {"enum": ["a", 1, None, True, 2.5]},
    "const_kind": obj({"kind": {"const": "invoice"}, "id": INT}),
    "priority": obj({"priority": {"enum": ["low", "medium", "high", "urgent"]},
                     "escalate": BOOL}),
    # numbers with bounds
    "int_range": {"type": "integer", "minimum": -50, "maximum": 50},
    "exclusive_int": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
    "price": obj({"amount": MONEY, "currency": {"enum": ["USD", "EUR", "JPY"]}}),
    "probability": {"type": "number", "minimum": 0, "maximum": 1},
    "exclusive_num": {"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1},
    "coordinates": obj({"lat": {"type": "number", "minimum": -90, "maximum": 90},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180}}),
    # strings: patterns, lengths, formats
    "short_code": {"type": "string", "minLength": 2, "maxLength": 4},
    "sku": obj({"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}}),
    "pattern_with_lengths": {"type": "string", "pattern": "^[a-z]+$", "minLength": 3,
                             "maxLength": 6},
    "phone": obj({"phone": {"type": "string", "pattern": "^\\+[0-9]{7,12}$"}}),
    "dates": obj({"start": DATE, "end": DATE}),
    "uuid_ref": obj({"id": {"type": "string", "format": "uuid"}}),
    "ip": obj({"addr": {"type": "string", "format": "ipv4"},
               "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
    "timestamp": obj({"at": {"type": "string", "format": "date-time"}}),
    # optional fields
    "optional_fields": obj({"title": S, "subtitle": S, "pages": INT}, required=["title"]),
    "all_optional": obj({"a": INT, "b": BOOL, "c": S}, required=[]),
    "contact": obj({"name": NAME, "email": {"type": "string", "format": "email"},
                    "phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}},
                   required=["name"]),
    "profile": obj({"handle": SLUG, "bio": S, "followers": INT, "verified": BOOL},
                   required=["handle", "verified"]),
    # arrays with item bounds
    "tags": obj({"tags": arr({"type": "string", "maxLength": 8}, 1, 4)}),
    "scores": arr({"type": "integer", "minimum": 0, "maximum": 100}, 2, 5),
    "matrix": arr(arr({"type": "integer", "minimum": 0, "maximum": 9}, 2, 2), 2, 2),
    "fixed_pair": {"type": "array", "prefixItems": [INT, BOOL], "items": False},
    "empty_ok": obj({"items": arr(INT, 0, 2)}),
    "enum_list": obj({"days": arr({"enum": ["mon", "tue", "wed", "thu", "fri"]}, 1, 3)}),
    # nested objects
    "user_with_address": obj({"name": NAME, "address": ADDRESS}),
    "order": obj({"order_id": INT, "customer": obj({"name": NAME, "vip": BOOL}),
                  "lines": arr(obj({"sku": SLUG, "qty": {"type": "integer", "minimum": 1,
                                                         "maximum": 9}}), 1, 3),
                  "total": MONEY}),
    "event": obj({"title": S, "when": obj({"date": DATE, "all_day": BOOL}),
                  "attendees": arr(NAME, 0, 3)}),
    "invoice": obj({"number": {"type": "string", "pattern": "^INV-[0-9]{4}$"},
                    "issued": DATE, "paid": BOOL,
                    "items": arr(obj({"desc": S, "price": MONEY}), 1, 2)}),
    "deep": obj({"a": obj({"b": obj({"c": obj({"d": INT})})})}),
    "tool_call": obj({"name": {"enum": ["search", "calculator", "weather"]},
                      "arguments": obj({"query": S, "limit": {"type": "integer", "minimum": 1,
                                                              "maximum": 10}},
                                       required=["query"])}),
    # $defs and $ref
    "refs": {"$defs": {"addr": ADDRESS}, **obj({"home": {"$ref": "#/$defs/addr"},
                                                "work": {"$ref": "#/$defs/addr"}},
                                               required=["home"])},
    "ref_list": {"$defs": {"item": obj({"name": NAME, "n": INT})},
                 **obj({"items": arr({"$ref": "#/$defs/item"}, 1, 3)})},
    "ref_tree": {"$defs": {"node": obj({"v": INT, "kids": arr({"$ref": "#/$defs/node"}, 0, 2)},
                                       required=["v"])},
                 "$ref": "#/$defs/node"},
    "definitions_ref": {"definitions": {"money": MONEY},
                        **obj({"net": {"$ref": "#/definitions/money"},
                               "tax": {"$ref": "#/definitions/money"}})},
    # anyOf and nullable
    "nullable": obj({"nickname": {"anyOf": [S, {"type": "null"}]}}),
    "id_any": obj({"id": {"anyOf": [INT, SLUG]}}),
    "shape": {"anyOf": [obj({"kind": {"const": "circle"}, "r": MONEY}),
                        obj({"kind": {"const": "rect"}, "w": MONEY, "h": MONEY})]},
    "type_list": obj({"value": {"type": ["integer", "null"], "minimum": 0, "maximum": 9}}),
    "payment": obj({"method": {"anyOf": [obj({"card": {"type": "string",
                                                       "pattern": "^[0-9]{4}$"}}),
                                         obj({"iban": {"type": "string",
                                                       "pattern": "^[A-Z]{2}[0-9]{6}$"}}),
                                         {"type": "null"}]},
                    "amount": MONEY}),
    # additional properties with a value schema
    "counters": {"type": "object", "additionalProperties": INT, "maxProperties": 2,
                 "propertyNames": {"pattern": "^[a-z]{1,6}$"}},
}

assert len(SCHEMAS) >= 50, len(SCHEMAS)
