"""The offline policy: the local planner ranks knobs from the skills, the evaluator's hints and
memory; the evaluator screens the knob's candidate values next to the best plan (successive
halving when there are several, one paired request when there is one), and a value clearly
slower there ends the round as not beneficial without a judge run; otherwise the local
implementer writes the winning plan for the judge and the full benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.roles.evaluator import Evaluator
from vibekit_agents.roles.implementer import LocalImplementer
from vibekit_agents.roles.planner import LocalPlanner

# A value whose screen ratio is below this ends the round without a judge run or a full
# benchmark. The screen measures one to three requests, so a margin keeps noise from hiding a
# small win; anything closer goes on to the full side-by-side measurement.
SCREEN_OUT = 0.95


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
        if score is not None and score < SCREEN_OUT:
            if len(arm_values) > 1:
                values = ", ".join(map(str, arm_values.values()))
                why = (f"screened by successive halving over {values}: even the best, {value}, "
                       f"ran x{score:.2f} of the best plan")
            else:
                why = f"screened next to the best plan: it ran x{score:.2f} of it"
            return Candidate(proposal["change"], {knob: value},
                             round_dir / "arms" / f"{proposal['chosen_arm']}.toml",
                             screened=proposal.get("screened", []), screened_out=why,
                             screen_ratio=score)
        path = self.implementer.finalize(round_dir)
        return Candidate(proposal["change"], {knob: value}, path,
                         screened=proposal.get("screened", []))

    def review_judgement(self, round_no: int, round_dir: Path, verdict: dict) -> dict:
        return verdict

    def review_evaluation(self, round_no: int, round_dir: Path, evaluation: dict) -> None:
        return None
