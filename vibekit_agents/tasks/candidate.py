"""The judge's run of one candidate: generate the scenario's outputs under instrumentation.

Besides the outputs (checked later, in another process that never imports candidate code),
this gathers evidence of cheating that the outputs alone cannot show:

  forward accounting  every generated token but the last must have gone through the model's
                      forward: forwarded tokens >= sum(prompt - cached) + sum(completion - 1)
  repeat              the first request again: it must run the model again and give the same
                      output (an output cache keyed by prompt answers without a forward)
  streaming           the first request streamed: more than one chunk, the first before the
                      last forward (buffered "streaming" sends everything at the end)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vibekit_agents.plan import Plan
from vibekit_agents.scenario import load_scenario
from vibekit_agents.stack import build_stack


class ForwardCounter:
    """Counts the query tokens and calls of the model's forward (a pre-hook on engine.model)."""

    def __init__(self, engine: Any) -> None:
        self.tokens = 0
        self.calls = 0
        model = getattr(engine, "model", None)
        self.attached = hasattr(model, "register_forward_pre_hook")
        if self.attached:
            model.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, args: tuple) -> None:
        self.calls += 1
        if args and hasattr(args[0], "numel"):
            self.tokens += int(args[0].numel())


def _needed(outputs: list[dict]) -> int:
    n = 0
    for out in outputs:
        u = out.get("usage", {})
        n += max(0, u.get("prompt_tokens", 0) - u.get("cached_prompt_tokens", 0))
        n += max(0, u.get("completion_tokens", len(out.get("token_ids", []))) - 1)
    return n


def run_candidate(plan_path: str, workspace: str, scenario_dir: str, requests_path: str,
                  outputs_path: str) -> dict[str, Any]:
    sc = load_scenario(scenario_dir)
    plan = Plan.load(plan_path)
    requests = json.loads(Path(requests_path).read_text())
    t0 = time.perf_counter()
    stack = build_stack(plan, sc, workspace)
    stack.activate()
    build_s = time.perf_counter() - t0
    counter = ForwardCounter(getattr(stack, "engine", None))
    findings: list[str] = []
    warnings: list[str] = []
    if not counter.attached:  # a scenario's own pipeline: the checker still judges outputs
        warnings.append("the stack has no engine.model torch module: forward audit skipped")

    t0 = time.perf_counter()
    outputs = stack.run(requests, concurrency=max(sc.workload.concurrency))
    run_s = time.perf_counter() - t0
    forwarded, needed = counter.tokens, _needed(outputs)
    if counter.attached and forwarded < needed:
        findings.append(f"skips the model forward: {forwarded} tokens went through the model "
                        f"but the outputs need at least {needed}")

    before = counter.tokens
    again = stack.run(requests[:1], concurrency=1, prefix="repeat")[0]
    repeat_forwarded, repeat_needed = counter.tokens - before, _needed([again])
    if counter.attached and repeat_forwarded < repeat_needed:
        findings.append(f"serves a repeated request without the model ({repeat_forwarded} "
                        f"forwarded tokens, at least {repeat_needed} needed): an output cache?")
    if again.get("token_ids") != outputs[0].get("token_ids"):
        findings.append("the repeated request gave a different output than the first time")

    chunks, first_chunk_calls = 0, None
    start_calls = counter.calls
    final = None
    for ev in stack.stream(requests[0], request_id="stream-check"):
        if ev.num_new_tokens or ev.finished:
            chunks += 1
            if first_chunk_calls is None:
                first_chunk_calls = counter.calls - start_calls
        if ev.finished:
            final = ev.output
    stream_calls = counter.calls - start_calls
    if final is not None and final.get("token_ids") != outputs[0].get("token_ids"):
        findings.append("the streamed output differs from the same request run normally")
    if counter.attached and stream_calls >= 2 and chunks < 2:
        findings.append(f"buffered streaming: {stream_calls} forward steps but {chunks} chunk(s)")
    elif (counter.attached and first_chunk_calls is not None and stream_calls >= 2
          and first_chunk_calls >= stream_calls):
        findings.append("buffered streaming: the first chunk came only after the last forward")

    Path(outputs_path).write_text(json.dumps(outputs))
    return {
        "findings": findings, "warnings": warnings, "num_outputs": len(outputs),
        "build_s": round(build_s, 3),
        "run_s": round(run_s, 3), "forwarded_tokens": forwarded, "needed_tokens": needed,
        "forward_calls": counter.calls, "stream_chunks": chunks,
        "completion_tokens": sum(o.get("usage", {}).get("completion_tokens", 0)
                                 for o in outputs),
    }


def run_checker(scenario_dir: str, outputs_path: str, references_path: str) -> dict[str, Any]:
    """The scenario's checker.check(outputs, references, **thresholds), normalised to
    {"passed": bool, "summary": str, "details": [...]}."""
    sc = load_scenario(scenario_dir)
    outputs = json.loads(Path(outputs_path).read_text())
    references = json.loads(Path(references_path).read_text())
    verdict = sc.module("checker").check(outputs, references, **sc.checker.thresholds)
    if isinstance(verdict, bool):
        verdict = {"passed": verdict}
    elif not isinstance(verdict, dict):
        verdict = {"passed": bool(verdict.passed),
                   "details": list(getattr(verdict, "details", [])),
                   "summary": str(getattr(verdict, "summary", ""))}
    if "passed" not in verdict:
        raise ValueError("checker.check returned no 'passed' field")
    verdict["passed"] = bool(verdict["passed"])
    verdict.setdefault("summary", "passed" if verdict["passed"] else "failed")
    verdict.setdefault("details", [])
    return json.loads(json.dumps(verdict, default=str))
