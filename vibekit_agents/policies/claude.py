"""The Claude policy: each role of each round is a fresh conversation through the `anthropic`
SDK, with tools confined to the workspace. Roles hand off only through workspace files.

  planner       reads MEMORY.md, BACKLOG.md, plan.toml, the last hints, the skills; calls
                submit_proposal (writes rounds/round-NN/proposal.json)
  implementer   writes rounds/round-NN/candidate.toml (and extension code under extensions/,
                see EXTENSIONS.md); calls validate_plan and submit_candidate
  judge         after the mechanical judge (sandboxed run, forward audit, scenario checker) has
                written judge.json, reviews the candidate and its diff; it can only confirm or
                reject - a mechanical failure is never overturned, and nothing the implementer
                said reaches it: transcripts are written outside the workspace (OUT/transcripts/)
                and its file tools hide the round's proposal and implementer notes

Run it against any Anthropic-compatible endpoint: `ANTHROPIC_API_KEY=... ANTHROPIC_BASE_URL=
http://host:port vibekit-synthesize SCENARIO --planner claude --claude-model NAME`.
  evaluator     after the benchmark has written eval.json, reads it and the profile and writes
                notes into hints.md for the next planner

Each role runs in its own process (vibekit_agents/policies/role_process.py) on its own copy of
the workspace: the judge's copy has no proposal, no implementer notes and no transcripts, so
there is nothing of theirs to read; a role's writes reach the workspace only under the paths it
may write (copied back by the parent), and its terminal tool's arguments come back as a small
result file that the parent checks again before acting on it.

The API key reaches a role's process through its environment only; it is not written to the
workspace, a view, a spec, the transcripts or any log, and the sandboxed benchmark children
never see it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan, PlanError
from vibekit_agents.policies.role_process import RoleSpec, copy_back, make_view, run_role
from vibekit_agents.roles.planner import write_proposal
from vibekit_agents.workspace import CHEATING, CHECKER_FAILED

_COMMON = """You are one role in vibekit-synthesize, which assembles and tunes an LLM serving
stack out of vibekit primitives for one scenario. You work only through tools on a workspace
folder (a git repository). Its files: plan.toml (the best plan so far: [model], [engine] =
vibekit Engine options, [serving] use_predictions, [runtime] num_threads, optional [extension]
module), MEMORY.md (every attempt and its outcome class), BACKLOG.md (ranked ideas with
evidence), EXTENSIONS.md (the extension point for code), skills/<name>/SKILL.md and knobs.toml
(techniques, their knobs and pitfalls), rounds/round-NN/ (each round's proposal, candidate,
judge.json, eval.json, hints.md). Be brief; act through the tools."""

_ROLES = {
    "planner": """You are the PLANNER. Pick ONE change for this round from the backlog, the
evaluator's hints of the best plan and MEMORY.md. Do not repeat a change whose outcome was
'not beneficial for this workload', 'checker failed', 'crashed', 'timed out' or 'rejected:
cheating'; a change that failed as an 'implementation bug' may be retried with a fix. Finish by
calling submit_proposal with the knob values to set (dotted plan paths such as
"engine.num_draft_tokens") or an empty object when the change is code (describe it).""",
    "implementer": """You are the IMPLEMENTER. Turn rounds/{round}/proposal.json into a
candidate plan at rounds/{round}/candidate.toml: start from plan.toml and apply the proposal.
Code goes in extensions/<name>.py behind the documented extension point (EXTENSIONS.md) and is
named by [extension] module. Never cache outputs, skip the model, read references, or touch
the workload: a separate judge rejects that. Call validate_plan, then submit_candidate.""",
    "judge": """You are the ACCURACY JUDGE, in a fresh context. The mechanical judge has run the
candidate in a sandbox (forward audit, repeated and streamed request) and the scenario checker;
run_checker returns its result. Review the candidate with show_diff and read_file for cheating
the scan may miss: outputs cached by prompt, skipping the model forward, reading reference
outputs, canned text, buffered streaming, changing the workload or load levels. You can only
confirm or reject. Call verdict once.""",
    "evaluator": """You are the PERFORMANCE EVALUATOR, in a fresh context. run_benchmark returns
