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
    CHEATING,
    CHECKER_FAILED,
    CRASHED,
    FINAL_OUTCOMES,
    IMPLEMENTATION_BUG,
    INCONCLUSIVE,
    NOT_BENEFICIAL,
    TIMED_OUT,
)

MAX_BUG_RETRIES = 2
MAX_NOISE_RETRIES = 2  # an inconclusive value is measured again this many times at most
NOISE_PENALTY = 3.0  # per inconclusive try: untried knobs come first


def incumbent_hints(ctx: RunContext) -> dict[str, Any]:
    """Hints of the round that produced the current best plan (round 0 or the last accepted)."""
    for entry in reversed(ctx.workspace.memory()):
        if entry["outcome"] == ACCEPTED:
            path = ctx.workspace.round_dir(entry["round"]) / "hints.json"
            if path.is_file():
                return json.loads(path.read_text())
            break
    return {"bound": "unknown", "notes": [], "suggest": {}}


def tried_values(memory: list[dict], knob: str, default: Any = None,
                 noisy: dict | None = None) -> tuple[set, dict]:
    """(values not to try again, {value: number of implementation-bug failures}). `default`
    stands for a previous value that the plan left unset (the library default). `noisy`, if
    given, is filled with {value: number of inconclusive measurements}."""
    final: set = set()
    bugs: dict = {}
    noisy = noisy if noisy is not None else {}
    for e in memory:
        for k, v in (e.get("changes") or {}).items():
            if k != knob:
                continue
            key = json.dumps(v)
            if e["outcome"] in FINAL_OUTCOMES:
                final.add(key)
            elif e["outcome"] == IMPLEMENTATION_BUG:
                bugs[key] = bugs.get(key, 0) + 1
            elif e["outcome"] == INCONCLUSIVE:
                noisy[key] = noisy.get(key, 0) + 1
            if e["outcome"] == ACCEPTED and knob in (e.get("previous") or {}):
                old = e["previous"][knob]
                final.add(json.dumps(default if old is None else old))  # it lost already
        for s in e.get("screened", []):
            if s["knob"] == knob and s.get("outcome") in FINAL_OUTCOMES:
                final.add(json.dumps(s["value"]))
            elif s["knob"] == knob and s.get("outcome") == IMPLEMENTATION_BUG:
                key = json.dumps(s["value"])
                bugs[key] = bugs.get(key, 0) + 1
            elif s["knob"] == knob and s.get("outcome") == INCONCLUSIVE:
                key = json.dumps(s["value"])
                noisy[key] = noisy.get(key, 0) + 1
    for key, n in noisy.items():
        if n >= MAX_NOISE_RETRIES:
            final.add(key)
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
        noisy: dict = {}
        final, bugs = tried_values(memory, knob.name, knob.default, noisy)
        values = [v for v in knob.values(facts, sc.search.knobs.get(knob.name))
                  if v != current and json.dumps(v) not in final
                  and bugs.get(json.dumps(v), 0) < MAX_BUG_RETRIES]
        # Untried values first; values measured inconclusive before come after them.
        values.sort(key=lambda v: noisy.get(json.dumps(v), 0))
        item["values"] = values
        item["current"] = current
        if bugs:
            item["evidence"].append(f"retrying after implementation bugs: {sorted(bugs)}")
        retried = [v for v in values if json.dumps(v) in noisy]
        if retried:
            item["score"] -= NOISE_PENALTY * max(noisy[json.dumps(v)] for v in retried)
            item["evidence"].append(f"measured again after inconclusive (noise) results: "
                                    f"{retried}")
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
        comparison = screen.get("comparison", {})
        integrity = screen.get("integrity", {})
        failed = screen.get("checker_failures", {})
        errors = screen.get("errors", {})
        winner = screen.get("winner")
        if winner is None or winner not in arm_values:
            ok = [a for a in arm_values if a not in errors]
            winner = ok[0] if ok else next(iter(arm_values))
        screened = []
        for arm, value in arm_values.items():
            if arm == winner:
                continue
            c = comparison.get(arm, {})
            if arm in integrity or "(process)" in integrity:
                outcome = CHEATING
                why = "; ".join(integrity.get(arm) or integrity.get("(process)"))[:500]
            elif arm in errors:
                outcome, why = IMPLEMENTATION_BUG, errors[arm]
            elif failed.get(arm):  # screened arms are not judged yet: wrong, not cheating
                outcome, why = CHECKER_FAILED, "; ".join(failed[arm])[:500]
            elif c.get("decision") == "not better":
                outcome, why = NOT_BENEFICIAL, f"screened {_ci(c)} vs the best"
            else:
                outcome, why = INCONCLUSIVE, (f"screened {_ci(c)} vs the best; lost the "
                                              f"halving but not outside the noise")
            screened.append({"knob": proposal["knob"], "value": value, "outcome": outcome,
                             "score": scores.get(arm), "why": why})
        proposal["chosen"] = arm_values[winner]
        proposal["chosen_arm"] = winner
        proposal["chosen_score"] = scores.get(winner) if screen.get("status") == "ok" else None
        proposal["chosen_decision"] = comparison.get(winner, {}).get("decision")
        proposal["chosen_interval"] = _ci(comparison.get(winner, {}))
        proposal["chosen_integrity"] = integrity.get(winner) or integrity.get("(process)")
        proposal["chosen_checker_failures"] = failed.get(winner)
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


