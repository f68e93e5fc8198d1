"""Performance evaluator: measures candidates side by side and says what bounds a step.

Runs the benchmark (tasks/bench.py) in a sandboxed process on the scenario's own requests and
load levels, checks every timed output against the references in another process (a timed
output that fails, or an audit finding of the timed windows, is an integrity problem of that
arm: eval.json "integrity"), profiles the candidate (tasks/profile.py), and writes eval.json,
hints.json and hints.md into the round's folder. Hints name knobs with a weight and a reason;
the planner adds the weights to the skills' base priorities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.sandbox import SandboxResult, run_task


class Evaluator:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def _run(self, func: str, args: dict, log: str, timeout_s: float) -> SandboxResult:
        ctx, sc = self.ctx, self.ctx.scenario
        timeout_s = ctx.task_timeout(timeout_s)
        requests = json.loads(ctx.requests_path.read_text())
        return run_task(f"vibekit_agents.tasks.bench:{func}",
                        dict(workspace=str(ctx.workspace.root), scenario_dir=str(sc.root),
                             requests=requests, min_improvement=sc.metric.min_improvement,
                             **args),
                        timeout_s=timeout_s, memory_limit_mb=sc.checker.memory_limit_mb,
                        protected=ctx.protected_dirs(), log_path=ctx.logs_dir / log,
                        cwd=str(ctx.workspace.root), restrict_writes=True)

    def _integrity(self, round_dir: Path, result: dict[str, Any], kind: str) -> None:
        """Check every timed output against the references (another process, no candidate
        code) and gather the audit findings: result["integrity"] = {arm: [audit findings]},
        result["checker_failures"] = {arm: [timed outputs that failed the checker]}."""
        timed = result.pop("timed", None) or {}
        problems: dict[str, list[str]] = {a: list(f) for a, f in
                                          (result.pop("findings", None) or {}).items()}
        failed: dict[str, list[str]] = {}
        if timed:
            path = round_dir / f"{kind}-timed-outputs.json"
            path.write_text(json.dumps(timed, default=str))
            res = run_task("vibekit_agents.tasks.candidate:check_timed",
                           dict(scenario_dir=str(self.ctx.scenario.root), timed_path=str(path),
                                references_path=str(self.ctx.references_path)),
                           timeout_s=max(60.0, self.ctx.scenario.checker.timeout_s),
                           memory_limit_mb=self.ctx.scenario.checker.memory_limit_mb,
                           log_path=self.ctx.logs_dir / f"{round_dir.name}-{kind}-check.log")
            if not res.ok:
                for arm in timed:
                    failed.setdefault(arm, []).append(
                        f"the checker of the timed outputs {res.status}: {res.error}"[:300])
            else:
                for arm, v in res.value.items():
                    if v["failures"]:
                        failed[arm] = [f"timed output failed the checker ({f})"
                                       for f in v["failures"]]
                result["checked_groups"] = {a: v["groups"] for a, v in res.value.items()}
            path.unlink(missing_ok=True)  # bulky; the verdicts stay in eval.json
        result["integrity"] = {a: p[:10] for a, p in problems.items() if p}
        result["checker_failures"] = {a: f[:10] for a, f in failed.items()}

    def evaluate(self, round_dir: Path, arms: dict[str, Path], baseline: str,
                 candidate: str | None, timeout_s: float = 600, max_passes: int = 5,
                 min_passes: int = 1) -> dict[str, Any]:
        """Compare arms (name -> plan file) over `baseline`, profile `candidate`, emit hints."""
        budget = max(20.0, 0.6 * self.ctx.task_timeout(timeout_s))
        res = self._run("benchmark", dict(arms={k: str(v) for k, v in arms.items()},
                                          baseline=baseline, profile_arm=candidate,
                                          max_passes=max_passes, min_passes=min_passes,
                                          budget_s=budget),
                        f"{round_dir.name}-eval.log", timeout_s)
        result: dict[str, Any] = {"status": res.status, "wall_s": round(res.wall_s, 2)}
        if res.violations:
            result["integrity"] = {"(process)": [f"runtime: {v}" for v in res.violations]}
        if not res.ok:
            result["error"] = res.error or res.log_tail[-500:]
            (round_dir / "eval.json").write_text(json.dumps(result, indent=1))
            return result
        result.update(res.value)
        self._integrity(round_dir, result, "eval")
        if res.violations:
            result["integrity"]["(process)"] = [f"runtime: {v}" for v in res.violations]
        if candidate is not None:
            hints = make_hints(result, candidate, self.ctx.facts, arms[candidate])
            result["hints"] = hints
            (round_dir / "hints.json").write_text(json.dumps(hints, indent=1))
            (round_dir / "hints.md").write_text(render_hints(hints))
        (round_dir / "eval.json").write_text(json.dumps(result, indent=1, default=str))
        return result

    def screen(self, round_dir: Path, arms: dict[str, Path], baseline: str,
               timeout_s: float = 600) -> dict[str, Any]:
        res = self._run("screen", dict(arms={k: str(v) for k, v in arms.items()},
                                       baseline=baseline),
                        f"{round_dir.name}-screen.log", timeout_s)
        result = {"status": res.status, "wall_s": round(res.wall_s, 2)}
        if res.ok:
            result.update(res.value)
            self._integrity(round_dir, result, "screen")
        else:
            result["error"] = res.error or res.log_tail[-500:]
        if res.violations:
            result.setdefault("integrity", {})["(process)"] = [f"runtime: {v}"
                                                               for v in res.violations]
        (round_dir / "screen.json").write_text(json.dumps(result, indent=1, default=str))
        return result


def make_hints(result: dict[str, Any], arm: str, facts: dict[str, Any],
               plan_path: Path) -> dict[str, Any]:
    """What bounds the candidate's step, and which knobs that points at."""
    from vibekit_agents.plan import Plan

    plan = Plan.load(plan_path)
    prof = result.get("profile") or {}
    metrics = result["arms"][arm]
    suggest: dict[str, tuple[float, str]] = {}
    notes: list[str] = []

    def add(knob: str, weight: float, why: str) -> None:
        old = suggest.get(knob, (0.0, ""))
        suggest[knob] = (old[0] + weight, (old[1] + "; " if old[1] else "") + why)

    bound = prof.get("bound", "unknown")
    if prof:
        notes.append(
            f"decode step {prof['decode_step_ms']:.1f} ms; weight-read roofline "
            f"{prof['roofline_step_ms']:.2f} ms ({prof['weight_bytes'] / 1e6:.1f} MB at "
            f"{prof['bandwidth_gb_s']:.1f} GB/s measured, {prof['roofline_fraction']:.0%} of it); "
            f"compute {prof['compute_step_ms']:.2f} ms at {prof['matmul_gflop_s']:.1f} GFLOP/s; "
            f"Python/framework overhead {prof['python_overhead_share']:.0%} of the step")
        notes.append(
            f"a verify step of {prof['tokens_per_verify_step']:.0f} tokens costs "
            f"{prof['verify_cost_ratio']:.2f}x a decode step; threads {prof['threads']} on "
            f"{prof['cpu_count']} cores, load average {prof['load_average']:.1f}")
        cheap_blocks = prof["verify_cost_ratio"] < 0.5 * max(prof["tokens_per_verify_step"], 1)
        if facts.get("workload.has_predictions") and not plan.use_predictions and cheap_blocks:
            add("serving.use_predictions", 6, "multi-token steps are nearly free and requests "
                "carry predictions")
        if bound in ("python-overhead", "op-overhead"):
            add("runtime.num_threads", 2, f"{bound}: fewer threads means fewer barriers")
            add("engine.use_cuda_graphs", 3, f"{bound}: replaying a graph skips dispatch")
            add("runtime.torch_compile", 2, f"{bound}: fusion cuts the number of ops")
            if plan.use_predictions:
                add("engine.max_draft_tokens", 2, f"{bound}: fewer, larger steps pay")
        if bound == "memory-bandwidth":
            add("model.dtype", 3, "bandwidth-bound: fewer bytes per weight")
        if bound == "compute" and plan.use_predictions:
            add("engine.num_draft_tokens", 2, "compute-bound: rejected draft tokens cost")
        if prof["load_average"] > prof["cpu_count"] and prof["threads"] > 1:
            add("runtime.num_threads", 4, f"load average {prof['load_average']:.1f} > "
                f"{prof['cpu_count']} cores: threads wait at barriers for descheduled peers")
    if metrics.get("num_chunks"):
        notes.append(f"TTFT per chunk p50 {metrics['chunk_ttft_p50_s'] * 1e3:.1f} ms, p99 "
                     f"{metrics['chunk_ttft_p99_s'] * 1e3:.1f} ms over {metrics['num_chunks']} "
                     f"chunks; {metrics['audio_s_per_s']:.2f} audio s per wall s")
    acc = metrics.get("acceptance_rate")
    if acc is not None:
        notes.append(f"prediction acceptance rate {acc:.0%}")
        if acc > 0.85:
            add("engine.max_draft_tokens", 2, f"acceptance {acc:.0%}: longer blocks pay")
            add("engine.num_draft_tokens", 1, f"acceptance {acc:.0%}")
        elif acc < 0.6:
            add("engine.num_draft_tokens", 2, f"acceptance {acc:.0%}: shorter blocks waste less")
            add("engine.adaptive_draft", 2, f"acceptance {acc:.0%}")
    if metrics.get("p99_ttft_s") and metrics.get("p99_latency_s"):
        share = metrics["p50_ttft_s"] / max(metrics["p50_latency_s"], 1e-9)
        notes.append(f"time to first token is {share:.0%} of request latency (median)")
        if share > 0.3:
            if facts.get("workload.shared_prefix") and plan.get(
                    "engine.enable_prefix_caching") is False:
                add("engine.enable_prefix_caching", 3, f"prefill is {share:.0%} of latency and "
                    f"prompts share a prefix")
            add("engine.max_num_batched_tokens", 1, "prefill-heavy")
    if facts.get("workload.concurrent"):
        add("engine.max_num_seqs", 1, "several requests in flight")
    return {"bound": bound, "notes": notes,
            "suggest": {k: {"weight": w, "why": why} for k, (w, why) in suggest.items()}}


def render_hints(hints: dict[str, Any]) -> str:
    lines = [f"# Evaluator hints: the step is bound by {hints['bound']}", ""]
    lines += [f"- {n}" for n in hints["notes"]]
    if hints["suggest"]:
        lines += ["", "Knobs this points at:"]
        for knob, s in sorted(hints["suggest"].items(), key=lambda kv: -kv[1]["weight"]):
            lines.append(f"- `{knob}` (+{s['weight']:.0f}): {s['why']}")
    return "\n".join(lines) + "\n"
