"""`--seeds N`: the whole search N times, each in its own output folder, and the distribution of
what it found: the final speedup (median, min, max, max/min) and which steps were accepted in
how many runs. The runs share one machine one after another, so their spread is the search's
sensitivity to measurement noise (the workload and the policy are the same every time)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["run_seeds", "summarize_runs"]


def run_seeds(scenario: Any, out: Path, factory: Any, n: int, rounds: int, budget_s: float,
              progress: Any = print) -> dict[str, Any]:
    from vibekit_agents.loop import Synthesizer

    runs = []
    for i in range(1, n + 1):
        progress(f"=== run {i} of {n} ===")
        synth = Synthesizer(scenario, Path(out) / f"seed-{i}", factory, rounds=rounds,
                            budget_s=budget_s, progress=progress)
        result = synth.run()
        memory = synth.ctx.workspace.memory()
        runs.append({"run": i, "speedup": result["speedup"],
                     "speedup_text": result["speedup_text"],
                     "steps": [e["change"] for e in memory
                               if e["outcome"] == "accepted" and e["round"] > 0],
                     "inconclusive": sum(e["outcome"] == "inconclusive (noise)" for e in memory),
                     "rounds": result["rounds"]})
    summary = summarize_runs(runs)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "seeds.json").write_text(json.dumps(summary, indent=1))
    (Path(out) / "seeds.md").write_text(render(summary, scenario.name))
    return summary


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    speedups = [float(r["speedup"]) for r in runs]
    steps = Counter(s.split(":")[0] + ":" + s.split("->")[-1] if "->" in s else s
                    for r in runs for s in r["steps"])
    return {"runs": runs, "n": len(runs), "median": statistics.median(speedups),
            "min": min(speedups), "max": max(speedups),
            "spread": max(speedups) / min(speedups) if min(speedups) > 0 else float("inf"),
            "steps": dict(steps.most_common())}


def render(summary: dict[str, Any], name: str) -> str:
    lines = [f"# vibekit-synthesize {name}: {summary['n']} runs", "",
             f"Final speedup over the start (each run's final side-by-side measurement): median "
             f"x{summary['median']:.2f}, min x{summary['min']:.2f}, max x{summary['max']:.2f} "
             f"(max/min {summary['spread']:.2f}).", "",
             "| run | final speedup | accepted steps | inconclusive rounds |",
             "|---:|---|---|---:|"]
    for r in summary["runs"]:
        lines.append(f"| {r['run']} | {r['speedup_text']} | {'; '.join(r['steps']) or '-'} | "
                     f"{r['inconclusive']} |")
    lines += ["", "Steps found (knob: value) in how many runs:", ""]
    lines += [f"- {k}: {v} of {summary['n']}" for k, v in summary["steps"].items()]
    return "\n".join(lines) + "\n"
