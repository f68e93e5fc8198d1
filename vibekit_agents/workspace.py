"""The workspace of one run: a git repository the roles hand work through.

    plan.toml          the best plan so far (the incumbent); changes only in accepted rounds
    MEMORY.md          every attempt with its outcome class and the evidence (memory.jsonl is
                       the same for programs)
    BACKLOG.md         what to try next, ranked, with the evidence behind each item
    EXTENSIONS.md      the extension point for code (Claude's implementer)
    extensions/        extension modules
    rounds/round-NN/   proposal, candidate.toml, judge.json, eval.json, hints.md, outcome.json
    skills/            a copy of the skills the scenario allows (read-only reference)

One commit per accepted round (round 0 is the start plan). A round is complete once its
outcome.json exists; a round interrupted before that is discarded on resume.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["OUTCOMES", "Workspace"]

ACCEPTED = "accepted"
NOT_BENEFICIAL = "not beneficial for this workload"
IMPLEMENTATION_BUG = "implementation bug"
CHECKER_FAILED = "checker failed"
CRASHED = "crashed"
TIMED_OUT = "timed out"
CHEATING = "rejected: cheating"
INCONCLUSIVE = "inconclusive (noise)"
OUTCOMES = (ACCEPTED, NOT_BENEFICIAL, INCONCLUSIVE, IMPLEMENTATION_BUG, CHECKER_FAILED, CRASHED,
            TIMED_OUT, CHEATING)
# Outcomes after which the same change is not tried again (an inconclusive one is retried
# later, a bounded number of times: vibekit_agents.roles.planner).
FINAL_OUTCOMES = (ACCEPTED, NOT_BENEFICIAL, CHECKER_FAILED, CHEATING, CRASHED, TIMED_OUT)

EXTENSIONS_DOC = """\
# Extension point

A plan may name one module: `[extension] module = "extensions/<name>.py"`. The module defines

    def extend(engine, plan: dict):
        \"\"\"Called once after Engine.from_pretrained; return a replacement engine or None.\"\"\"

It may use vibekit's public API (logits processors, engine options, wrapping the Engine in a
subclass with the same methods). The rendered server.py calls it the same way.

