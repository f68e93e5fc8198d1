"""JSON workload: chat requests with a strict OpenAI json_schema `response_format` each.

The schemas are the kind agents and tools send (forms, orders, tool calls, records with $refs,
nullable and anyOf fields, enums, bounded numbers, patterns, dates) and the kind MaskBench
collects from real repositories (draft headers, definitions, type lists, tagged unions,
formats). Every string and array is bounded, so even a random-weight model finishes each object
within max_tokens.
"""

from __future__ import annotations

import random
from typing import Any

S = {"type": "string", "maxLength": 16}
INT = {"type": "integer", "minimum": 0, "maximum": 9999}
MONEY = {"type": "number", "minimum": 0, "maximum": 100000}
DATE = {"type": "string", "format": "date"}
BOOL = {"type": "boolean"}


def obj(properties: dict, required: list | None = None) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": list(properties) if required is None else required}


def arr(items: dict, lo: int = 0, hi: int = 3) -> dict:
    return {"type": "array", "items": items, "minItems": lo, "maxItems": hi}


ADDRESS = obj({"street": S, "city": S, "postal_code": {"type": "string",
                                                        "pattern": "^[0-9]{5}$"},
               "country": {"enum": ["US", "DE", "FR", "JP", "BR", "IN"]}})

# (task text, schema)
TASKS: list[tuple[str, dict]] = [
    ("Extract the contact details from the signature below.",
     obj({"name": S, "email": {"type": "string", "format": "email"},
          "phone": {"anyOf": [{"type": "string", "pattern": "^\\+?[0-9]{7,12}$"},
                              {"type": "null"}]}}, required=["name", "email", "phone"])),
    ("Classify the sentiment of this review.",
     obj({"sentiment": {"enum": ["positive", "negative", "neutral", "mixed"]},
          "confidence": {"type": "number", "minimum": 0, "maximum": 1},
          "aspects": arr({"enum": ["price", "quality", "service", "delivery"]}, 0, 4)})),
    ("Turn this purchase confirmation into an order record.",
     obj({"order_id": {"type": "string", "pattern": "^ORD-[0-9]{6}$"}, "placed": DATE,
          "customer": obj({"name": S, "vip": BOOL}),
          "lines": arr(obj({"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                            "qty": {"type": "integer", "minimum": 1, "maximum": 20},
                            "unit_price": MONEY}), 1, 3),
          "currency": {"enum": ["USD", "EUR", "JPY"]}})),
    ("Call the right tool for the user's question.",
     {"anyOf": [obj({"tool": {"const": "search"}, "query": S,
                     "top_k": {"type": "integer", "minimum": 1, "maximum": 10}}),
                obj({"tool": {"const": "calculator"}, "expression": S}),
                obj({"tool": {"const": "weather"}, "city": S, "unit": {"enum": ["C", "F"]}})]}),
    ("Summarise the meeting as a calendar event.",
     obj({"title": S, "date": DATE,
          "start": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
          "duration_min": {"type": "integer", "minimum": 5, "maximum": 480},
          "attendees": arr(S, 1, 4), "location": {"anyOf": [S, {"type": "null"}]}})),
    ("Fill in the shipping form.",
     {"$defs": {"address": ADDRESS},
      **obj({"ship_to": {"$ref": "#/$defs/address"}, "bill_to": {"$ref": "#/$defs/address"},
             "express": BOOL})}),
    ("Extract the invoice.",
     obj({"number": {"type": "string", "pattern": "^INV-[0-9]{4}$"}, "issued": DATE,
          "due": DATE, "paid": BOOL, "total": MONEY,
          "items": arr(obj({"description": S, "amount": MONEY}), 1, 3)})),
    ("Describe the product listing.",
     obj({"title": S, "price": MONEY, "in_stock": BOOL,
          "rating": {"type": "number", "minimum": 1, "maximum": 5},
          "tags": arr({"type": "string", "maxLength": 10}, 0, 3),
          "dimensions_cm": obj({"w": {"type": "number", "minimum": 0, "maximum": 500},
                                "h": {"type": "number", "minimum": 0, "maximum": 500}})},
         required=["title", "price", "in_stock"])),
    ("Parse the log line.",
     obj({"level": {"enum": ["DEBUG", "INFO", "WARN", "ERROR"]},
          "status": {"type": "integer", "minimum": 100, "maximum": 599},
          "latency_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
          "path": {"type": "string", "pattern": "^/[a-z0-9/]{0,20}$"}})),
    ("Build the org chart entry.",
     {"$defs": {"person": obj({"name": S, "title": S,
                               "reports": arr({"$ref": "#/$defs/person"}, 0, 2)},
                              required=["name", "title"])},
      "$ref": "#/$defs/person"}),
    ("Extract the flight booking.",
     obj({"passenger": S, "flight": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3,4}$"},
          "from": {"type": "string", "pattern": "^[A-Z]{3}$"},
          "to": {"type": "string", "pattern": "^[A-Z]{3}$"}, "date": DATE,
          "seat": {"anyOf": [{"type": "string", "pattern": "^[0-9]{1,2}[A-F]$"},
                             {"type": "null"}]},
          "class": {"enum": ["economy", "premium", "business", "first"]}})),
    ("Score the answer against the rubric.",
     obj({"scores": obj({"correctness": {"type": "integer", "minimum": 0, "maximum": 5},
                         "clarity": {"type": "integer", "minimum": 0, "maximum": 5},
                         "completeness": {"type": "integer", "minimum": 0, "maximum": 5}}),
          "verdict": {"enum": ["accept", "revise", "reject"]}, "comment": S})),
]

