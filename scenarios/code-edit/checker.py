"""Checker for code-edit: every output's token ids equal plain greedy decoding's."""

from __future__ import annotations

from typing import Any


def check(outputs: list[dict[str, Any]], references: list[dict[str, Any]],
          **_: Any) -> dict[str, Any]:
    if len(outputs) != len(references):
        return {"passed": False, "summary": f"{len(outputs)} outputs for {len(references)} "
                                            f"references", "details": []}
    details = []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        got, want = list(out.get("token_ids", [])), list(ref["token_ids"])
        if got == want:
            details.append({"request": i, "identical": True, "tokens": len(want)})
            continue
        first = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
        details.append({"request": i, "identical": False, "first_difference": first,
                        "got_tokens": len(got), "want_tokens": len(want)})
    same = sum(d["identical"] for d in details)
    return {"passed": same == len(details),
            "summary": f"{same}/{len(details)} outputs identical to plain greedy decoding",
            "details": details}
