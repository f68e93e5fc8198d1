"""streaming-asr checker: each stream's final token ids equal HF generate's on its whole
recording; reports the time to first token per chunk (p50, p99) the stack measured."""

from __future__ import annotations

import math
from typing import Any


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def check(outputs: list[dict[str, Any]], references: list[dict[str, Any]],
          **_: Any) -> dict[str, Any]:
    if len(outputs) != len(references):
        return {"passed": False, "summary": f"{len(outputs)} outputs for {len(references)} "
                                            "references", "details": []}
    details, chunk_ttfts = [], []
    for i, (out, ref) in enumerate(zip(outputs, references)):
        got = list((out or {}).get("token_ids", []))
        want = list(ref["token_ids"])
        chunk_ttfts += list((out or {}).get("chunk_ttft_s", []))
        details.append({"request": i, "identical": got == want, "tokens": len(want),
                        **({} if got == want else {"got": got[:16], "want": want[:16]})})
    same = sum(d["identical"] for d in details)
    p50, p99 = _pct(chunk_ttfts, 0.5), _pct(chunk_ttfts, 0.99)
    timing = (f"; TTFT per chunk p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms over "
              f"{len(chunk_ttfts)} chunks" if p50 is not None else "")
    return {"passed": same == len(details),
            "summary": f"{same}/{len(details)} final transcripts identical to HF generate on "
                       f"the whole audio{timing}",
            "chunk_ttft_p50_s": p50, "chunk_ttft_p99_s": p99, "details": details}