the side-by-side measurement of the candidate against the best plan; run_profile returns what
bounds a step (bandwidth roofline, compute, Python/op overhead). Write short, concrete notes for
the next planner with write_hints: what bounds the step now and which knobs or code that points
at.""",
}


class ClaudePolicy:
    name = "claude"

    def __init__(self, ctx: RunContext, api_key: str, model: str,
                 base_url: str | None = None) -> None:
        self.ctx, self.model, self.base_url = ctx, model, base_url
        self._api_key = api_key

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.ctx.workspace.root))

    def _run(self, role: str, round_dir: Path, user: str, writable: list[str],
             hidden: tuple[str, ...] = (), static: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
        """One role, one fresh conversation, in its own process on its own view."""
        root = self.ctx.workspace.root
        work = self.ctx.out / "roles" / round_dir.name
        view = make_view(root, work / f"{role}-view", hidden)
        spec = RoleSpec(
            role=role, model=self.model,
            system=_COMMON + "\n\n" + _ROLES[role].format(round=round_dir.name), user=user,
            view=str(view), round_dir=self._rel(round_dir),
            # Transcripts live outside the workspace and every view: no role reads another's.
            transcript=str(self.ctx.out / "transcripts" / round_dir.name / f"{role}.json"),
            result=str(work / f"{role}.result.json"), base_url=self.base_url,
            writable=writable, static=static or [])
        try:
            result = run_role(spec, self._api_key, work)
            result["written"] = copy_back(view, root, writable)
        finally:
            shutil.rmtree(view, ignore_errors=True)
        return result

    # -- planner + implementer ----------------------------------------------------------------

    def propose(self, round_no: int, round_dir: Path) -> Any:
        from vibekit_agents.loop import Candidate

        ws, sc = self.ctx.workspace, self.ctx.scenario
        rd = self._rel(round_dir)
        accepted = [e for e in ws.memory() if e["outcome"] == "accepted"]
        hints = f"rounds/round-{accepted[-1]['round']:02d}/hints.md" if accepted else "-"
        skills = ", ".join(sorted(p.name for p in (ws.root / "skills").iterdir()
                                  if p.is_dir())) if (ws.root / "skills").is_dir() else "-"
        said = self._run("planner", round_dir, (
            f"Round {round_no} of scenario {sc.name}: {sc.description.strip()}\nMetric: "
            f"{sc.metric.label} ({sc.metric.direction}; every ratio the harness reports is a "
            f"gain, > 1 better). Workload facts: {json.dumps(self._facts())}.\nThe best plan "
            f"is plan.toml; its profile and the evaluator's hints: {hints}. Skills: {skills}.\n"
            f"Read what you need (MEMORY.md, BACKLOG.md first), then call submit_proposal."),
            writable=[f"{rd}/proposal.json", f"{rd}/proposal.md", "BACKLOG.md"])
        args = said.get("args") or {}
        knobs = args.get("knobs") or {}
        change = args.get("change")
        # Checked again here: the child's answer is data, not trusted code.
        if (said.get("finished") != "submit_proposal" or not isinstance(change, str)
                or not change.strip() or not isinstance(knobs, dict)
                or any("." not in str(k) for k in knobs)):
            return None
        proposal = {"round": round_no, "change": change.strip()[:200], "knobs": knobs,
                    "evidence": [str(e)[:1000] for e in args.get("evidence") or []][:1]}
        write_proposal(round_dir, proposal)

        cand_path = round_dir / "candidate.toml"
        done = self._run("implementer", round_dir,
                         f"Implement {rd}/proposal.json as {rd}/candidate.toml.",
                         writable=[f"{rd}/candidate.toml", f"{rd}/implementer.md",
                                   "extensions"])
        notes = str((done.get("args") or {}).get("notes", ""))[:1000] \
            if done.get("finished") == "submit_candidate" else ""
        changes = dict(knobs)
        try:
            best = Plan.load(round_dir / "best.toml")
            cand = Plan.load(cand_path)
            changes = {k: b for k, (_, b) in best.diff(cand).items()}
        except PlanError:
            pass  # the judge classifies a missing or broken candidate as an implementation bug
        return Candidate(proposal["change"], changes, cand_path, notes=notes)

    # -- judge and evaluator reviews ----------------------------------------------------------

    def review_judgement(self, round_no: int, round_dir: Path, verdict: dict) -> dict:
        ws = self.ctx.workspace
        best = (round_dir / "best.toml").read_text()
        cand_file = round_dir / "candidate.toml"
        cand = cand_file.read_text() if cand_file.is_file() else "(missing)"
        ext = ws.git("status", "--porcelain", "--", "extensions", check=False)
        diff = ws.git("diff", "--", "extensions", check=False)
        shown = (f"--- best.toml\n{best}\n--- candidate.toml\n{cand}\n--- extensions "
                 f"changed:\n{ext}\n{diff}")
        # The judge's view: the diff, the plans, the extension code and the mechanical judge's
        # artifacts; not what the planner or the implementer wrote about the change.
        hidden = tuple(f"{self._rel(round_dir)}/{n}" for n in (
            "proposal.json", "proposal.md", "implementer.md", "transcripts"))
        static = [
            {"name": "run_checker", "description": "The mechanical judge's result for this "
             "candidate.", "result": json.loads(json.dumps(verdict, default=str))},
            {"name": "show_diff", "description": "The candidate plan against the best plan, "
             "and extension code.", "result": shown}]
        res = self._run("judge", round_dir, f"Judge the candidate of round {round_no}: "
                        f"{self._rel(round_dir)}/candidate.toml.", writable=[], hidden=hidden,
                        static=static)
        said: dict[str, Any] = {}
        if res.get("finished") == "verdict":
            a = res.get("args") or {}
            said = {"passed": a.get("passed") is True, "category": str(a.get("category", "ok")),
                    "reason": str(a.get("reason", ""))[:1000]}
        verdict = dict(verdict)
        verdict["review"] = said or {"note": "the judge conversation gave no verdict"
                                     + (f" ({res['error']})" if res.get("error") else "")}
        if verdict["passed"] and said and not said.get("passed"):
            verdict["passed"] = False
            verdict["outcome"] = CHEATING if said.get("category") == "cheating" else CHECKER_FAILED
            verdict["reasons"] = [f"judge review: {said.get('reason', '')}"] + verdict["reasons"]
        (round_dir / "judge.json").write_text(json.dumps(verdict, indent=1, default=str))
        return verdict

    def review_evaluation(self, round_no: int, round_dir: Path, evaluation: dict) -> None:
        summary = {k: evaluation.get(k) for k in ("metric", "ratio_is", "arms", "ratios")}
        static = [
            {"name": "run_benchmark", "description": "Side-by-side metrics of the candidate and "
             "the best plan.", "result": json.loads(json.dumps(summary, default=str))},
            {"name": "run_profile", "description": "What bounds the candidate's step, and the "
             "hints so far.", "result": json.loads(json.dumps(
                 {"profile": evaluation.get("profile"), "hints": evaluation.get("hints")},
                 default=str))}]
        self._run("evaluator", round_dir,
                  f"Evaluate round {round_no}'s candidate ({self._rel(round_dir)}).",
                  writable=[f"{self._rel(round_dir)}/hints.md"], static=static)

    def _facts(self) -> dict[str, Any]:
        return {k: v for k, v in self.ctx.facts.items() if k.startswith(("workload.", "device.",
                                                                          "checker.", "model."))}


def claude_policy_factory(api_key: str, model: str, base_url: str | None = None) -> Any:
    """A policy factory for Synthesizer. The key goes only into each role process's
    environment."""
    import anthropic  # noqa: F401  (fail here, not in the first role's process)

    def factory(ctx: RunContext) -> ClaudePolicy:
        return ClaudePolicy(ctx, api_key, model, base_url)

    return factory
