"""hybrid-prefix checker: every request's greedy token ids equal the reference exactly."""

from __future__ import annotations

from typing import Any


def check(outputs: list[dict[str, Any]], references: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdict {"passed", "summary", "details": [{index, passed, first_mismatch}]}."""
    if len(outputs) != len(references):
        return {"passed": False, "summary": f"{len(outputs)} outputs for {len(references)} "
                                            "references", "details": []}
    details = []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        got, want = list(out.get("token_ids", [])), list(ref["token_ids"])
        mismatch = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b),
                        None if len(got) == len(want) else min(len(got), len(want)))
        details.append({"index": i, "passed": mismatch is None, "first_mismatch": mismatch})
    num_bad = sum(not d["passed"] for d in details)
    return {"passed": num_bad == 0,
            "summary": f"{len(details) - num_bad}/{len(details)} requests exact",
            "details": details}
