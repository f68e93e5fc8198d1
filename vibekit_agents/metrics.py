"""Metric kinds of the agent harness: what each one measures, which way is better, how its
value is shown, and the rules for the one kind whose samples the stack reports itself.

Every comparison the harness makes (tasks/bench.py) is a *gain*: the factor by which an arm
beats the baseline on the scenario's metric, > 1 better. For a higher-is-better kind that is
arm / baseline; for a lower-is-better kind (a latency) it is baseline / arm, so "x2.00" always
means twice as good (half the latency), and the thresholds, the chained speedup, the ranking
and the report read gains the same way for every kind.

Kinds:
    median_tok_s       median per-request decode rate at concurrency 1 (higher is better)
    throughput_tok_s   output tokens / wall second over a load level (higher is better)
    requests_per_s     finished requests / wall second over a load level (higher is better)
    chunk_ttft_p50_s   streaming input: the median over all chunks of a load level of the
                       time from a chunk's due time to the first token of a hypothesis that
                       covers it (lower is better); p99 and audio seconds per wall second are
                       reported beside it

The per-chunk protocol. A request of a chunk-latency scenario carries `chunk_seconds`; its
chunk k is due `k * chunk_seconds` after the stack's `add` (the client sends audio at real-time
pace). The stack's finished output carries `chunk_ttft_s` (one latency per chunk that got a
first token, in chunk order, measured on the stack's clock from the chunk's due time) and
`audio_seconds`. The harness cannot see which audio a hypothesis covers, so it checks what it
can: the judge, that every output carries well-formed numbers (`output_problems`); the
evaluator, that every claimed first-token time falls inside one of the harness-timed `step()`
calls that returned new tokens for that request (`claim_findings`). A latency shaved below the
step that produced the token lands outside those calls and is an integrity finding; one that
stays inside that step, or a token claimed to cover audio it does not, is not visible to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["CHUNK_KINDS", "KINDS", "MetricKind", "chunk_summary", "claim_findings",
           "format_number", "gain", "output_problems", "percentile"]


@dataclass(frozen=True)
class MetricKind:
    name: str
    label: str
    higher_is_better: bool
    unit: str = ""
    scale: float = 1.0  # shown value = value * scale (seconds as ms)

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        shown = value * self.scale
        text = f"{shown:.1f}" if abs(shown) >= 1 or shown == 0 else f"{shown:.3g}"
        return f"{text} {self.unit}".strip()


KINDS: dict[str, MetricKind] = {
    "median_tok_s": MetricKind("median_tok_s", "median tok/s per request", True),
    "throughput_tok_s": MetricKind("throughput_tok_s", "throughput tok/s", True),
    "requests_per_s": MetricKind("requests_per_s", "requests/s", True),
    "chunk_ttft_p50_s": MetricKind("chunk_ttft_p50_s", "TTFT per chunk p50", False, "ms", 1e3),
}
CHUNK_KINDS = frozenset({"chunk_ttft_p50_s"})

# How the numbers a scenario may list in [metric] report are shown.
_SECONDS = {"p50_latency_s", "p99_latency_s", "p50_ttft_s", "p99_ttft_s", "chunk_ttft_p50_s",
            "chunk_ttft_p99_s"}
_LABELS = {"chunk_ttft_p50_s": "TTFT per chunk p50", "chunk_ttft_p99_s": "TTFT per chunk p99",
           "audio_s_per_s": "audio s per wall s", "p50_ttft_s": "TTFT p50",
           "p99_ttft_s": "TTFT p99", "p50_latency_s": "latency p50",
           "p99_latency_s": "latency p99"}


def format_number(name: str, value: float | None) -> str:
    """A report number with its unit: seconds as ms, rates with two decimals."""
    label = _LABELS.get(name, name)
    if value is None:
        return f"{label} -"
    if name in _SECONDS:
        return f"{label} {value * 1e3:.1f} ms"
    return f"{label} {value:.2f}"


def gain(arm: float, baseline: float, kind: str) -> float:
    """How many times better `arm` is than `baseline` on `kind` (> 1: better)."""
    return arm / baseline if KINDS[kind].higher_is_better else baseline / arm


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank rule; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]


def chunk_latencies(output: Any) -> list[float]:
    if isinstance(output, dict) and isinstance(output.get("chunk_ttft_s"), list):
        return [float(x) for x in output["chunk_ttft_s"]]
    return []


def audio_seconds(output: Any) -> float:
    if isinstance(output, dict) and isinstance(output.get("audio_seconds"), (int, float)):
        return float(output["audio_seconds"])
    return 0.0


def chunk_summary(latencies: list[float], audio_s: float, wall_s: float) -> dict[str, Any]:
    return {"chunk_ttft_p50_s": percentile(latencies, 50),
            "chunk_ttft_p99_s": percentile(latencies, 99), "num_chunks": len(latencies),
            "audio_s_per_s": audio_s / wall_s if wall_s > 0 else 0.0}


def _num_chunks(request: dict, output: dict) -> int | None:
    c = request.get("chunk_seconds")
    if not isinstance(c, (int, float)) or c <= 0:
        return None
    return math.ceil(audio_seconds(output) / c - 1e-9)


def output_problems(kind: str, requests: list[dict], outputs: list) -> list[str]:
    """Why the outputs cannot be measured by a chunk-latency kind (empty: they can, or the
    kind is not one). Each problem names the request and the field."""
    if kind not in CHUNK_KINDS:
        return []
    problems = []
    for i, (req, out) in enumerate(zip(requests, outputs)):
        where = f"request {i}"
        if not isinstance(req, dict) or not isinstance(req.get("chunk_seconds"), (int, float)) \
                or req["chunk_seconds"] <= 0:
            problems.append(f"{where}: the workload request has no positive chunk_seconds "
                            f"(a {kind} scenario must say how its input is chunked)")
            continue
        if not isinstance(out, dict):
            problems.append(f"{where}: no output")
            continue
        lat, audio = out.get("chunk_ttft_s"), out.get("audio_seconds")
        if not isinstance(audio, (int, float)) or isinstance(audio, bool) or audio <= 0:
            problems.append(f"{where}: audio_seconds must be a positive number, got {audio!r}")
            continue
        if not isinstance(lat, list) or not lat:
            problems.append(f"{where}: chunk_ttft_s must be a non-empty list of the per-chunk "
                            f"latencies in seconds, got {str(lat)[:80]}")
            continue
        bad = [x for x in lat if not isinstance(x, (int, float)) or isinstance(x, bool)
               or not math.isfinite(x) or x < 0]
        if bad:
            problems.append(f"{where}: chunk_ttft_s holds values that are not finite "
                            f"latencies >= 0: {bad[:4]}")
            continue
        n = _num_chunks(req, out)
        if n is not None and len(lat) > n:
            problems.append(f"{where}: {len(lat)} chunk latencies for {audio} s of audio in "
                            f"chunks of {req['chunk_seconds']} s (at most {n})")
    if len(outputs) != len(requests):
        problems.append(f"{len(outputs)} outputs for {len(requests)} requests")
    return problems


def claim_findings(request: dict, output: Any, added: tuple[float, float],
                   windows: list[tuple[float, float]], where: str,
                   tolerance_s: float = 0.01) -> list[str]:
    """Check a stack's claimed per-chunk latencies against the harness's own timeline.

    added: (before, after) harness-clock times around `stack.add`; windows: (start, end) of
    every `step()` call that returned an event with new tokens (or the finish) for this
    request. Chunk k's claimed first token is at add + k * chunk_seconds + latency; it must
    fall inside one of the windows (within `tolerance_s`, for the clocks' rounding)."""
    lat = chunk_latencies(output)
    c = request.get("chunk_seconds") if isinstance(request, dict) else None
    if not lat or not isinstance(c, (int, float)) or c <= 0:
        return []
    if not windows:
        return [f"{where}: the stack reported {len(lat)} chunk latencies but no step returned "
                f"a token for the request"]
    windows = sorted(windows)
    for k, x in enumerate(lat):
        lo, hi = added[0] + k * c + x - tolerance_s, added[1] + k * c + x + tolerance_s
        if not any(s <= hi and lo <= e for s, e in windows):
            return [f"{where}: chunk {k} claims its first token {x * 1e3:.1f} ms after it was "
                    f"due, when no step of the harness's timeline returned a token for it "
                    f"(per-chunk latencies must be measured on the stack's clock from add + "
                    f"k * chunk_seconds; vibekit_agents.metrics)"]
    return []
