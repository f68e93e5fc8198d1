"""The offline policy: the local planner ranks knobs from the skills, the evaluator's hints and
memory; the evaluator screens the knob's candidate values next to the best plan at the
scenario's load levels (successive halving when there are several), and a value whose
interval lies below the threshold ends the round as not beneficial without a judge run (one
whose timed outputs or forward audit fail, as cheating); otherwise the local implementer
writes the winning plan for the judge and the full, noise-aware benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.roles.evaluator import Evaluator
from vibekit_agents.roles.implementer import LocalImplementer
from vibekit_agents.roles.planner import LocalPlanner
from vibekit_agents.workspace import CHEATING, CHECKER_FAILED, NOT_BENEFICIAL


class LocalPolicy:
    name = "local"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.planner = LocalPlanner(ctx)
        self.implementer = LocalImplementer(ctx)
        self.evaluator = Evaluator(ctx)

    def propose(self, round_no: int, round_dir: Path) -> Any:
        """planner -> proposal.json -> implementer -> arms/ -> evaluator screen -> screen.json
        -> planner's choice -> implementer -> candidate.toml (each step reads the last's file)."""
        from vibekit_agents.loop import Candidate

        proposal = self.planner.propose(round_no, round_dir)
        if proposal is None:
            return None
        knob = proposal["knob"]
        arm_values = self.implementer.implement(round_dir)
        if not arm_values:
            path = round_dir / "candidate.toml"
            path.write_text(f"# no valid plan for {knob}; see implementer.md\n[bad]\n")
            return Candidate(proposal["change"], {knob: proposal["values"][0]}, path)
        self.ctx.say(f"round {round_no}: screening {knob} in "
                     f"{', '.join(map(str, arm_values.values()))}"
                     + (" (successive halving)" if len(arm_values) > 1 else ""))
        arms = {"best": round_dir / "best.toml"}
        arms.update({a: round_dir / "arms" / f"{a}.toml" for a in arm_values})
        self.evaluator.screen(round_dir, arms, "best")  # one value: a quick paired probe
        proposal = self.planner.choose(round_dir)
        value, score = proposal["chosen"], proposal.get("chosen_score")
        arm_path = round_dir / "arms" / f"{proposal['chosen_arm']}.toml"
        if proposal.get("chosen_integrity"):
            return Candidate(proposal["change"], {knob: value}, arm_path,
                             screened=proposal.get("screened", []),
                             screened_out="in the screen's timed run: "
                             + "; ".join(proposal["chosen_integrity"])[:400],
                             screen_ratio=score, screened_outcome=CHEATING)
        if proposal.get("chosen_checker_failures"):
            return Candidate(proposal["change"], {knob: value}, arm_path,
                             screened=proposal.get("screened", []),
                             screened_out="in the screen's timed run: "
                             + "; ".join(proposal["chosen_checker_failures"])[:400],
                             screen_ratio=score, screened_outcome=CHECKER_FAILED)
        if proposal.get("chosen_decision") == "not better":
            shown = proposal.get("chosen_interval")
            if len(arm_values) > 1:
                values = ", ".join(map(str, arm_values.values()))
                why = (f"screened by successive halving over {values}: even the best, {value}, "
                       f"ran {shown} of the best plan, below the threshold")
            else:
                why = f"screened next to the best plan: it ran {shown} of it, below the threshold"
            return Candidate(proposal["change"], {knob: value}, arm_path,
                             screened=proposal.get("screened", []), screened_out=why,
                             screen_ratio=score, screened_outcome=NOT_BENEFICIAL)
        path = self.implementer.finalize(round_dir)
        return Candidate(proposal["change"], {knob: value}, path,
                         screened=proposal.get("screened", []))

    def review_judgement(self, round_no: int, round_dir: Path, verdict: dict) -> dict:
        return verdict

    def review_evaluation(self, round_no: int, round_dir: Path, evaluation: dict) -> None:
        return None
