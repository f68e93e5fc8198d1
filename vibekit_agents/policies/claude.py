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
http://host:port vibekit-synthesize SCENARIO --planner claude --claude-model NAME`. All roles
run in the synthesizer's process (one fresh conversation each); separate processes per role
are not implemented.
  evaluator     after the benchmark has written eval.json, reads it and the profile and writes
                notes into hints.md for the next planner

The API key is handed to the SDK client only; it is not written to the workspace, the
transcripts or any log, and the sandboxed children never see it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan, PlanError
from vibekit_agents.policies.tools import Tool, ToolError, WorkspaceFiles, _obj, as_text
from vibekit_agents.roles.planner import write_proposal
from vibekit_agents.workspace import CHEATING, CHECKER_FAILED

MAX_TURNS = 16

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


class Conversation:
    """One role's conversation: messages.create in a tool-use loop until a terminal tool."""

    def __init__(self, client: Any, model: str, role: str, system: str, tools: list[Tool],
                 transcript: Path, max_tokens: int = 4096) -> None:
        self.client, self.model, self.role = client, model, role
        self.system, self.tools, self.transcript = system, tools, transcript
        self.max_tokens = max_tokens
        self.by_name = {t.name: t for t in tools}
        self.finished: str | None = None

    def run(self, user: str) -> bool:
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        try:
            for _ in range(MAX_TURNS):
                resp = self.client.messages.create(
                    model=self.model, max_tokens=self.max_tokens, system=self.system,
                    tools=[t.spec() for t in self.tools], messages=messages)
                content = [b.model_dump(exclude_none=True) for b in resp.content]
                messages.append({"role": "assistant", "content": content})
                calls = [b for b in resp.content if b.type == "tool_use"]
                if not calls:
                    break
                results = [self._call(b) for b in calls]
                messages.append({"role": "user", "content": results})
                if self.finished:
                    break
        except Exception as exc:  # an API failure ends this role's turn, not the run
            messages.append({"role": "error", "content": f"{type(exc).__name__}: {exc}"[:500]})
        self.transcript.parent.mkdir(parents=True, exist_ok=True)
        self.transcript.write_text(json.dumps({"role": self.role, "model": self.model,
                                               "system": self.system, "messages": messages},
                                              indent=1, default=str))
        return self.finished is not None

    def _call(self, block: Any) -> dict[str, Any]:
        tool = self.by_name.get(block.name)
        try:
            if tool is None:
                raise ToolError(f"no tool named {block.name!r}")
            out = tool.run(**(block.input or {}))
            if tool.terminal:
                self.finished = tool.name
            return {"type": "tool_result", "tool_use_id": block.id, "content": as_text(out)}
        except (ToolError, TypeError, ValueError) as exc:
            return {"type": "tool_result", "tool_use_id": block.id, "content": str(exc),
                    "is_error": True}


