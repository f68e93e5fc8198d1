"""The outer loop: prepare, judge and measure the start plan, then rounds of
planner -> implementer -> judge -> evaluator -> decision, each handing off through files.

A policy (local or Claude) supplies the planner and the implementer; the judge, the evaluator
and the decision are the same code for every policy, so no policy can talk a candidate past
them. Every round ends with a classified outcome in MEMORY.md; accepted rounds are commits.
Running again with the same output folder resumes after the last completed round.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan
from vibekit_agents.roles.evaluator import Evaluator
from vibekit_agents.roles.judge import Judge, summarize
from vibekit_agents.roles.planner import decide
from vibekit_agents.sandbox import run_task
from vibekit_agents.scenario import Scenario
from vibekit_agents.server_py import render_server_py
from vibekit_agents.skills import load_skills
from vibekit_agents.workspace import ACCEPTED, NOT_BENEFICIAL, Workspace

FINAL_PASSES = 3  # passes of the final side-by-side run (its interval needs a few)


def generic_only(start: Plan, best: Plan, skills: dict[str, Any]) -> Plan:
    """The start plan with only the best plan's generic knobs (threads, batching, graphs,
    dtype: what any engine has) applied; what the primitives add is best over this."""
    generic = {k.name for s in skills.values() if s.kind == "generic" for k in s.knobs}
    changes = {k: b for k, (_, b) in start.diff(best).items() if k in generic and b is not None}
    return start.with_changes(changes)


class SynthesisError(RuntimeError):
    """The run cannot go on (a broken scenario, a start plan that fails its own checker)."""


@dataclass
class Candidate:
    change: str
    changes: dict[str, Any]
    path: Path
    screened: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""
    # Set when the evaluator's screening already showed the change does not pay: the round
    # ends as "not beneficial" without a judge run or a full benchmark.
    screened_out: str | None = None
    screen_ratio: float | None = None
    screened_outcome: str = NOT_BENEFICIAL


def scenario_digest(sc: Scenario) -> str:
    h = hashlib.sha256(sc.toml_path.read_bytes())
    for name in ("workload.py", "reference.py"):
        h.update((sc.root / name).read_bytes())
    return h.hexdigest()[:16]


class Synthesizer:
    def __init__(self, scenario: Scenario, out: str | Path, policy_factory: Any,
                 rounds: int = 20, budget_s: float = 480.0, progress: Any = print) -> None:
        out = Path(out).resolve()
        self.ctx = RunContext(scenario=scenario, out=out, workspace=Workspace(out / "workspace"),
                              skills=load_skills(), progress=progress)
        self.rounds = rounds
        self.budget_s = budget_s
        self.ctx.deadline = self.ctx.started + budget_s
        self.policy = policy_factory(self.ctx)
        self.ctx.policy_name = getattr(self.policy, "name", type(self.policy).__name__)
        self.judge = Judge(self.ctx)
        self.evaluator = Evaluator(self.ctx)
        self.round_times: list[float] = []
        self.arm_pass_s = 20.0  # one arm, one pass (measured in round 0)
        self.final_estimate = 30.0

    # -- setup --------------------------------------------------------------------------------

    def prepare(self) -> None:
        ctx, sc = self.ctx, self.ctx.scenario
        ctx.out.mkdir(parents=True, exist_ok=True)
        ctx.logs_dir.mkdir(exist_ok=True)
        digest = scenario_digest(sc)
        state_path = ctx.out / "state.json"
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            if state.get("scenario_root") != str(sc.root):
                raise SynthesisError(f"{ctx.out} holds a run of {state.get('scenario_root')}; "
                                     f"use another --out for {sc.root}")
            if state.get("digest") != digest:
                raise SynthesisError(f"{sc.root} changed since {ctx.out} was started; use "
                                     f"another --out (its rounds were measured on the old one)")
        else:
            state_path.write_text(json.dumps({"scenario_root": str(sc.root), "digest": digest,
                                              "scenario": sc.name}))
        if ctx.requests_path.is_file() and ctx.references_path.is_file() \
                and (ctx.data_dir / "facts.json").is_file():
            ctx.facts = json.loads((ctx.data_dir / "facts.json").read_text())
            ctx.say("reusing the prepared requests and references")
        else:
            ctx.say(f"preparing {sc.workload.num_requests}+{sc.workload.warmup_requests} requests "
                    f"and their references (scenario model {sc.model.source})")
            res = run_task("vibekit_agents.tasks.prepare:prepare",
                           dict(scenario_dir=str(sc.root), data_dir=str(ctx.data_dir),
                                judge_dir=str(ctx.judge_dir)),
                           timeout_s=max(60.0, self.budget_s), memory_limit_mb=8192,
                           log_path=ctx.logs_dir / "prepare.log")
            if not res.ok:
                raise SynthesisError(f"preparing the scenario failed ({res.status}): "
                                     f"{res.error}\n{res.traceback[-2000:]}")
            ctx.facts = res.value
            ctx.say(f"prepared in {res.wall_s:.1f} s on {ctx.facts['model.source']} "
                    f"({ctx.facts['model_note']}); workload mode "
                    f"{ctx.facts.get('workload_mode') or '-'}")
        ws = ctx.workspace
        if ws.exists():
            dropped = ws.clean_incomplete()
            done = [e["round"] for e in ws.memory()]
            ctx.say(f"resuming the workspace: {len(done)} completed rounds, "
                    f"{sum(e['outcome'] == ACCEPTED for e in ws.memory())} accepted"
                    + (f"; discarded interrupted round(s) {dropped}" if dropped else ""))
        else:
            start = Plan.start(sc, ctx.facts["model.source"])
            ws.create(sc, start.dumps(), {k: v for k, v in ctx.skills.items()
                                          if not sc.search.primitives
                                          or k in sc.search.primitives})
            (ws.root / "start.toml").write_text(start.dumps())

    # -- rounds -------------------------------------------------------------------------------

    def best_speedup(self) -> float:
        for e in reversed(self.ctx.workspace.memory()):
            if e["outcome"] == ACCEPTED:
                return float(e.get("speedup") or 1.0)
        return 1.0

    def round_zero(self) -> None:
        ctx, ws = self.ctx, self.ctx.workspace
        rd = ws.round_dir(0)
        cand = rd / "candidate.toml"
        shutil.copy(ws.root / "start.toml", cand)
        ctx.say("round 0: judging the start plan")
        verdict = self.judge.judge(rd, cand)
        if not verdict["passed"]:
            raise SynthesisError(f"the start plan fails the judge ({verdict['outcome']}): "
                                 f"{'; '.join(verdict['reasons'])[:1500]}\nThe scenario's "
                                 f"reference, checker or start plan disagree; fix the scenario.")
        t0 = time.monotonic()
        ev = self.evaluator.evaluate(rd, {"start": cand}, "start", "start")
        if ev.get("status") != "ok":
            raise SynthesisError(f"benchmarking the start plan failed: {ev.get('error')}")
        if ev.get("integrity") or ev.get("checker_failures"):
            raise SynthesisError(f"the start plan fails the evaluator's integrity checks: "
                                 f"{ev.get('integrity')} {ev.get('checker_failures')}")
        self.arm_pass_s = time.monotonic() - t0
        self.final_estimate = self._final_estimate()
        ctx.reserve_s = self.final_estimate
        metric = ev["arms"]["start"][ctx.scenario.metric.kind]
        entry = self._entry(0, "start plan", {}, ACCEPTED, "the plan the search starts from",
                            metric, 1.0, 1.0, verdict, ev)
        shown = f"{ctx.scenario.metric.label} {ctx.scenario.metric.format(metric)}"
        self._finish_round(rd, entry, accepted=True, message=f"round 0: start plan ({shown})")
        ctx.say(f"round 0  start plan: judge passed, {shown}; "
                f"step bound by {ev['hints']['bound']}")

    def run_round(self, n: int) -> bool:
        """One round; False when the policy has nothing left to try."""
        ctx, ws, sc = self.ctx, self.ctx.workspace, self.ctx.scenario
        rd = ws.round_dir(n)
        t0 = time.monotonic()
        best_path = rd / "best.toml"
        shutil.copy(ws.root / "plan.toml", best_path)
        cand = self.policy.propose(n, rd)
        if cand is None:
            shutil.rmtree(rd)
            return False
        ctx.say(f"round {n}: {cand.change}")
        if cand.screened_out:
            entry = {"round": n, "change": cand.change, "changes": cand.changes,
                     "outcome": cand.screened_outcome, "reason": cand.screened_out,
                     "metric": None,
                     "ratio": None, "speedup": None, "judge": "not run (screened out)",
                     "screened": cand.screened, "screen_ratio": cand.screen_ratio}
            self._finish_round(rd, entry, False, "")
            self.round_times.append(time.monotonic() - t0)
            ctx.say(f"round {n}  {cand.change}: {cand.screened_outcome} ({cand.screened_out}) "
                    f"[{self.round_times[-1]:.0f} s]")
            return True
        verdict = self.judge.judge(rd, cand.path)
        verdict = self.policy.review_judgement(n, rd, verdict)
        ev = None
        if verdict["passed"]:
            ev = self.evaluator.evaluate(rd, {"best": best_path, "candidate": cand.path},
                                         "best", "candidate")
            if ev.get("status") == "ok":
                self.policy.review_evaluation(n, rd, ev)
        outcome, reason, ratio = decide(verdict, ev, "candidate", sc.metric.min_improvement,
                                        sc.metric.higher_is_better)
        metric = ev["arms"]["candidate"][sc.metric.kind] if ev and ev.get("arms") else None
        speedup = self.best_speedup() * ratio if ratio else None
        entry = self._entry(n, cand.change, cand.changes, outcome, reason, metric, ratio,
                            speedup, verdict, ev)
        entry["screened"] = cand.screened
        best = Plan.load(best_path)
        entry["previous"] = {k: best.get(k) for k in cand.changes}
        if cand.notes:
            entry["notes"] = cand.notes
        accepted = outcome == ACCEPTED
        if accepted:
            shutil.copy(cand.path, ws.root / "plan.toml")
        self._finish_round(rd, entry, accepted, f"round {n}: {cand.change} "
                           f"(x{ratio or 0:.2f}, speedup x{speedup or 0:.2f} over the start)")
        self.round_times.append(time.monotonic() - t0)
        shown = f"x{ratio:.2f} vs best" if ratio else summarize(verdict)[:120]
        ctx.say(f"round {n}  {cand.change}: {outcome.upper() if accepted else outcome} "
                f"({shown}" + (f", {sc.metric.label} {sc.metric.format(metric)}, speedup "
                               f"x{speedup:.2f}" if metric and speedup else "")
                + f") [{self.round_times[-1]:.0f} s]")
        return True

    def _entry(self, n: int, change: str, changes: dict, outcome: str, reason: str,
               metric: float | None, ratio: float | None, speedup: float | None,
               verdict: dict, ev: dict | None) -> dict[str, Any]:
        entry = {"round": n, "change": change, "changes": changes, "outcome": outcome,
                 "reason": reason, "metric": metric,
                 "metric_text": self.ctx.scenario.metric.format(metric), "ratio": ratio,
                 "speedup": speedup, "judge": summarize(verdict)}
        if ev and ev.get("hints"):
            entry["evaluator"] = f"bound: {ev['hints']['bound']}; " + "; ".join(
                ev["hints"]["notes"])
            entry["report"] = {k: ev["arms"][list(ev["arms"])[-1]].get(k)
                               for k in self.ctx.scenario.metric.report}
        return entry

    def _finish_round(self, rd: Path, entry: dict, accepted: bool, message: str) -> None:
        """outcome.json, then memory (the round now counts as done), then the commit."""
        ws = self.ctx.workspace
        entry["elapsed_s"] = round(self.ctx.elapsed(), 1)
        (rd / "outcome.json").write_text(json.dumps(entry, indent=1, default=str))
        ws.record(entry, self.ctx.scenario.name)
        if accepted:
            ws.commit(message)

    # -- budget -------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.budget_s - self.ctx.elapsed()

    def _final_arms(self) -> dict[str, Path]:
        """start, the plan after each accepted step, the start with only the best plan's
        generic knobs, and the best plan: one final side-by-side run measures them all."""
        ws = self.ctx.workspace
        arms: dict[str, Path] = {"start": ws.root / "start.toml"}
        seen = {Plan.load(arms["start"]).digest()}
        steps = [e for e in ws.memory() if e["outcome"] == ACCEPTED and e["round"] > 0]
        for i, e in enumerate(steps, 1):
            path = ws.round_dir(e["round"]) / "candidate.toml"
            if path.is_file() and Plan.load(path).digest() not in seen:
                arms[f"step{i}"] = path
                seen.add(Plan.load(path).digest())
        best = Plan.load(ws.root / "plan.toml")
        generic = generic_only(Plan.load(arms["start"]), best, self.ctx.skills)
        # The arm that holds only the generic knobs: a step when one equals it, else its own.
        self.generic_arm = next((a for a, p in arms.items()
                                 if Plan.load(p).digest() == generic.digest()), None)
        if self.generic_arm is None and generic.digest() != best.digest():
            path = ws.root / "rounds" / "generic.toml"
            generic.save(path)
            arms["generic"] = path
            self.generic_arm = "generic"
            seen.add(generic.digest())
        if best.digest() not in seen:
            arms["best"] = ws.root / "plan.toml"
        return arms

    def _final_estimate(self) -> float:
        """Seconds to keep for the final run: its passes of the start arm (measured in round 0)
        dominate; every accepted step adds an arm that is, by construction, faster."""
        steps = sum(e["outcome"] == ACCEPTED for e in self.ctx.workspace.memory()) - 1
        passes = 2 if self.ctx.scenario.metric.kind == "median_tok_s" else FINAL_PASSES
        return 1.3 * self.arm_pass_s * passes * (1 + 0.5 * max(steps, 1))

    def can_start_round(self) -> bool:
        self.final_estimate = self._final_estimate()
        est = statistics.median(self.round_times) if self.round_times else self.final_estimate
        return self.remaining() > est + self.final_estimate

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        ctx = self.ctx
        self.prepare()
        memory = ctx.workspace.memory()
        if not any(e["round"] == 0 for e in memory):
            self.round_zero()
            memory = ctx.workspace.memory()
        else:
            start_ev = ctx.workspace.round_dir(0) / "eval.json"
            if start_ev.is_file():
                self.arm_pass_s = json.loads(start_ev.read_text()).get("wall_s", 20)
            self.final_estimate = self._final_estimate()
        ctx.reserve_s = self.final_estimate
        n = max(e["round"] for e in memory) + 1
        stop = "rounds"
        while n <= self.rounds:
            if not self.can_start_round():
                stop = "budget"
                ctx.say(f"stopping: {self.remaining():.0f} s of budget left, not enough for "
                        f"another round and the final check")
                break
            if not self.run_round(n):
                stop = "backlog"
                ctx.say("stopping: nothing left to try in the backlog")
                break
            n += 1
        return self.finish(stop)

    def finish(self, stop: str) -> dict[str, Any]:
        from vibekit_agents.report import write_outputs

        ctx, ws = self.ctx, self.ctx.workspace
        best = Plan.load(ws.root / "plan.toml")
        start = Plan.load(ws.root / "start.toml")
        final = None
        if best.digest() != start.digest():
            arms = self._final_arms()
            if "best" not in arms:  # the last step is the best plan
                last = [a for a in arms if a.startswith("step")][-1]
                arms["best"] = arms.pop(last)
            ctx.say(f"final check: {', '.join(arms)} side by side in one run")
            fd = ctx.out / "final"
            fd.mkdir(exist_ok=True)
            ctx.reserve_s, ctx.deadline = 0.0, None  # the final check is what the budget kept
            # Paired samples for an interval: per request at concurrency 1 (median_tok_s: two
            # passes of the requests), per pass and level otherwise (FINAL_PASSES passes).
            passes = 2 if ctx.scenario.metric.kind == "median_tok_s" else FINAL_PASSES
            final = self.evaluator.evaluate(fd, arms, "start", "best",
                                            timeout_s=max(self.final_estimate * 3, 60.0),
                                            max_passes=passes, min_passes=passes)
            final["arm_plans"] = {a: Plan.load(p).data for a, p in arms.items()}
            generic = getattr(self, "generic_arm", None)
            final["generic_arm"] = "best" if generic not in arms else generic
        uncommitted = ws.git("status", "--porcelain", check=False).strip()
        if uncommitted:
            last = max((e["round"] for e in ws.memory()), default=0)
            ws.commit(f"memory: attempts up to round {last} (no plan change)")
        result = write_outputs(ctx, best, start, final, stop,
                               render_server_py(best, ctx.scenario.name))
        ctx.say(f"done: best plan {result['speedup_text']} over the start; report at "
                f"{ctx.out / 'report.md'}")
        return result