The judge runs every candidate in a fresh process and rejects, whatever the speed:
- outputs cached by prompt or request (a repeated request must run the model again),
- skipping the model forward (forwarded tokens must cover every generated token),
- reading reference outputs or anything outside the workspace the judge keeps to itself,
- canned text, buffered streaming (one chunk at the end),
- changing the workload, its load levels, max_tokens or the clock,
- spawning processes or loading native code,
- writing files outside the process's scratch folder (deleted when the process ends),
- usage numbers that disagree with the returned tokens.
The evaluator's timed requests look exactly like the judge's (random ids), every timed output
is checked against the references, and the harness's own hook on the model's forward (installed
before extend() runs) must have seen every output token go in.
"""


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- setup --------------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.root / ".git").is_dir() and (self.root / "plan.toml").is_file()

    def create(self, scenario: Any, plan_text: str, skills: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "rounds").mkdir(exist_ok=True)
        (self.root / "extensions").mkdir(exist_ok=True)
        (self.root / "extensions" / ".keep").write_text("")
        (self.root / "plan.toml").write_text(plan_text)
        (self.root / "EXTENSIONS.md").write_text(EXTENSIONS_DOC)
        (self.root / ".gitignore").write_text("*.log\nlogs/\n__pycache__/\n")
        (self.root / "README.md").write_text(
            f"# Workspace: {scenario.name}\n\nScenario: `{scenario.root}`\n\n"
            f"{scenario.description.strip()}\n\nSee MEMORY.md (what was tried), BACKLOG.md "
            f"(what is next), plan.toml (the best plan), rounds/ (each round's files).\n")
        dest = self.root / "skills"
        dest.mkdir(exist_ok=True)
        for skill in skills.values():
            shutil.copytree(skill.path, dest / skill.name, dirs_exist_ok=True)
        (self.root / "memory.jsonl").write_text("")
        self.write_memory_md(scenario.name)
        self.write_backlog([], note="The planner fills this after round 0.")
        self.git("init", "-q")
        self.git("checkout", "-q", "-b", "main", check=False)

    def git(self, *args: str, check: bool = True) -> str:
        cmd = ["git", "-c", "user.name=vibekit-synthesize", "-c",
               "user.email=vibekit-synthesize@localhost", "-c", "commit.gpgsign=false", *args]
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "--short", "HEAD").strip()

    def log(self) -> list[str]:
        out = self.git("log", "--format=%h %s", check=False)
        return [line for line in out.splitlines() if line.strip()]

    def head_file(self, name: str) -> str:
        return self.git("show", f"HEAD:{name}")

    # -- rounds -------------------------------------------------------------------------------

    def round_dir(self, n: int) -> Path:
        path = self.root / "rounds" / f"round-{n:02d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_incomplete(self) -> list[int]:
        """Drop rounds interrupted before memory recorded them and put plan.toml back to the
        last accepted plan. A round recorded as accepted whose commit was cut off is committed
        now (its plan.toml is already in place)."""
        memory = self.memory()
        done = {e["round"] for e in memory}
        dropped = []
        for d in sorted((self.root / "rounds").glob("round-*")):
            n = int(d.name.split("-")[1])
            if n not in done:
                shutil.rmtree(d)
                dropped.append(n)
        last = memory[-1] if memory else None
        subjects = self.log()
        if last and last["outcome"] == ACCEPTED and not any(
                s.split(" ", 1)[1].startswith(f"round {last['round']}:") for s in subjects):
            self.commit(f"round {last['round']}: {last['change']} (commit recovered on resume)")
        elif subjects:
            self.git("checkout", "-q", "HEAD", "--", "plan.toml", check=False)
        return dropped

    # -- memory -------------------------------------------------------------------------------

    def memory(self) -> list[dict[str, Any]]:
        path = self.root / "memory.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def record(self, entry: dict[str, Any], scenario_name: str) -> None:
        assert entry["outcome"] in OUTCOMES, entry["outcome"]
        with open(self.root / "memory.jsonl", "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        self.write_memory_md(scenario_name)

    def write_memory_md(self, scenario_name: str) -> None:
        lines = [
            f"# MEMORY: {scenario_name}", "",
            "Every attempt and why it ended as it did. Outcome classes: "
            + ", ".join(f"*{o}*" for o in OUTCOMES) + ".",
            "A change that failed for an implementation bug may be retried once fixed, and one "
            "whose measurement could not separate it from noise is retried later; one that "
            "is not beneficial for this workload, fails the checker, crashes, times out or "
            "cheats is not retried.", "",
            "Ratios are gains (> 1 better; for a lower-is-better metric such as a latency, the "
            "best's value over the candidate's).", "",
            "| round | change | outcome | metric | vs best | speedup over start |",
            "|---|---|---|---|---|---|",
        ]
        entries = self.memory()
        for e in entries:
            ratio = _fmt(e.get("ratio"), "x")
            if e.get("ratio") is None and e.get("screen_ratio") is not None:
                ratio = _fmt(e["screen_ratio"], "x") + " (screen)"
            lines.append(f"| {e['round']} | {e['change']} | {e['outcome']} | "
                         f"{e.get('metric_text') or _fmt(e.get('metric'))} | {ratio} | "
                         f"{_fmt(e.get('speedup'), 'x')} |")
        for e in entries:
            lines += ["", f"## Round {e['round']}: {e['change']}", f"- outcome: **{e['outcome']}**"
                      + (f" - {e['reason']}" if e.get("reason") else "")]
            for key in ("judge", "evaluator", "screen", "notes"):
                if e.get(key):
                    lines.append(f"- {key}: {e[key]}")
        (self.root / "MEMORY.md").write_text("\n".join(lines) + "\n")

    # -- backlog ------------------------------------------------------------------------------

    def write_backlog(self, items: list[dict[str, Any]], note: str = "") -> None:
        (self.root / "backlog.json").write_text(json.dumps(items, indent=1, default=str))
        lines = ["# BACKLOG", "", "What to try next, best first, with the evidence. Blocked "
                 "items need an engine capability that is missing.", ""]
        if note:
            lines += [note, ""]
        for i, it in enumerate(items, 1):
            status = it.get("status", "open")
            lines.append(f"{i}. [{status}] `{it['knob']}` -> {it.get('values')} "
                         f"(score {it.get('score', 0):.1f}, skill {it.get('skill')}): "
                         f"{it.get('why', '')}")
            for ev in it.get("evidence", []):
                lines.append(f"   - {ev}")
        (self.root / "BACKLOG.md").write_text("\n".join(lines) + "\n")

    def backlog(self) -> list[dict[str, Any]]:
        path = self.root / "backlog.json"
        return json.loads(path.read_text()) if path.is_file() else []


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{suffix}{value:.2f}" if suffix else f"{value:.1f}"
    return str(value)