class ClaudePolicy:
    name = "claude"

    def __init__(self, ctx: RunContext, client: Any, model: str) -> None:
        self.ctx, self.client, self.model = ctx, client, model

    def _conversation(self, role: str, round_dir: Path, tools: list[Tool]) -> Conversation:
        system = _COMMON + "\n\n" + _ROLES[role].format(round=round_dir.name)
        # NOTE: transcripts live outside the workspace, so no role's file tools reach another
        # role's conversation (the judge never reads what the implementer said).
        return Conversation(self.client, self.model, role, system, tools,
                            self.ctx.out / "transcripts" / round_dir.name / f"{role}.json")

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.ctx.workspace.root))

    # -- planner + implementer ----------------------------------------------------------------

    def propose(self, round_no: int, round_dir: Path) -> Any:
        from vibekit_agents.loop import Candidate

        ws, sc = self.ctx.workspace, self.ctx.scenario
        proposal: dict[str, Any] = {}

        def submit_proposal(change: str, knobs: dict | None = None, rationale: str = "") -> str:
            if not isinstance(change, str) or not change.strip():
                raise ToolError("change must describe the change in a few words")
            knobs = knobs or {}
            if not isinstance(knobs, dict) or any("." not in k for k in knobs):
                raise ToolError("knobs must map dotted plan paths to values")
            proposal.update(round=round_no, change=change.strip()[:200], knobs=knobs,
                            evidence=[rationale[:1000]] if rationale else [])
            write_proposal(round_dir, proposal)
            return "proposal recorded"

        files = WorkspaceFiles(ws.root, writable=(self._rel(round_dir), "BACKLOG.md"))
        tools = files.tools() + [Tool(
            "submit_proposal", "Record this round's single change and end your turn.",
            _obj({"change": {"type": "string"}, "knobs": {"type": "object"},
                  "rationale": {"type": "string"}}, ["change"]), submit_proposal, terminal=True)]
        accepted = [e for e in ws.memory() if e["outcome"] == "accepted"]
        hints = f"rounds/round-{accepted[-1]['round']:02d}/hints.md" if accepted else "-"
        skills = ", ".join(sorted(p.name for p in (ws.root / "skills").iterdir()
                                  if p.is_dir())) if (ws.root / "skills").is_dir() else "-"
        self._conversation("planner", round_dir, tools).run(
            f"Round {round_no} of scenario {sc.name}: {sc.description.strip()}\nMetric: "
            f"{sc.metric.label}. Workload facts: {json.dumps(self._facts())}.\nThe best plan "
            f"is plan.toml; its profile and the evaluator's hints: {hints}. Skills: {skills}.\n"
            f"Read what you need (MEMORY.md, BACKLOG.md first), then call submit_proposal.")
        if not proposal:
            return None

        cand_path = round_dir / "candidate.toml"
        submitted: dict[str, Any] = {}

        def validate_plan(path: str) -> str:
            try:
                Plan.load(files_i.resolve(path))
            except PlanError as exc:
                raise ToolError(str(exc)) from None
            return "valid plan"

        def submit_candidate(path: str = self._rel(cand_path), notes: str = "") -> str:
            p = files_i.resolve(path)
            validate_plan(path)
            if p != cand_path:
                cand_path.write_text(p.read_text())
            submitted["notes"] = notes[:1000]
            return "candidate submitted"

        files_i = WorkspaceFiles(ws.root, writable=(self._rel(round_dir), "extensions"))
        tools = files_i.tools() + [
            Tool("validate_plan", "Check that a plan file parses and validates.",
                 _obj({"path": {"type": "string"}}, ["path"]), validate_plan),
            Tool("submit_candidate", "Submit the candidate plan and end your turn.",
                 _obj({"path": {"type": "string"}, "notes": {"type": "string"}}, []),
                 submit_candidate, terminal=True)]
        self._conversation("implementer", round_dir, tools).run(
            f"Implement {self._rel(round_dir)}/proposal.json as {self._rel(cand_path)}.")
        changes = dict(proposal.get("knobs") or {})
        try:
            best = Plan.load(round_dir / "best.toml")
            cand = Plan.load(cand_path)
            changes = {k: b for k, (_, b) in best.diff(cand).items()}
        except PlanError:
            pass  # the judge classifies a missing or broken candidate as an implementation bug
        return Candidate(proposal["change"], changes, cand_path,
                         notes=submitted.get("notes", ""))

    # -- judge and evaluator reviews ----------------------------------------------------------

    def review_judgement(self, round_no: int, round_dir: Path, verdict: dict) -> dict:
        ws = self.ctx.workspace
        said: dict[str, Any] = {}

        def show_diff() -> str:
            best = (round_dir / "best.toml").read_text()
            cand_file = round_dir / "candidate.toml"
            cand = cand_file.read_text() if cand_file.is_file() else "(missing)"
            ext = ws.git("status", "--porcelain", "--", "extensions", check=False)
            diff = ws.git("diff", "--", "extensions", check=False)
            return (f"--- best.toml\n{best}\n--- candidate.toml\n{cand}\n--- extensions "
                    f"changed:\n{ext}\n{diff}")

        def give_verdict(passed: bool, category: str = "ok", reason: str = "") -> str:
            said.update(passed=bool(passed), category=category, reason=reason[:1000])
            return "verdict recorded"

        # The judge's view: the diff, the plans, the extension code and the mechanical judge's
        # artifacts; not what the planner or the implementer wrote about the change.
        hidden = tuple(f"{self._rel(round_dir)}/{n}" for n in (
            "proposal.json", "proposal.md", "implementer.md", "transcripts"))
        tools = WorkspaceFiles(ws.root, hidden=hidden).tools() + [
            Tool("run_checker", "The mechanical judge's result for this candidate.",
                 _obj({}, []), lambda: verdict),
            Tool("show_diff", "The candidate plan against the best plan, and extension code.",
                 _obj({}, []), show_diff),
            Tool("verdict", "Confirm (passed=true) or reject; category 'cheating' or "
                 "'incorrect' when rejecting.",
                 _obj({"passed": {"type": "boolean"}, "category": {"type": "string"},
                       "reason": {"type": "string"}}, ["passed"]), give_verdict, terminal=True)]
        self._conversation("judge", round_dir, tools).run(
            f"Judge the candidate of round {round_no}: {self._rel(round_dir)}/candidate.toml.")
        verdict = dict(verdict)
        verdict["review"] = said or {"note": "the judge conversation gave no verdict"}
        if verdict["passed"] and said and not said.get("passed"):
            verdict["passed"] = False
            verdict["outcome"] = CHEATING if said.get("category") == "cheating" else CHECKER_FAILED
            verdict["reasons"] = [f"judge review: {said.get('reason', '')}"] + verdict["reasons"]
        (round_dir / "judge.json").write_text(json.dumps(verdict, indent=1, default=str))
        return verdict

    def review_evaluation(self, round_no: int, round_dir: Path, evaluation: dict) -> None:
        ws = self.ctx.workspace

        def write_hints(text: str) -> str:
            with open(round_dir / "hints.md", "a") as f:
                f.write("\n## Evaluator notes\n\n" + text.strip()[:4000] + "\n")
            return "hints written"

        summary = {k: evaluation.get(k) for k in ("metric", "arms", "ratios")}
        tools = WorkspaceFiles(ws.root).tools() + [
            Tool("run_benchmark", "Side-by-side metrics of the candidate and the best plan.",
                 _obj({}, []), lambda: summary),
            Tool("run_profile", "What bounds the candidate's step, and the hints so far.",
                 _obj({}, []), lambda: {"profile": evaluation.get("profile"),
                                        "hints": evaluation.get("hints")}),
            Tool("write_hints", "Append your notes to this round's hints.md and end your turn.",
                 _obj({"text": {"type": "string"}}, ["text"]), write_hints, terminal=True)]
        self._conversation("evaluator", round_dir, tools).run(
            f"Evaluate round {round_no}'s candidate ({self._rel(round_dir)}).")

    def _facts(self) -> dict[str, Any]:
        return {k: v for k, v in self.ctx.facts.items() if k.startswith(("workload.", "device.",
                                                                          "checker.", "model."))}


def claude_policy_factory(api_key: str, model: str, base_url: str | None = None) -> Any:
    """A policy factory for Synthesizer; the key lives only inside the SDK client."""
    import anthropic

    client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=1,
                                 timeout=300.0)

    def factory(ctx: RunContext) -> ClaudePolicy:
        return ClaudePolicy(ctx, client, model)

    return factory
