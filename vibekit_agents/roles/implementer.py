"""Implementer: turns the planner's proposal into candidate plans in the round's folder.

The offline implementer edits knobs only: the incumbent plan.toml plus the proposed change. If
memory holds an implementation bug for the same change, it applies a repair first: errors of
the form "a (x) must be >= b (y)" (the Engine's own messages) set `a` to y.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan, PlanError
from vibekit_agents.workspace import IMPLEMENTATION_BUG

_REPAIRS = [re.compile(r"(\w+) \((-?\d+)\)\s*must be >= (\w+) \((-?\d+)\)")]


def repair(plan: Plan, error: str) -> tuple[Plan, list[str]]:
    """Fix what an engine error message names, where it says how."""
    notes = []
    for pattern in _REPAIRS:
        for m in pattern.finditer(error):
            knob = f"engine.{m.group(1)}"
            plan = plan.with_changes({knob: int(m.group(4))})
            notes.append(f"repair: {knob} = {m.group(4)} ({m.group(0)})")
    return plan, notes


def past_errors(ctx: RunContext, knob: str, value: Any) -> list[str]:
    errors = []
    key = json.dumps(value)
    for e in ctx.workspace.memory():
        if json.dumps((e.get("changes") or {}).get(knob, None)) == key \
                and e["outcome"] == IMPLEMENTATION_BUG:
            errors.append(e.get("reason", ""))
        for s in e.get("screened", []):
            if s["knob"] == knob and json.dumps(s["value"]) == key \
                    and s["outcome"] == IMPLEMENTATION_BUG:
                errors.append(s.get("why", ""))
    return errors


class LocalImplementer:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def candidate_for(self, knob: str, value: Any) -> tuple[Plan, list[str]]:
        incumbent = Plan.load(self.ctx.workspace.root / "plan.toml")
        plan = incumbent.with_changes({knob: value})
        notes = []
        for err in past_errors(self.ctx, knob, value):
            plan, fixed = repair(plan, err)
            notes += fixed
        return plan, notes

    def implement(self, round_dir: Path) -> dict[str, Any]:
        """Read proposal.json; write arms/<arm>.toml per proposed value and arms.json
        ({arm: value}). Values whose plan is invalid are reported in implementer.md."""
        proposal = json.loads((round_dir / "proposal.json").read_text())
        arms_dir = round_dir / "arms"
        arms_dir.mkdir(exist_ok=True)
        arm_values: dict[str, Any] = {}
        lines = [f"# Implementer: {proposal['knob']}", ""]
        for i, value in enumerate(proposal["values"]):
            arm = f"arm{i}"
            try:
                plan, notes = self.candidate_for(proposal["knob"], value)
            except PlanError as exc:
                lines.append(f"- {proposal['knob']}={value!r}: invalid plan: {exc}")
                continue
            plan.save(arms_dir / f"{arm}.toml")
            arm_values[arm] = value
            lines.append(f"- {arm}: {proposal['knob']} = {value!r}" +
                         (f" ({'; '.join(notes)})" if notes else ""))
        (round_dir / "implementer.md").write_text("\n".join(lines) + "\n")
        (round_dir / "arms.json").write_text(json.dumps(arm_values, default=str))
        return arm_values

    def finalize(self, round_dir: Path) -> Path:
        """candidate.toml: the arm of the value the planner chose (proposal.json)."""
        proposal = json.loads((round_dir / "proposal.json").read_text())
        arms = json.loads((round_dir / "arms.json").read_text())
        arm = next(a for a, v in arms.items() if v == proposal["chosen"])
        path = round_dir / "candidate.toml"
        path.write_text((round_dir / "arms" / f"{arm}.toml").read_text())
        return path