# Schemas of the kind MaskBench collects from GitHub, Kubernetes, JSON Schema Store, Snowplow
# and function-calling sets (written here, not copied): a draft header, definitions, type lists,
# tagged unions (oneOf with a const discriminator), formats, exclusive bounds, annotations.
DRAFT7 = "http://json-schema.org/draft-07/schema#"
SEMVER = {"type": "string", "pattern": "^[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}$"}
TASKS += [
    ("Write the package manifest for this library.",
     {"$schema": DRAFT7, "title": "package manifest", "type": "object",
      "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{1,14}$",
                              "description": "lowercase package name"},
                     "version": SEMVER, "private": BOOL,
                     "license": {"enum": ["MIT", "Apache-2.0", "BSD-3-Clause", "GPL-3.0"]},
                     "keywords": {"type": "array", "items": S, "maxItems": 3},
                     "repository": {"oneOf": [
                         {"type": "string", "maxLength": 24},
                         {"$ref": "#/definitions/repo"}]}},
      "required": ["name", "version", "license"], "additionalProperties": False,
      "definitions": {"repo": obj({"type": {"enum": ["git", "svn"]},
                                   "url": {"type": "string", "maxLength": 24}})}}),
    ("Turn the build instructions into CI steps.",
     {"$schema": DRAFT7, "type": "object", "additionalProperties": False,
      "required": ["name", "steps"],
      "properties": {"name": S, "runs_on": {"enum": ["ubuntu-latest", "macos-latest"]},
                     "steps": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
                         "oneOf": [obj({"kind": {"const": "run"}, "command": S}),
                                   obj({"kind": {"const": "uses"},
                                        "action": {"type": "string",
                                                   "pattern": "^[a-z]{2,8}/[a-z]{2,8}@v[0-9]$"}}
                                       )]}}}}),
    ("Describe the container for the deployment.",
     obj({"name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$"},
          "image": S,
          "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"], "default": "Always"},
          "ports": arr(obj({"containerPort": {"type": "integer", "minimum": 1,
                                              "maximum": 65535},
                            "protocol": {"enum": ["TCP", "UDP", "SCTP"]}}), 0, 2),
          "resources": obj({"limits": obj({
              "cpu": {"type": "string", "pattern": "^[0-9]{1,3}m?$"},
              "memory": {"type": "string", "pattern": "^[0-9]{1,4}(Mi|Gi)$"}})})},
         required=["name", "image"])),
    ("Record the tracking event.",
     {"$schema": DRAFT7, "description": "Schema for a page view event", "self": {
         "vendor": "com.example", "name": "page_view", "format": "jsonschema",
         "version": "1-0-0"},
      "type": "object", "additionalProperties": False, "required": ["event_id", "url", "at"],
      "properties": {"event_id": {"type": "string", "pattern": "^[0-9a-f]{8}$"},
                     "url": {"type": "string", "maxLength": 24},
                     "referrer": {"type": ["string", "null"], "maxLength": 16},
                     "at": {"type": "string", "format": "date-time"},
                     "load_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": 60000},
                     "user": {"type": ["object", "null"], "additionalProperties": False,
                              "properties": {"id": INT, "email": {"type": "string",
                                                                  "format": "email"}}}}}),
    ("Call the function that answers the user.",
     {"oneOf": [obj({"name": {"const": "get_weather"},
                     "arguments": obj({"location": S, "unit": {"enum": ["celsius",
                                                                        "fahrenheit"]}})}),
                obj({"name": {"const": "convert_currency"},
                     "arguments": obj({"amount": MONEY, "from": {"enum": ["USD", "EUR"]},
                                       "to": {"enum": ["USD", "EUR", "GBP"]}})})]}),
]

INPUTS = ("Dana Whitfield, Head of Ops, dana@example.org, +4930123456",
          "Ordered 2 lamps (LMP-204) at 39.90 each and one shade; paid in EUR.",
          "Loved the build quality but delivery took three weeks.",
          "GET /api/v2/users 200 in 184ms",
          "Tomorrow 14:30, 45 minutes, with Ana, Bo and Chen in room 4.",
          "What is 17% of 2,340?")


def make_requests(seed: int, n: int, max_tokens: int = 384, **_: Any) -> list[dict[str, Any]]:
    """n chat requests (OpenAI shape) cycling through TASKS in a seeded order, greedy, each with
    a strict json_schema response_format."""
    rng = random.Random(seed)
    order = list(range(len(TASKS)))
    rng.shuffle(order)
    requests = []
    for i in range(n):
        task, schema = TASKS[order[i % len(order)]]
        requests.append({
            "messages": [
                {"role": "system", "content": "You answer with one JSON object that follows "
                                              "the given schema, and nothing else."},
                {"role": "user", "content": f"{task}\n\n{rng.choice(INPUTS)}"},
            ],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": f"task_{order[i % len(order)]}", "schema": schema, "strict": True}},
        })
    return requests