def _ci(c: dict[str, Any]) -> str:
    """'x1.23 [1.10, 1.31]' from a comparison entry (ratio, interval)."""
    if not c or c.get("ratio") is None:
        return "x?"
    iv = c.get("interval")
    return f"x{c['ratio']:.2f}" + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else " [no interval]")


def decide(verdict: dict[str, Any], evaluation: dict[str, Any] | None, candidate: str,
           min_improvement: float, higher_is_better: bool) -> tuple[str, str, float | None]:
    """(outcome, reason, ratio over the best) - mechanical, the same for every policy.

    The ratio is a gain (> 1 better) for every metric direction (tasks/bench.py).
    Accepted only when the interval of the ratio lies above 1 and its point clears
    1 + min_improvement; not beneficial when the interval lies below the threshold;
    otherwise inconclusive (noise), which the planner retries later."""
    if not verdict.get("passed"):
        return verdict["outcome"], "; ".join(verdict.get("reasons", []))[:500], None
    if evaluation is None or evaluation.get("status") != "ok":
        status = (evaluation or {}).get("status", "error")
        outcome = {"timeout": TIMED_OUT, "oom": CRASHED, "crashed": CRASHED}.get(
            status, IMPLEMENTATION_BUG)
        return outcome, f"benchmark {status}: {(evaluation or {}).get('error', '')}"[:500], None
    integrity = evaluation.get("integrity") or {}
    problems = (integrity.get(candidate) or []) + (integrity.get("(process)") or [])
    # The judge passed these requests: a timed output that fails now means the candidate
    # behaves differently when timed.
    problems += (evaluation.get("checker_failures") or {}).get(candidate) or []
    if problems:
        return CHEATING, ("in the evaluator's timed run: " + "; ".join(problems))[:500], None
    c = evaluation["comparison"][candidate]
    ratio = c["ratio"]
    need = f"needs an interval above x1.00 and a point of at least x{1 + min_improvement:.2f}"
    if not higher_is_better:
        need += "; a gain: the best's value over the candidate's, as lower is better"
    shown = f"{_ci(c)} over the best ({need}; {c.get('samples', 0)} paired samples)"
    if c["decision"] == "better":
        return ACCEPTED, shown, ratio
    if c["decision"] == "not better":
        return NOT_BENEFICIAL, shown, ratio
    return INCONCLUSIVE, shown, ratio
