"""Accuracy judge: decides whether a candidate serves correctly and honestly.

Works only from files: the candidate plan (and the extension code it loads) in the workspace,
the scenario, the requests, and the references it keeps outside the workspace. Steps:

  1. static scan of the plan and extension code (roles/cheat_scan.py)
  2. the candidate generates the scenario's outputs in a sandboxed process with a time and
     memory limit; an audit hook refuses reads of the references; the model forward is counted;
     a repeated and a streamed request are checked (tasks/candidate.py)
  3. the outputs must carry what the scenario's metric measures (per-chunk latencies for a
     chunk-latency metric), else the candidate is an implementation bug: it cannot be measured
  4. the scenario checker compares outputs with the references in another sandboxed process
     that never imports candidate code (tasks/candidate.py:run_checker)

The verdict (judge.json) is written by this code alone; no implementer conversation reaches it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan, PlanError
from vibekit_agents.roles.cheat_scan import scan_candidate
from vibekit_agents.sandbox import run_task
from vibekit_agents.workspace import (
    CHEATING,
    CHECKER_FAILED,
    CRASHED,
    IMPLEMENTATION_BUG,
    TIMED_OUT,
)


class Judge:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def judge(self, round_dir: Path, candidate_path: Path) -> dict[str, Any]:
        ctx, sc = self.ctx, self.ctx.scenario
        verdict: dict[str, Any] = {"passed": False, "outcome": None, "reasons": [],
                                   "warnings": [], "candidate": candidate_path.name}
        try:
            plan = Plan.load(candidate_path)
        except PlanError as exc:
            return self._write(round_dir, verdict, IMPLEMENTATION_BUG, [str(exc)])
        findings = scan_candidate(plan, ctx.workspace.root, sc, ctx.facts.get("model.source"))
        rejects = [str(f) for f in findings if f.severity == "reject"]
        verdict["warnings"] = [str(f) for f in findings if f.severity == "warn"]
        if rejects:
            return self._write(round_dir, verdict, CHEATING, [f"static: {r}" for r in rejects])

        outputs_path = round_dir / "outputs.json"
        outputs_path.unlink(missing_ok=True)
        run = run_task(
            "vibekit_agents.tasks.candidate:run_candidate",
            dict(plan_path=str(candidate_path), workspace=str(ctx.workspace.root),
                 scenario_dir=str(sc.root), requests=json.loads(ctx.requests_path.read_text())),
            timeout_s=ctx.task_timeout(sc.checker.timeout_s),
            memory_limit_mb=sc.checker.memory_limit_mb,
            protected=ctx.protected_dirs(),
            log_path=ctx.logs_dir / f"{round_dir.name}-judge.log",
            cwd=str(ctx.workspace.root), restrict_writes=True)
        value = dict(run.value or {})
        if "outputs" in value:  # the harness writes them: the candidate process cannot
            outputs_path.write_text(json.dumps(value.pop("outputs")))
        verdict["run"] = {"status": run.status, "wall_s": round(run.wall_s, 2),
                          "error": run.error, **value}
        if run.violations:
            return self._write(round_dir, verdict, CHEATING,
                               [f"runtime: {v}" for v in run.violations])
        if run.status == "timeout":
            return self._write(round_dir, verdict, TIMED_OUT, [run.error])
        if run.status in ("oom", "crashed"):
            return self._write(round_dir, verdict, CRASHED, [run.error or run.log_tail[-500:]])
        if run.status == "error":
            return self._write(round_dir, verdict, IMPLEMENTATION_BUG,
                               [run.error, run.traceback[-1500:]])
        verdict["warnings"] += value.get("warnings", [])
        if value.get("findings"):
            return self._write(round_dir, verdict, CHEATING,
                               [f"runtime: {f}" for f in value["findings"]])
        if value.get("metric_problems"):
            return self._write(round_dir, verdict, IMPLEMENTATION_BUG,
                               [f"the outputs cannot be measured as {sc.metric.label}: {p}"
                                for p in value["metric_problems"]])

        check = run_task(
            "vibekit_agents.tasks.candidate:run_checker",
            dict(scenario_dir=str(sc.root), outputs_path=str(outputs_path),
                 references_path=str(ctx.references_path)),
            timeout_s=ctx.task_timeout(sc.checker.timeout_s),
            memory_limit_mb=sc.checker.memory_limit_mb,
            log_path=ctx.logs_dir / f"{round_dir.name}-checker.log")
        if not check.ok:
            outcome = TIMED_OUT if check.status == "timeout" else CRASHED
            return self._write(round_dir, verdict, outcome,
                               [f"the scenario checker {check.status}: {check.error}"])
        verdict["checker"] = _short(check.value)
        if not check.value["passed"]:
            return self._write(round_dir, verdict, CHECKER_FAILED,
                               [f"checker: {check.value.get('summary', 'failed')}"])
        verdict["passed"] = True
        verdict["reasons"] = [f"checker: {check.value.get('summary', 'passed')}",
                              f"forward audit (the harness's hook): "
                              f"{value.get('forwarded_tokens')} tokens forwarded, the outputs "
                              f"need {value.get('needed_tokens')}; repeat and streaming checks "
                              f"passed"]
        return self._write(round_dir, verdict, None, verdict["reasons"])

    def _write(self, round_dir: Path, verdict: dict, outcome: str | None,
               reasons: list[str]) -> dict[str, Any]:
        verdict["outcome"] = outcome
        verdict["reasons"] = [r for r in reasons if r]
        (round_dir / "judge.json").write_text(json.dumps(verdict, indent=1, default=str))
        lines = [f"# Judge: {'PASSED' if verdict['passed'] else 'REJECTED'}"
                 + (f" ({outcome})" if outcome else ""), ""]
        lines += [f"- {r}" for r in verdict["reasons"]]
        lines += [f"- warning: {w}" for w in verdict.get("warnings", [])]
        (round_dir / "judge.md").write_text("\n".join(lines) + "\n")
        return verdict


def _short(value: dict) -> dict:
    """The checker's verdict without its per-request bulk (kept to 20 details)."""
    out = dict(value)
    details = out.get("details") or []
    out["details"] = details[:20]
    return out


def summarize(verdict: dict[str, Any]) -> str:
    if verdict.get("passed"):
        return "passed: " + "; ".join(verdict.get("reasons", []))[:300]
    return f"{verdict.get('outcome')}: " + "; ".join(verdict.get("reasons", []))[:400]
