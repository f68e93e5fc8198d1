"""Planner: reads the workspace (plan.toml, memory, the incumbent's hints, the skills' knob
sidecars) and picks the next change; after the judge and the evaluator, classifies the round.

The offline planner ranks knobs by the skills' base priority plus the evaluator's hint weights,
skips what memory says not to retry, and proposes every remaining value of the best knob; when
there are several, the evaluator screens them by successive halving and the best one becomes
the round's candidate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan
from vibekit_agents.workspace import (
    ACCEPTED,
    CRASHED,
    FINAL_OUTCOMES,
    IMPLEMENTATION_BUG,
    NOT_BENEFICIAL,
    TIMED_OUT,
)

MAX_BUG_RETRIES = 2


def incumbent_hints(ctx: RunContext) -> dict[str, Any]:
    """Hints of the round that produced the current best plan (round 0 or the last accepted)."""
    for entry in reversed(ctx.workspace.memory()):
        if entry["outcome"] == ACCEPTED:
            path = ctx.workspace.round_dir(entry["round"]) / "hints.json"
            if path.is_file():
                return json.loads(path.read_text())
            break
    return {"bound": "unknown", "notes": [], "suggest": {}}


def tried_values(memory: list[dict], knob: str, default: Any = None) -> tuple[set, dict]:
    """(values not to try again, {value: number of implementation-bug failures}). `default`
    stands for a previous value that the plan left unset (the library default)."""
    final: set = set()
    bugs: dict = {}
    for e in memory:
        for k, v in (e.get("changes") or {}).items():
            if k != knob:
                continue
            key = json.dumps(v)
            if e["outcome"] in FINAL_OUTCOMES:
                final.add(key)
            elif e["outcome"] == IMPLEMENTATION_BUG:
                bugs[key] = bugs.get(key, 0) + 1
            if e["outcome"] == ACCEPTED and knob in (e.get("previous") or {}):
                old = e["previous"][knob]
                final.add(json.dumps(default if old is None else old))  # it lost already
        for s in e.get("screened", []):
            if s["knob"] == knob and s.get("outcome") in FINAL_OUTCOMES:
                final.add(json.dumps(s["value"]))
            elif s["knob"] == knob and s.get("outcome") == IMPLEMENTATION_BUG:
                key = json.dumps(s["value"])
                bugs[key] = bugs.get(key, 0) + 1
    return final, bugs


def build_backlog(ctx: RunContext, plan: Plan) -> list[dict[str, Any]]:
    """Every knob the scenario allows, ranked, with its status and evidence."""
    sc, facts = ctx.scenario, ctx.facts
    allowed = set(sc.search.primitives) or set(ctx.skills)
    hints = incumbent_hints(ctx)
    memory = ctx.workspace.memory()
    knobs: dict[str, Any] = {}
    for name in sorted(allowed):
        skill = ctx.skills.get(name)
        for knob in (skill.knobs if skill else ()):
            if knob.name not in knobs or knob.priority > knobs[knob.name].priority:
                knobs[knob.name] = knob
    items = []
    for knob in knobs.values():
        if not knob.applies(facts):
            continue
        item: dict[str, Any] = {"knob": knob.name, "skill": knob.skill, "why": knob.why,
                                "evidence": []}
        hint = hints.get("suggest", {}).get(knob.name)
        item["score"] = knob.priority + (hint["weight"] if hint else 0.0)
        if hint:
            item["evidence"].append(f"evaluator (+{hint['weight']:.0f}): {hint['why']}")
        if not knob.supported:
            item.update(status="blocked", values=list(knob.domain))
            item["evidence"].append(f"not supported: {knob.note or 'the engine lacks it'}")
            items.append(item)
            continue
        unmet = {k: v for k, v in knob.requires.items() if plan.get(k) != v}
        current = plan.get(knob.name, knob.default)
        final, bugs = tried_values(memory, knob.name, knob.default)
        values = [v for v in knob.values(facts, sc.search.knobs.get(knob.name))
                  if v != current and json.dumps(v) not in final
                  and bugs.get(json.dumps(v), 0) < MAX_BUG_RETRIES]
        item["values"] = values
        item["current"] = current
        if bugs:
            item["evidence"].append(f"retrying after implementation bugs: {sorted(bugs)}")
        if unmet:
            item["status"] = "waiting"
            item["evidence"].append(f"needs {unmet} first")
        elif not values:
            item["status"] = "done"
        else:
            item["status"] = "open"
        items.append(item)
    order = {"open": 0, "waiting": 1, "blocked": 2, "done": 3}
    items.sort(key=lambda it: (order[it["status"]], -it["score"], it["knob"]))
    return items


class LocalPlanner:
    """The offline policy's planner: no model, only the skills, the hints and memory."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def propose(self, round_no: int, round_dir: Path) -> dict[str, Any] | None:
        ws = self.ctx.workspace
        plan = Plan.load(ws.root / "plan.toml")
        backlog = build_backlog(self.ctx, plan)
        hints = incumbent_hints(self.ctx)
        ws.write_backlog(backlog, note=f"Incumbent step bound: {hints.get('bound')}. "
                         + " ".join(hints.get("notes", [])[:2]))
        open_items = [it for it in backlog if it["status"] == "open"]
        if not open_items:
            return None
        top = open_items[0]
        proposal = {
            "round": round_no, "knob": top["knob"], "values": top["values"],
            "current": top.get("current"), "skill": top["skill"], "score": top["score"],
            "change": f"{top['knob']}: {top.get('current')} -> "
                      + (str(top["values"][0]) if len(top["values"]) == 1
                         else "one of " + ", ".join(map(str, top["values"]))),
            "evidence": top["evidence"] + [f"skill {top['skill']}: {top['why']}"],
        }
        write_proposal(round_dir, proposal)
        return proposal

    def choose(self, round_dir: Path) -> dict[str, Any]:
        """Pick the screened winner (screen.json over arms.json); record how every arm did."""
        proposal = json.loads((round_dir / "proposal.json").read_text())
        arm_values = json.loads((round_dir / "arms.json").read_text())
        screen_path = round_dir / "screen.json"
        screen = json.loads(screen_path.read_text()) if screen_path.is_file() else {}
        scores = screen.get("scores", {})
        errors = screen.get("errors", {})
        winner = screen.get("winner")
        if winner is None or winner not in arm_values:
            ok = [a for a in arm_values if a not in errors]
            winner = ok[0] if ok else next(iter(arm_values))
        screened = []
        for arm, value in arm_values.items():
            if arm == winner:
                continue
            if arm in errors:
                outcome, why = IMPLEMENTATION_BUG, errors[arm]
            else:
                outcome, why = NOT_BENEFICIAL, f"screened x{scores.get(arm, 0):.2f} vs the best"
            screened.append({"knob": proposal["knob"], "value": value, "outcome": outcome,
                             "score": scores.get(arm), "why": why})
        proposal["chosen"] = arm_values[winner]
        proposal["chosen_arm"] = winner
        proposal["chosen_score"] = scores.get(winner) if screen.get("status") == "ok" else None
        proposal["screened"] = screened
        proposal["change"] = (f"{proposal['knob']}: {proposal.get('current')} -> "
                              f"{proposal['chosen']}")
        write_proposal(round_dir, proposal)
        return proposal


