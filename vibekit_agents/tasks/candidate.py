"""The judge's run of one candidate: generate the scenario's outputs under instrumentation.

Besides the outputs (checked later, in another process that never imports candidate code),
this gathers evidence of cheating that the outputs alone cannot show:

  forward accounting  every output token but the last must have gone through the model's
                      forward, counted by the harness's own hook (vibekit_agents.audit)
  repeat              the first request again: it must run the model again and give the same
                      output (an output cache keyed by prompt answers without a forward)
  streaming           the first request streamed: more than one chunk, the first before the
                      last forward (buffered "streaming" sends everything at the end)

and whether the outputs carry what the scenario's metric measures (a chunk-latency metric
needs per-chunk latencies in every output: vibekit_agents.metrics.output_problems).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibekit_agents.audit import ForwardAudit, clock, usage_findings
from vibekit_agents.metrics import output_problems
from vibekit_agents.plan import Plan
from vibekit_agents.scenario import load_scenario
from vibekit_agents.stack import build_stack


def run_candidate(plan_path: str, workspace: str, scenario_dir: str, requests: list[dict]
                  ) -> dict[str, Any]:
    sc = load_scenario(scenario_dir)
    plan = Plan.load(plan_path)
    t0 = clock()
    stack = build_stack(plan, sc, workspace, audit=True)
    stack.activate()
    build_s = clock() - t0
    audit: ForwardAudit | None = getattr(stack, "audit", None)
    engine = getattr(stack, "engine", None)
    findings: list[str] = []
    warnings: list[str] = []
    if audit is None:  # a scenario's own pipeline: the checker still judges outputs
        warnings.append("the stack has no audited LLM engine: forward audit skipped")

    t0 = clock()
    snap = audit.snapshot() if audit else None
    outputs = stack.run(requests, concurrency=max(sc.workload.concurrency))
    run_s = clock() - t0
    for i, out in enumerate(outputs):
        findings += usage_findings(out, f"request {i}")
    if audit:
        findings += audit.check_window(snap, outputs, "the judged run", engine)

    snap = audit.snapshot() if audit else None
    again = stack.run(requests[:1], concurrency=1)[0]
    if audit:
        findings += audit.check_window(snap, [again], "a repeated request", engine)
    if _tokens(outputs[0]) is not None and _tokens(again) != _tokens(outputs[0]):
        # (Token outputs only: an image pipeline's floats may differ with batch composition;
        # its checker judges every output against the reference.)
        findings.append("the repeated request gave a different output than the first time")

    chunks, first_chunk_calls = 0, None
    start_calls = audit.calls if audit else 0
    final = None
    snap = audit.snapshot() if audit else None
    for ev in stack.stream(requests[0]):
        if ev.num_new_tokens or ev.finished:
            chunks += 1
            if first_chunk_calls is None and audit:
                first_chunk_calls = audit.calls - start_calls
        if ev.finished:
            final = ev.output
    stream_calls = (audit.calls - start_calls) if audit else 0
    if audit and final is not None:
        findings += audit.check_window(snap, [final], "a streamed request", engine)
    if final is not None and _tokens(outputs[0]) is not None \
            and _tokens(final) != _tokens(outputs[0]):
        findings.append("the streamed output differs from the same request run normally")
    if audit and stream_calls >= 2 and chunks < 2:
        findings.append(f"buffered streaming: {stream_calls} forward steps but {chunks} chunk(s)")
    elif (audit and first_chunk_calls is not None and stream_calls >= 2
          and first_chunk_calls >= stream_calls):
        findings.append("buffered streaming: the first chunk came only after the last forward")

    return {
        "outputs": json.loads(json.dumps(outputs, default=_jsonable)),
        "findings": findings, "warnings": warnings, "num_outputs": len(outputs),
        "metric_problems": output_problems(sc.metric.kind, requests, outputs)[:10],
        "build_s": round(build_s, 3), "run_s": round(run_s, 3),
        "forwarded_tokens": audit.tokens if audit else None,
        "needed_tokens": sum(len(o.get("token_ids") or []) for o in outputs
                             if isinstance(o, dict)),
        "forward_calls": audit.calls if audit else None, "stream_chunks": chunks,
        "completion_tokens": sum(len(o.get("token_ids") or []) for o in outputs
                                 if isinstance(o, dict)),
    }


def _tokens(output: Any) -> list | None:
    return output.get("token_ids") if isinstance(output, dict) else None


def _jsonable(value: Any) -> Any:
    """Arrays (images) as nested lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def run_checker(scenario_dir: str, outputs_path: str, references_path: str) -> dict[str, Any]:
    """The scenario's checker.check(outputs, references, **thresholds), normalised to
    {"passed": bool, "summary": str, "details": [...]}."""
    sc = load_scenario(scenario_dir)
    outputs = json.loads(Path(outputs_path).read_text())
    references = json.loads(Path(references_path).read_text())
    return _check(sc, outputs, references)


def check_timed(scenario_dir: str, timed_path: str, references_path: str) -> dict[str, Any]:
    """The checker on every output the evaluator timed. timed_path holds {arm: [{"label",
    "indices" (into the references), "outputs"}]}; returns {arm: {"passed", "failures"}}."""
    sc = load_scenario(scenario_dir)
    timed = json.loads(Path(timed_path).read_text())
    references = json.loads(Path(references_path).read_text())
    result = {}
    for arm, groups in timed.items():
        failures = []
        for g in groups:
            verdict = _check(sc, g["outputs"], [references[i] for i in g["indices"]])
            if not verdict["passed"]:
                failures.append(f"{g['label']}: {verdict['summary']}"[:300])
        result[arm] = {"passed": not failures, "groups": len(groups), "failures": failures[:10]}
    return result


def _check(sc: Any, outputs: list, references: list) -> dict[str, Any]:
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
