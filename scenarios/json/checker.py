"""Checker for json: every output parses and validates against its schema (jsonschema, formats
included where jsonschema checks them), ended because the grammar accepted, and has the token
ids of the reference masked greedy decode."""

from __future__ import annotations

import json
from typing import Any


def check(outputs: list[dict[str, Any]], references: list[dict[str, Any]],
          **_: Any) -> dict[str, Any]:
    import jsonschema

    if len(outputs) != len(references):
        return {"passed": False, "details": [],
                "summary": f"{len(outputs)} outputs for {len(references)} references"}
    details = []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        got, want = list(out.get("token_ids", [])), list(ref["token_ids"])
        first = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b),
                     None if got == want else min(len(got), len(want)))
        error = None
        try:
            # the validator of the schema's draft; formats checked where jsonschema can
            jsonschema.validate(json.loads(out.get("text", "")), ref["schema"],
                                format_checker=jsonschema.FormatChecker())
        except (ValueError, jsonschema.ValidationError) as e:
            error = str(e).splitlines()[0][:200]
        if error is None and out.get("finish_reason", "stop") != "stop":
            error = f"finish_reason {out.get('finish_reason')!r}: the object is incomplete"
        details.append({"request": i, "identical": got == want, "first_difference": first,
                        "valid": error is None, "error": error})
    same = sum(d["identical"] for d in details)
    valid = sum(d["valid"] for d in details)
    n = len(details)
    return {"passed": same == n and valid == n, "details": details,
            "summary": f"{valid}/{n} outputs validate against their schema; {same}/{n} equal "
                       f"the reference masked greedy ids"}
