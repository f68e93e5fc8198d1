"""Checker for standard: greedy token ids equal HF transformers' for every request."""

from __future__ import annotations

from typing import Any


def check(outputs: list[dict[str, Any]], references: list[dict[str, Any]],
          **_: Any) -> dict[str, Any]:
    if len(outputs) != len(references):
        return {"passed": False, "details": [],
                "summary": f"{len(outputs)} outputs for {len(references)} references"}
    details = []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        got, want = list(out.get("token_ids", [])), list(ref["token_ids"])
        first = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b),
                     None if got == want else min(len(got), len(want)))
        details.append({"request": i, "identical": got == want, "first_difference": first})
    same = sum(d["identical"] for d in details)
    return {"passed": same == len(details), "details": details,
            "summary": f"{same}/{len(details)} outputs equal HF transformers greedy ids"}
