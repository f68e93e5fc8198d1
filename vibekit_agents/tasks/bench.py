"""The evaluator's benchmark: arms measured side by side in one process, on the scenario's
requests and load levels (never the candidate's).

compare   every arm runs every measured request; at concurrency 1 the arms alternate request
          by request (rotating who goes first), at higher levels they alternate level by level,
          so machine noise hits them alike. Ratios are paired (same request, same moment).
screen    successive halving: all arms run a first rung of requests next to the baseline arm;
          the better half goes on to a larger rung, until one is left. An arm slower than
          4x the baseline on a request is cut off there.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from vibekit_agents.plan import Plan
from vibekit_agents.scenario import load_scenario
from vibekit_agents.stack import build_stack


def _run_one(stack: Any, request: dict, rid: str, deadline_s: float | None = None) -> dict:
    stack.activate()
    t0 = time.perf_counter()
    stack.add(request, rid)
    ttft, tokens = None, 0
    while True:
        for ev in stack.step():
            if ev.request_id != rid:
                continue
            tokens += ev.num_new_tokens
            if ttft is None and ev.num_new_tokens:
                ttft = time.perf_counter() - t0
            if ev.finished:
                lat = time.perf_counter() - t0
                out = ev.output or {}
                n = out.get("usage", {}).get("completion_tokens", tokens)
                return {"latency_s": lat, "ttft_s": ttft or lat, "tokens": n, "cut": False,
                        "usage": out.get("usage", {})}
        if deadline_s is not None and time.perf_counter() - t0 > deadline_s:
            stack.abort(rid)
            lat = time.perf_counter() - t0
            return {"latency_s": lat, "ttft_s": ttft or lat, "tokens": tokens, "cut": True,
                    "usage": {}}


def _run_level(stack: Any, requests: list[dict], concurrency: int, tag: str) -> dict:
    stack.activate()
    pending = list(enumerate(requests))
    started: dict[str, tuple[int, float]] = {}
    first: dict[str, float] = {}
    per: list[dict] = []
    t0 = time.perf_counter()
    while pending or started:
        while pending and len(started) < concurrency:
            i, req = pending.pop(0)
            rid = f"{tag}-{i}"
            stack.add(req, rid)
            started[rid] = (i, time.perf_counter())
        for ev in stack.step():
            if ev.request_id not in started:
                continue
            now = time.perf_counter()
            if ev.num_new_tokens and ev.request_id not in first:
                first[ev.request_id] = now
            if ev.finished:
                _, ts = started.pop(ev.request_id)
                usage = (ev.output or {}).get("usage", {})
                per.append({"latency_s": now - ts, "ttft_s": first.get(ev.request_id, now) - ts,
                            "tokens": usage.get("completion_tokens", 0), "usage": usage})
    return {"wall_s": time.perf_counter() - t0, "requests": per}


def _summary(level_runs: list[tuple[int, dict]], per_request_c1: list[dict]) -> dict:
    lat = sorted(r["latency_s"] for _, run in level_runs for r in run["requests"])
    ttft = sorted(r["ttft_s"] for _, run in level_runs for r in run["requests"])
    tokens = sum(r["tokens"] for _, run in level_runs for r in run["requests"])
    wall = sum(run["wall_s"] for _, run in level_runs)
    nreq = sum(len(run["requests"]) for _, run in level_runs)
    rates = [r["tokens"] / r["latency_s"] for r in per_request_c1 if r["latency_s"] > 0]
    acc = sum(r["usage"].get("accepted_prediction_tokens", 0)
              for _, run in level_runs for r in run["requests"])
    rej = sum(r["usage"].get("rejected_prediction_tokens", 0)
              for _, run in level_runs for r in run["requests"])
    return {
        "median_tok_s": statistics.median(rates) if rates else 0.0,
        "throughput_tok_s": tokens / wall if wall else 0.0,
        "requests_per_s": nreq / wall if wall else 0.0,
        "p50_latency_s": _pct(lat, 50), "p99_latency_s": _pct(lat, 99),
        "p50_ttft_s": _pct(ttft, 50), "p99_ttft_s": _pct(ttft, 99),
        "completion_tokens": tokens, "wall_s": wall,
        "acceptance_rate": acc / (acc + rej) if acc + rej else None,
        "per_level": {str(c): {"throughput_tok_s": sum(r["tokens"] for r in run["requests"])
                               / run["wall_s"], "wall_s": run["wall_s"]}
                      for c, run in level_runs},
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


def _load(arms: dict[str, str], scenario_dir: str, workspace: str,
          tolerant: bool = False) -> tuple[Any, dict, dict]:
    """Build every arm's stack; with `tolerant`, an arm that fails to build is reported in
    the errors dict instead of failing the run."""
    sc = load_scenario(scenario_dir)
    stacks, errors = {}, {}
    for name, path in arms.items():
        try:
            stacks[name] = build_stack(Plan.load(path), sc, workspace)
        except Exception as exc:
            if not tolerant:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
    return sc, stacks, errors


def _split(sc: Any, requests_path: str) -> tuple[list[dict], list[dict]]:
    requests = json.loads(Path(requests_path).read_text())
    w = sc.workload.warmup_requests
    return requests[:w], requests[w:]


def benchmark(arms: dict[str, str], baseline: str, workspace: str, scenario_dir: str,
              requests_path: str, profile_arm: str | None = None) -> dict[str, Any]:
    """Compare mode: metrics per arm and paired ratios of each arm over `baseline`."""
    sc, stacks, _ = _load(arms, scenario_dir, workspace)
    warm, measured = _split(sc, requests_path)
    names = list(stacks)
    for name in names:
        for i, req in enumerate(warm or measured[:1]):
            _run_one(stacks[name], req, f"warm-{name}-{i}")
    runs: dict[str, list[tuple[int, dict]]] = {n: [] for n in names}
    c1: dict[str, list[dict]] = {n: [] for n in names}
    result_note = ""
    for li, c in enumerate(sc.workload.concurrency):
        if result_note:  # already known to lose badly: skip the remaining load levels
            break
        if c == 1:
            per: dict[str, list[dict]] = {n: [] for n in names}
            t_level = {n: 0.0 for n in names}
            for i, req in enumerate(measured):
                order = names[i % len(names):] + names[:i % len(names)]
                for name in order:
                    r = _run_one(stacks[name], req, f"m-{name}-{li}-{i}")
                    per[name].append(r)
                    t_level[name] += r["latency_s"]
                if i >= 1 and _hopeless(per, baseline):
                    result_note = f"stopped after {i + 1} requests: an arm ran below x{CUT:.2f}"
                    break
            for name in names:
                runs[name].append((c, {"wall_s": t_level[name], "requests": per[name]}))
                if not c1[name]:
                    c1[name] = per[name]
        else:
            order = names[li % len(names):] + names[:li % len(names)]
            for name in order:
                runs[name].append((c, _run_level(stacks[name], measured, c, f"l{li}-{name}")))
    metric = sc.metric.kind
    result: dict[str, Any] = {"metric": metric, "arms": {}, "ratios": {}}
    if result_note:
        result["note"] = result_note
    for name in names:
        result["arms"][name] = _summary(runs[name], c1[name])
    for name in names:
        if name == baseline:
            continue
        result["ratios"][name] = _ratio(metric, result["arms"][name], result["arms"][baseline],
                                        c1[name], c1[baseline])
    if profile_arm is not None:
        from vibekit_agents.tasks.profile import profile_stack

        try:  # a scenario's own stack may not expose what the LLM profile needs
            result["profile"] = profile_stack(stacks[profile_arm], measured[0])
        except Exception as exc:
            result["profile"] = None
            result["profile_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return result


CUT = 0.25  # an arm this much slower than the baseline on every request so far is not finished


def _hopeless(per: dict[str, list[dict]], baseline: str) -> bool:
    """True when some arm ran below CUT x the baseline on every request measured so far."""
    base = per[baseline]
    for name, runs in per.items():
        if name != baseline and runs and all(
                _rate(r) < CUT * _rate(b) for r, b in zip(runs, base)):
            return True
    return False


def _ratio(metric: str, a: dict, b: dict, a_c1: list[dict], b_c1: list[dict]) -> float:
    if metric == "median_tok_s" and a_c1 and b_c1:
        paired = [(x["tokens"] / x["latency_s"]) / (y["tokens"] / y["latency_s"])
                  for x, y in zip(a_c1, b_c1) if x["latency_s"] > 0 and y["latency_s"] > 0
                  and y["tokens"] > 0]
        if paired:
            return statistics.median(paired)
    return a[metric] / b[metric] if b[metric] else 0.0


def screen(arms: dict[str, str], baseline: str, workspace: str, scenario_dir: str,
           requests_path: str, rungs: list[int] | None = None) -> dict[str, Any]:
    """Successive halving of arms against `baseline`; returns the ranking with evidence."""
    sc, stacks, errors = _load(arms, scenario_dir, workspace, tolerant=True)
    if baseline in errors:
        raise RuntimeError(f"the baseline arm failed to build: {errors[baseline]}")
    warm, measured = _split(sc, requests_path)
    for name in list(stacks):
        try:
            _run_one(stacks[name], (warm or measured)[0], f"warm-{name}")
        except Exception as exc:
            if name == baseline:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            del stacks[name]
    rungs = rungs or [1, min(3, len(measured))]
    alive = [n for n in stacks if n != baseline]
    if not alive:
        return {"ranking": [], "scores": {}, "history": [], "errors": errors, "winner": None}
    scores: dict[str, float] = {}
    history = []
    c = sc.workload.concurrency[0]
    for rung, k in enumerate(rungs):
        subset = measured[:k]
        rung_scores = {}
        for name in list(alive):
            try:
                rung_scores[name] = _screen_arm(stacks[baseline], stacks[name], subset, c,
                                                f"s{rung}-{name}")
            except Exception as exc:  # a broken arm drops out; the others go on
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
                alive.remove(name)
        if not alive:
            break
        scores.update(rung_scores)
        history.append({"requests": k, "scores": rung_scores})
        alive.sort(key=lambda n: rung_scores[n], reverse=True)
        if len(alive) <= 1:
            break
        alive = alive[:max(1, math.ceil(len(alive) / 2))]
    ranking = sorted(scores, key=lambda n: (n in alive, scores[n]), reverse=True)
    return {"ranking": ranking, "scores": scores, "history": history, "errors": errors,
            "winner": alive[0] if alive else None}


def _screen_arm(base_stack: Any, stack: Any, subset: list[dict], c: int, tag: str) -> float:
    """Median paired ratio of `stack` over the baseline on `subset` (higher is faster)."""
    if c > 1:
        base = _run_level(base_stack, subset, c, f"{tag}-b")
        cand = _run_level(stack, subset, c, tag)
        return base["wall_s"] / max(cand["wall_s"], 1e-9)
    ratios = []
    for i, req in enumerate(subset):
        base = _run_one(base_stack, req, f"{tag}-b-{i}")
        cand = _run_one(stack, req, f"{tag}-{i}", deadline_s=4 * base["latency_s"])
        ratios.append(_rate(cand) / max(_rate(base), 1e-9))
    return statistics.median(ratios)


def _rate(r: dict) -> float:
    return r["tokens"] / r["latency_s"] if r["latency_s"] > 0 else 0.0
