"""The output folder: best_plan.toml, server.py, report.md with the iteration table, and
progress.svg (drawn by hand, no plotting dependency)."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

from vibekit_agents.context import RunContext
from vibekit_agents.metrics import format_number
from vibekit_agents.plan import Plan
from vibekit_agents.workspace import ACCEPTED


def _verdict(e: dict[str, Any]) -> str:
    judge = e.get("judge", "")
    if e["round"] == 0:
        return "judge passed; start"
    if judge.startswith("not run"):
        return f"screened out, not judged; {e['outcome']}"
    return f"judge {'passed' if judge.startswith('passed') else 'rejected'}; {e['outcome']}"


def _ratio(e: dict[str, Any]) -> str:
    if e.get("ratio") is not None:
        return f"x{e['ratio']:.2f}"
    if e.get("screen_ratio") is not None:
        return f"x{e['screen_ratio']:.2f} (screen)"
    return "-"


def _num(x: Any, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def iteration_table(memory: list[dict[str, Any]], metric_label: str,
                    fmt: Any = _num) -> str:
    rows = [f"| round | change | verdict | {metric_label} | vs best | speedup over start |",
            "|---:|---|---|---:|---:|---:|"]
    for e in memory:
        rows.append(f"| {e['round']} | {e['change']} | {_verdict(e)} | {fmt(e.get('metric'))} "
                    f"| {_ratio(e)} | {_num(e.get('speedup'), 'x{:.2f}')} |")
    return "\n".join(rows)


def progress_svg(memory: list[dict[str, Any]], title: str) -> str:
    """Speedup over the start per round: accepted (filled), others (hollow), best so far."""
    w, h, left, right, top, bottom = 680, 340, 60, 20, 40, 50
    pts = [(e["round"], e.get("speedup"), e["outcome"] == ACCEPTED) for e in memory]
    ys = [y for _, y, _ in pts if y is not None] or [1.0]
    ymax = max(max(ys) * 1.1, 1.2)
    nmax = max(max((r for r, _, _ in pts), default=1), 1)

    def X(r: float) -> float:
        return left + (w - left - right) * r / nmax

    def Y(v: float) -> float:
        return top + (h - top - bottom) * (1 - v / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">'
           f'{html.escape(title)}</text>']
    for i in range(6):  # y grid
        v = ymax * i / 5
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 6}" y="{Y(v) + 4:.1f}" '
                   f'text-anchor="end">x{v:.1f}</text>')
    for r in range(nmax + 1):
        out.append(f'<text x="{X(r):.1f}" y="{h - bottom + 16}" text-anchor="middle">{r}</text>')
    out.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">round</text>')
    out.append(f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" '
               f'text-anchor="middle">speedup over the start plan</text>')
    best, path = 1.0, []
    for r, y, acc in pts:
        if acc and y is not None:
            best = y
        path.append(f"{X(r):.1f},{Y(best):.1f}")
    if path:
        out.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="#2a7" '
                   f'stroke-width="2"/>')
    for r, y, acc in pts:
        if y is None:
            out.append(f'<text x="{X(r):.1f}" y="{Y(0) - 4:.1f}" text-anchor="middle" '
                       f'fill="#c33">x</text>')
            continue
        fill = "#2a7" if acc else "white"
        stroke = "#2a7" if acc else "#c33"
        out.append(f'<circle cx="{X(r):.1f}" cy="{Y(y):.1f}" r="5" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="2"/>')
    out.append(f'<text x="{w - right}" y="{top - 6}" text-anchor="end" fill="#555">filled: '
               f'accepted, hollow: not kept, x: rejected by the judge</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_outputs(ctx: RunContext, best: Plan, start: Plan, final: dict | None, stop: str,
                  server_text: str) -> dict[str, Any]:
    sc, ws, out = ctx.scenario, ctx.workspace, ctx.out
    memory = ws.memory()
    best.save(out / "best_plan.toml")
    (out / "server.py").write_text(server_text)
    if best.extension:
        (out / "extensions").mkdir(exist_ok=True)
        shutil.copy(ws.root / best.extension, out / "extensions" / Path(best.extension).name)
    label, fmt = sc.metric.label, sc.metric.format
    (out / "progress.svg").write_text(progress_svg(memory, f"{sc.name}: {label}, speedup "
                                                             f"over the start plan"))
    chained = next((e.get("speedup") for e in reversed(memory) if e["outcome"] == ACCEPTED), 1.0)
    start_metric = memory[0].get("metric") if memory else None
    integrity = {**((final or {}).get("integrity") or {}),
                 **((final or {}).get("checker_failures") or {})}
    if final and final.get("status") == "ok" and not integrity:
        comp = final["comparison"]
        f_ratio = comp["best"]["ratio"]
        f_start, f_best = final["arms"]["start"], final["arms"]["best"]
        speedup_text = f"x{f_ratio:.2f} {_interval(comp['best'])}"
        loads = final.get("load_average") or []
        result_lines = [
            f"The start plan, the plan after every accepted step and the best plan, measured "
            f"side by side in one run after the search ({final.get('passes')} passes, "
            f"interleaved; load average {min(loads, default=0):.1f}-{max(loads, default=0):.1f}"
            f" on {ctx.facts.get('cpu.count')} cores): {label} {fmt(f_start[sc.metric.kind])} "
            f"-> {fmt(f_best[sc.metric.kind])}, **{speedup_text}** ({_coverage(comp['best'])} "
            f"interval of the paired ratio, {comp['best'].get('samples')} paired samples; the "
            f"accepted rounds' own ratios multiplied to x{chained:.2f}).", "",
            final_table(final, start, label, sc.metric.kind, fmt), ""]
        from vibekit_agents.loop import generic_only

        arm = final.get("generic_arm")
        if arm in comp:
            g = comp[arm]["ratio"]
        else:  # the start holds the generic knobs already, or the best plan is only generic
            all_generic = generic_only(start, best, ctx.skills).digest() == best.digest()
            g, arm = (f_ratio, "best") if all_generic else (1.0, "start")
        result_lines += [
            f"Gain from generic knobs (threads, batching, graphs, dtype: what any engine has): "
            f"x{g:.2f} (the `{arm}` arm: the start with only the best plan's generic knobs); "
            f"gain from vibekit's primitives on top of them: x{f_ratio / g:.2f}.", ""]
        for k in sc.metric.report:
            result_lines.append(f"- start {format_number(k, f_start.get(k))}, best "
                                f"{format_number(k, f_best.get(k))}")
        hints = final.get("hints", {})
    else:
        f_ratio = None if final else 1.0
        speedup_text = f"x{chained:.2f} (chained; the final side-by-side check "
        if integrity:
            speedup_text += f"found integrity problems: {integrity})"
        else:
            speedup_text += "failed)" if final else "was not needed: the start plan is the best)"
        result_lines = [f"Speedup over the start: {speedup_text}."]
        hints = {}
        for e in reversed(memory):
            if e["outcome"] == ACCEPTED:
                p = ws.round_dir(e["round"]) / "hints.json"
                hints = json.loads(p.read_text()) if p.is_file() else {}
                break
    changed = start.diff(best)
    lines = [
        f"# vibekit-synthesize: {sc.name}", "",
        sc.description.strip(), "",
        f"- model: `{ctx.facts.get('model.source')}` ({ctx.facts.get('model_note')}), "
        f"{sc.model.dtype} on {sc.model.device}",
        f"- workload: {sc.workload.num_requests} measured requests (+{sc.workload.warmup_requests}"
        f" warm-up), concurrency {list(sc.workload.concurrency)}, params "
        f"{json.dumps(sc.workload.params)}"
        + (f", mode used: {ctx.facts['workload_mode']}" if ctx.facts.get("workload_mode")
           else ""),
        f"- metric: {label} ({sc.metric.direction}); a change is kept when it wins by "
        f"{sc.metric.min_improvement:.0%}"
        + ("" if sc.metric.higher_is_better else " (every ratio below is a gain: the start's or "
           "the best's value over the candidate's, so > 1 is better)"),
        f"- checker: {sc.checker.kind} {json.dumps(sc.checker.thresholds)}",
        f"- policy: {ctx.policy_name}; {len(memory) - 1} search rounds; "
        f"stopped: {_stop_text(stop)}; wall time {ctx.elapsed():.0f} s of this invocation",
        f"- start plan metric: {fmt(start_metric)}"
        + "".join(f"; {format_number(k, v)}" for k, v in
                  ((memory[0].get("report") or {}) if memory else {}).items()), "",
        "## Result", "", *result_lines, "",
        "## Iterations", "",
        "Each round's metric and ratio come from the candidate measured side by side with the "
        "best plan of that moment (the search's own measurements; the Result above is the one "
        "final run); speedup over the start multiplies the accepted ratios.", "",
        iteration_table(memory, label, fmt), "",
        "![speedup per round](progress.svg)", "",
        "## The best plan", "",
        "Changed from the start plan: " + (", ".join(f"`{k}` {a!r} -> {b!r}"
                                                     for k, (a, b) in changed.items())
                                           or "nothing") + ".", "",
        "```toml", best.dumps().strip(), "```", "",
        f"Serve it: `python {out / 'server.py'} --port 8000` (needs the `serve` extra: "
        "`pip install -e '.[serve]'` in the vibekit checkout).", "",
    ]
    if hints:
        lines += ["## What bounds the final stack", "", f"Bound: **{hints.get('bound')}**.", ""]
        lines += [f"- {n}" for n in hints.get("notes", [])]
        lines.append("")
    blocked = [it for it in ws.backlog() if it.get("status") == "blocked"]
    left = [it for it in ws.backlog() if it.get("status") in ("open", "waiting")]
    if left or blocked:
        lines += ["## Backlog", ""]
        for it in left:
            lines.append(f"- open: `{it['knob']}` {it.get('values')} ({it.get('why')})")
        for it in blocked:
            lines.append(f"- blocked: `{it['knob']}`: {'; '.join(it.get('evidence', []))}")
        lines.append("")
    lines += ["## Files", "",
              "- `best_plan.toml`: the plan; `server.py`: the stack served through vibekit.serve",
              "- `workspace/`: git history (one commit per accepted round), MEMORY.md, "
              "BACKLOG.md, rounds/ with every proposal, verdict and measurement",
              "- `logs/`: sandbox logs; `data/`: the requests", ""]
    (out / "report.md").write_text("\n".join(lines))
    return {"speedup": f_ratio if f_ratio is not None else chained,
            "speedup_text": speedup_text, "chained_speedup": chained, "rounds": len(memory) - 1,
            "stop": stop, "best_plan": best.data}


def _coverage(c: dict[str, Any]) -> str:
    return f"{c.get('coverage', 0):.0%}" if c.get("interval") else "no"


def _interval(c: dict[str, Any]) -> str:
    iv = c.get("interval")
    return f"[{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "[no interval]"


def final_table(final: dict[str, Any], start: Plan, label: str, kind: str,
                fmt: Any = "{:.1f}".format) -> str:
    """One row per arm of the final run: what it changes from the start, its metric, its
    ratio over the start with the interval."""
    rows = [f"| arm | changes from the start | {label} | vs start (interval) | samples |",
            "|---|---|---:|---:|---:|"]
    plans = final.get("arm_plans", {})
    for arm, m in final["arms"].items():
        diff = start.diff(Plan(plans[arm])) if arm in plans else {}
        shown = ", ".join(f"`{k}` {b!r}" for k, (_, b) in diff.items()) or "-"
        c = final["comparison"].get(arm)
        vs = "x1.00" if c is None else f"x{c['ratio']:.2f} {_interval(c)}"
        rows.append(f"| {arm} | {shown} | {fmt(m[kind])} | {vs} | "
                    f"{'-' if c is None else c.get('samples', 0)} |")
    return "\n".join(rows)


def _stop_text(stop: str) -> str:
    return {"budget": "the time budget ran out", "backlog": "nothing left to try",
            "rounds": "the round limit"}.get(stop, stop)