def write_proposal(round_dir: Path, proposal: dict[str, Any]) -> None:
    (round_dir / "proposal.json").write_text(json.dumps(proposal, indent=1, default=str))
    lines = [f"# Proposal: {proposal['change']}", ""]
    lines += [f"- {e}" for e in proposal.get("evidence", [])]
    for s in proposal.get("screened", []):
        lines.append(f"- screened {s['knob']}={s['value']}: {s['outcome']} ({s['why']})")
    (round_dir / "proposal.md").write_text("\n".join(lines) + "\n")


def decide(verdict: dict[str, Any], evaluation: dict[str, Any] | None, candidate: str,
           min_improvement: float, higher_is_better: bool) -> tuple[str, str, float | None]:
    """(outcome, reason, ratio over the best) - mechanical, the same for every policy."""
    if not verdict.get("passed"):
        return verdict["outcome"], "; ".join(verdict.get("reasons", []))[:500], None
    if evaluation is None or evaluation.get("status") != "ok":
        status = (evaluation or {}).get("status", "error")
        outcome = {"timeout": TIMED_OUT, "oom": CRASHED, "crashed": CRASHED}.get(
            status, IMPLEMENTATION_BUG)
        return outcome, f"benchmark {status}: {(evaluation or {}).get('error', '')}"[:500], None
    ratio = evaluation["ratios"][candidate]
    gain = ratio if higher_is_better else 1.0 / max(ratio, 1e-9)
    if gain >= 1.0 + min_improvement:
        return ACCEPTED, f"x{ratio:.2f} over the best (needs x{1 + min_improvement:.2f})", ratio
    return (NOT_BENEFICIAL, f"x{ratio:.2f} over the best (needs x{1 + min_improvement:.2f})",
            ratio)
