"""The evaluator's benchmark: arms measured side by side in one process, on the scenario's
requests and load levels, with every timed output handed back for the checker and every timed
window of an LLM arm covered by the harness's forward audit (vibekit_agents.audit).

compare   passes over the measured requests at every load level of the scenario. At
          concurrency 1 the arms alternate request by request (rotating who goes first), at
          higher levels level by level, so machine noise hits them alike. Each pass adds paired
          samples; passes go on until a confidence interval of every arm's ratio over the
          baseline separates it from the decision threshold, or the pass/time budget is spent
          ("undecided": the caller records it as inconclusive, to be retried).
screen    successive halving at the scenario's real load levels: all arms run a first pass on a
          few requests (all of them at levels above 1) next to the baseline; the better half
          runs another pass, until one is left. An arm slower than 4x the baseline on a
          request is cut off there.

Samples: for median_tok_s one per (pass, request) at concurrency 1, and the statistic is the
median paired ratio with a distribution-free order-statistic interval; for throughput_tok_s
and requests_per_s one per (pass, level), the ratio of totals, with a t interval on the mean
log ratio; for chunk_ttft_p50_s one per (pass, level), the ratio of the p50s of the level's
chunk latencies (the p50 of the pooled latencies for the point), with the same t interval.
Every ratio is a gain over the baseline (> 1 better; baseline / arm for a lower-is-better
kind, vibekit_agents.metrics), so the thresholds and the ranking are the same for every kind.
The load average (os.getloadavg) is recorded with every sample.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from vibekit_agents import metrics
from vibekit_agents.audit import clock, new_request_id, usage_findings
from vibekit_agents.plan import Plan
from vibekit_agents.scenario import load_scenario
from vibekit_agents.stack import build_stack

CUT = 0.25  # an arm this much slower than the baseline on every request so far is finished
MIN_COVERAGE = 0.9  # an interval must cover at least this to decide (median: >= 5 samples)
MIN_SAMPLES = 3
BETTER, NOT_BETTER, UNDECIDED = "better", "not better", "undecided"
_RATIO_IS = ("the gain over the baseline: > 1 is better (baseline / arm for a lower-is-better "
             "metric)")


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else -1.0


def _count(output: Any) -> int:
    """Units the metric counts in one output: its tokens (an image counts as one)."""
    if isinstance(output, dict) and output.get("token_ids") is not None:
        return len(output["token_ids"])
    return 1


class _Run:
    """Every arm's samples, timed outputs and audit findings of one benchmark run."""

    def __init__(self, sc: Any, stacks: dict[str, Any], measured: list[dict], offset: int,
                 baseline: str) -> None:
        self.sc, self.stacks, self.measured, self.offset = sc, stacks, measured, offset
        self.baseline = baseline
        self.units: dict[str, list[dict]] = {n: [] for n in stacks}
        self.timed: dict[str, list[dict]] = {n: [] for n in stacks}
        self.findings: dict[str, list[str]] = {n: [] for n in stacks}
        self.cut: set[str] = set()
        self.passes = 0
        self.loads: list[float] = []

    def _audit(self, name: str) -> Any:
        return getattr(self.stacks[name], "audit", None)

    def _check(self, name: str, snap: Any, outputs: list, where: str) -> None:
        audit = self._audit(name)
        for o in outputs:
            if isinstance(o, dict):
                self.findings[name] += usage_findings(o, where)
        if audit is not None:
            self.findings[name] += audit.check_window(snap, outputs, where,
                                                      getattr(self.stacks[name], "engine", None))

    def one(self, name: str, request: dict, deadline_s: float | None) -> tuple[dict, Any]:
        stack = self.stacks[name]
        stack.activate()
        audit = self._audit(name)
        snap = audit.snapshot() if audit else None
        rid = new_request_id()
        t0 = clock()
        stack.add(request, rid)
        added = (t0, clock())
        windows: list[tuple[float, float]] = []
        ttft = None
        while True:
            s0 = clock()
            events = stack.step()
            s1 = clock()
            for ev in events:
                if ev.request_id != rid:
                    continue
                if ev.num_new_tokens or ev.finished:
                    windows.append((s0, s1))
                if ttft is None and ev.num_new_tokens:
                    ttft = clock() - t0
                if ev.finished:
                    lat = clock() - t0
                    self._check(name, snap, [ev.output], "a timed request")
                    self.findings[name] += metrics.claim_findings(
                        request, ev.output, added, windows, "a timed request")
                    return {"latency_s": lat, "ttft_s": ttft or lat}, ev.output
            if deadline_s is not None and clock() - t0 > deadline_s:
                stack.abort(rid)
                lat = clock() - t0
                return {"latency_s": lat, "ttft_s": ttft or lat, "cut": True}, None

    def level(self, name: str, requests: list[dict], c: int) -> tuple[dict, list]:
        stack = self.stacks[name]
        stack.activate()
        audit = self._audit(name)
        snap = audit.snapshot() if audit else None
        pending = list(enumerate(requests))
        started: dict[str, tuple[int, float]] = {}
        added: dict[str, tuple[float, float]] = {}
        windows: dict[str, list[tuple[float, float]]] = {}
        first: dict[str, float] = {}
        outputs: list[Any] = [None] * len(requests)
        lat, ttft = [], []
        claims: list[str] = []
        where = f"a timed level at concurrency {c}"
        t0 = clock()
        while pending or started:
            while pending and len(started) < c:
                i, req = pending.pop(0)
                rid = new_request_id()
                a0 = clock()
                stack.add(req, rid)
                started[rid] = (i, clock())
                added[rid], windows[rid] = (a0, started[rid][1]), []
            s0 = clock()
            events = stack.step()
            s1 = clock()
            for ev in events:
                if ev.request_id not in started:
                    continue
                now = clock()
                if ev.num_new_tokens or ev.finished:
                    windows[ev.request_id].append((s0, s1))
                if ev.num_new_tokens and ev.request_id not in first:
                    first[ev.request_id] = now
                if ev.finished:
                    i, ts = started.pop(ev.request_id)
                    outputs[i] = ev.output
                    lat.append(now - ts)
                    ttft.append(first.get(ev.request_id, now) - ts)
                    claims += metrics.claim_findings(requests[i], ev.output,
                                                     added[ev.request_id],
                                                     windows.pop(ev.request_id),
                                                     f"{where}, request {i}")
        wall = clock() - t0
        self._check(name, snap, outputs, where)
        self.findings[name] += claims
        return {"wall_s": wall, "latencies": lat, "ttfts": ttft}, outputs

    def run_pass(self, names: list[str], num_c1: int | None = None,
                 deadline_x: float | None = None) -> None:
        """One pass of `names` (the baseline among them) over every load level; at
        concurrency 1 over the first `num_c1` measured requests (all when None)."""
        p = self.passes
        for li, c in enumerate(self.sc.workload.concurrency):
            if c == 1:
                subset = self.measured[:num_c1] if num_c1 else self.measured
                outs: dict[str, list] = {n: [] for n in names}
                for i, req in enumerate(subset):
                    k = (i + p) % len(names)
                    base = None
                    for name in names[k:] + names[:k]:
                        if name in self.cut:
                            continue
                        deadline = None
                        if deadline_x and name != self.baseline and base is not None:
                            deadline = deadline_x * base
                        rec, out = self.one(name, req, deadline)
                        if rec.get("cut"):
                            self.cut.add(name)
                            continue
                        if name == self.baseline:
                            base = rec["latency_s"]
                        outs[name].append(out)
                        self.units[name].append({
                            "key": [p, c, i], "level": c, "time_s": rec["latency_s"],
                            "tokens": _count(out), "requests": 1, "latencies": [rec["latency_s"]],
                            "ttfts": [rec["ttft_s"]], "load": _load(),
                            "chunk_ttfts": metrics.chunk_latencies(out),
                            "audio_s": metrics.audio_seconds(out),
                            "usage": (out or {}).get("usage", {}) if isinstance(out, dict)
                            else {}})
                    if i >= 1 and self._hopeless(names):
                        break
                for name in names:
                    if outs[name] and name not in self.cut:
                        self.timed[name].append({
                            "label": f"pass {p + 1}, concurrency 1",
                            "indices": [self.offset + j for j in range(len(outs[name]))],
                            "outputs": outs[name]})
            else:
                k = (li + p) % len(names)
                for name in names[k:] + names[:k]:
                    if name in self.cut:
                        continue
                    rec, outs_l = self.level(name, self.measured, c)
                    self.units[name].append({
                        "key": [p, c, None], "level": c, "time_s": rec["wall_s"],
                        "tokens": sum(_count(o) for o in outs_l), "requests": len(outs_l),
                        "latencies": rec["latencies"], "ttfts": rec["ttfts"], "load": _load(),
                        "chunk_ttfts": [x for o in outs_l for x in metrics.chunk_latencies(o)],
                        "audio_s": sum(metrics.audio_seconds(o) for o in outs_l),
                        "usage": _sum_usage(outs_l)})
                    self.timed[name].append({
                        "label": f"pass {p + 1}, concurrency {c}",
                        "indices": [self.offset + j for j in range(len(outs_l))],
                        "outputs": outs_l})
        self.passes += 1
        self.loads.append(_load())

    def _hopeless(self, names: list[str]) -> bool:
        base = {tuple(u["key"]): u for u in self.units[self.baseline]}
        for name in names:
            if name == self.baseline or name in self.cut:
                continue
            pairs = [(u, base[tuple(u["key"])]) for u in self.units[name]
                     if u["level"] == 1 and tuple(u["key"]) in base]
            if len(pairs) >= 2 and all(_unit_gain(u, b, self.sc.metric.kind) < CUT
                                       for u, b in pairs):
                self.cut.add(name)
                return True
        return False


def _sum_usage(outputs: list) -> dict:
    acc = sum((o.get("usage") or {}).get("accepted_prediction_tokens", 0)
              for o in outputs if isinstance(o, dict))
    rej = sum((o.get("usage") or {}).get("rejected_prediction_tokens", 0)
              for o in outputs if isinstance(o, dict))
    return {"accepted_prediction_tokens": acc, "rejected_prediction_tokens": rej}


def _rate(u: dict, what: str = "tokens") -> float:
    return u[what] / u["time_s"] if u["time_s"] > 0 else 0.0


def _unit_gain(u: dict, base: dict, metric: str) -> float:
    """One request's gain over the baseline's on the metric (its tokens/s for the rate kinds,
    its chunks' p50 latency for a chunk kind); 1 when the baseline's is not measured, 0 when
    only the arm's is missing."""
    if metric in metrics.CHUNK_KINDS:
        a, b = (metrics.percentile(x.get("chunk_ttfts", []), 50) for x in (u, base))
    else:
        a, b = _rate(u), _rate(base)
    if not b:
        return 1.0
    return metrics.gain(a, b, metric) if a else 0.0


# -- statistics -------------------------------------------------------------------------------


def paired_logs(a: list[dict], b: list[dict], metric: str) -> list[float]:
    """Paired log gains of arm a over arm b, one per sample (see the module docstring)."""
    if metric == "median_tok_s":
        base = {tuple(u["key"]): u for u in b if u["level"] == 1}
        out = []
        for u in a:
            v = base.get(tuple(u["key"])) if u["level"] == 1 else None
            if v is not None and _rate(u) > 0 and _rate(v) > 0:
                out.append(math.log(_rate(u) / _rate(v)))
        return out
    groups_a, groups_b = _by_pass_level(a), _by_pass_level(b)
    out = []
    for key, ga in groups_a.items():
        if key in groups_b:
            va, vb = _group_value(ga, metric), _group_value(groups_b[key], metric)
            if va and vb:
                out.append(math.log(metrics.gain(va, vb, metric)))
    return out


def _by_pass_level(units: list[dict]) -> dict[tuple, dict]:
    groups: dict[tuple, dict] = {}
    for u in units:
        g = groups.setdefault((u["key"][0], u["level"]),
                              {"time_s": 0.0, "tokens": 0, "requests": 0, "chunk_ttfts": []})
        g["time_s"] += u["time_s"]
        g["tokens"] += u["tokens"]
        g["requests"] += u["requests"]
        g["chunk_ttfts"] += u.get("chunk_ttfts", [])
    return groups


def _group_value(g: dict, metric: str) -> float | None:
    """The metric over one (pass, level) group, or over several merged; None: not measured."""
    if metric in metrics.CHUNK_KINDS:
        return metrics.percentile(g["chunk_ttfts"], 50)
    what = "requests" if metric == "requests_per_s" else "tokens"
    return g[what] / g["time_s"] if g["time_s"] else None


def point_ratio(a: list[dict], b: list[dict], metric: str) -> float | None:
    """The gain of arm a over arm b: the median paired gain (median_tok_s), else the gain of
    the merged common groups (the ratio of totals; of the pooled p50s for chunk latency)."""
    logs = paired_logs(a, b, metric)
    if not logs:
        return None
    if metric == "median_tok_s":
        return math.exp(statistics.median(logs))
    ga, gb = _by_pass_level(a), _by_pass_level(b)
    common = [k for k in ga if k in gb]

    def merged(groups: dict) -> dict:
        return {"time_s": sum(groups[k]["time_s"] for k in common),
                **{f: sum((groups[k][f] for k in common), 0 if f != "chunk_ttfts" else [])
                   for f in ("tokens", "requests", "chunk_ttfts")}}

    va, vb = _group_value(merged(ga), metric), _group_value(merged(gb), metric)
    if not (va and vb):
        return None
    return metrics.gain(va, vb, metric)


def interval(logs: list[float], metric: str, confidence: float = 0.95
             ) -> tuple[float | None, float | None, float]:
    """(low, high, coverage) of the ratio. Median: order statistics (coverage is exact for
    any distribution; below 6 samples it is the sample range, covering 1 - 2^(1-n)). Mean
    log ratio: a t interval. (None, None, 0) with too few samples."""
    n = len(logs)
    if n < 2:
        return None, None, 0.0
    if metric == "median_tok_s":
        xs = sorted(logs)
        k, cov = 1, 1 - 2 * 0.5 ** n
        for j in range(1, n // 2 + 1):  # widest-first: the largest j whose coverage holds
            c = 1 - 2 * sum(math.comb(n, i) for i in range(j)) * 0.5 ** n
            if c >= confidence:
                k, cov = j, c
        return math.exp(xs[k - 1]), math.exp(xs[n - k]), cov
    from scipy import stats

    mean, sd = statistics.fmean(logs), statistics.stdev(logs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return math.exp(mean - half), math.exp(mean + half), confidence


def classify(point: float | None, lo: float | None, hi: float | None,
             min_improvement: float) -> str:
    """Of a gain (> 1 better, whatever the metric's direction) and its interval. better: the
    interval lies above 1 and the point clears the threshold; not better: the interval lies
    below the threshold; else undecided (noise)."""
    if point is None or lo is None or hi is None:
        return UNDECIDED
    g = 1.0 + min_improvement
    if lo > 1.0 and point >= g:
        return BETTER
    if hi < g:
        return NOT_BETTER
    return UNDECIDED


def _summary(units: list[dict]) -> dict[str, Any]:
    c1 = [u for u in units if u["level"] == 1]
    lat = sorted(x for u in units for x in u["latencies"])
    ttft = sorted(x for u in units for x in u["ttfts"])
    wall = sum(u["time_s"] for u in units)
    tokens = sum(u["tokens"] for u in units)
    nreq = sum(u["requests"] for u in units)
    acc = sum(u["usage"].get("accepted_prediction_tokens", 0) for u in units)
    rej = sum(u["usage"].get("rejected_prediction_tokens", 0) for u in units)
    per_level: dict[str, dict] = {}
    for u in units:
        d = per_level.setdefault(str(u["level"]), {"tokens": 0, "wall_s": 0.0})
        d["tokens"] += u["tokens"]
        d["wall_s"] += u["time_s"]
    chunks = metrics.chunk_summary([x for u in units for x in u.get("chunk_ttfts", [])],
                                   sum(u.get("audio_s", 0.0) for u in units), wall)
    return {
        **chunks,
        "median_tok_s": statistics.median([_rate(u) for u in c1]) if c1 else 0.0,
        "throughput_tok_s": tokens / wall if wall else 0.0,
        "requests_per_s": nreq / wall if wall else 0.0,
        "p50_latency_s": _pct(lat, 50), "p99_latency_s": _pct(lat, 99),
        "p50_ttft_s": _pct(ttft, 50), "p99_ttft_s": _pct(ttft, 99),
        "completion_tokens": tokens, "wall_s": wall, "samples": len(units),
        "acceptance_rate": acc / (acc + rej) if acc + rej else None,
        "load_average": [u["load"] for u in units],
        "per_level": {c: {"throughput_tok_s": d["tokens"] / d["wall_s"] if d["wall_s"] else 0.0,
                          "wall_s": d["wall_s"]} for c, d in per_level.items()},
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


def _comparison(run: _Run, names: list[str], metric: str, min_improvement: float
                ) -> dict[str, dict]:
    out = {}
    base = run.units[run.baseline]
    for name in names:
        if name == run.baseline:
            continue
        if name in run.cut:
            out[name] = {"ratio": point_ratio(run.units[name], base, metric), "interval": None,
                         "coverage": 0.0, "samples": 0, "decision": NOT_BETTER, "cut": True}
            continue
        logs = paired_logs(run.units[name], base, metric)
        point = point_ratio(run.units[name], base, metric)
        lo, hi, cov = interval(logs, metric)
        decision = classify(point, lo, hi, min_improvement)
        if cov < MIN_COVERAGE or len(logs) < MIN_SAMPLES:  # too few samples to decide yet
            decision = UNDECIDED
        out[name] = {"ratio": point, "interval": None if lo is None else [lo, hi],
                     "coverage": cov, "samples": len(logs), "decision": decision}
    return out


# -- entry points -----------------------------------------------------------------------------


def _stacks(arms: dict[str, str], sc: Any, workspace: str, tolerant: bool
            ) -> tuple[dict[str, Any], dict[str, str]]:
    stacks, errors = {}, {}
    for name, path in arms.items():
        try:
            stacks[name] = build_stack(Plan.load(path), sc, workspace, audit=True)
        except Exception as exc:
            if not tolerant:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
    return stacks, errors


def _warm(run: _Run, stacks: dict[str, Any], warm: list[dict], errors: dict[str, str],
          baseline: str) -> None:
    for name in list(stacks):
        try:
            for req in warm:
                run.one(name, req, None)
        except Exception as exc:
            if name == baseline:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            del stacks[name]
            run.units.pop(name), run.timed.pop(name), run.findings.pop(name)


def benchmark(arms: dict[str, str], baseline: str, workspace: str, scenario_dir: str,
              requests: list[dict], min_improvement: float = 0.03,
              min_passes: int = 1, max_passes: int = 5,
              budget_s: float = 120.0, profile_arm: str | None = None) -> dict[str, Any]:
    """Compare mode: passes until every arm's ratio over `baseline` is decided (or the budget
    is spent); metrics, ratios, intervals, decisions, timed outputs and audit findings."""
    t_start = clock()
    sc = load_scenario(scenario_dir)
    stacks, _ = _stacks(arms, sc, workspace, tolerant=False)
    w = sc.workload.warmup_requests
    warm, measured = requests[:w] or requests[w:w + 1], requests[w:]
    run = _Run(sc, stacks, measured, w, baseline)
    _warm(run, stacks, warm, {}, baseline)
    names = list(stacks)
    metric = sc.metric.kind
    pass_s: list[float] = []
    comp: dict[str, dict] = {}
    while True:
        t0 = clock()
        run.run_pass(names)
        pass_s.append(clock() - t0)
        comp = _comparison(run, names, metric, min_improvement)
        decided = all(c["decision"] != UNDECIDED for c in comp.values())
        spent = clock() - t_start
        if run.passes >= max_passes or (decided and run.passes >= min_passes) or \
                spent + max(pass_s) > budget_s or run.cut:
            break
    result: dict[str, Any] = {
        "metric": metric, "ratio_is": _RATIO_IS, "passes": run.passes,
        "pass_s": [round(x, 2) for x in pass_s],
        "load_average": run.loads,
        "arms": {n: _summary(run.units[n]) for n in names},
        "ratios": {n: c["ratio"] for n, c in comp.items()},
        "comparison": comp, "findings": run.findings, "timed": run.timed,
    }
    if run.cut:
        result["note"] = f"cut short: {sorted(run.cut)} ran below x{CUT:.2f} of the baseline"
    if profile_arm is not None and profile_arm in stacks:
        from vibekit_agents.tasks.profile import profile_stack

        try:  # a scenario's own stack may not expose what the LLM profile needs
            result["profile"] = profile_stack(stacks[profile_arm], measured[0])
        except Exception as exc:
            result["profile"] = None
            result["profile_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return result


def screen(arms: dict[str, str], baseline: str, workspace: str, scenario_dir: str,
           requests: list[dict], min_improvement: float = 0.03,
           rungs: list[int] | None = None) -> dict[str, Any]:
    """Successive halving of arms against `baseline` at every load level; the ranking, each
    arm's ratio, interval and decision, timed outputs and audit findings."""
    sc = load_scenario(scenario_dir)
    stacks, errors = _stacks(arms, sc, workspace, tolerant=True)
    if baseline in errors:
        raise RuntimeError(f"the baseline arm failed to build: {errors[baseline]}")
    w = sc.workload.warmup_requests
    warm, measured = requests[:w] or requests[w:w + 1], requests[w:]
    run = _Run(sc, stacks, measured, w, baseline)
    _warm(run, stacks, warm[:1], errors, baseline)
    rungs = rungs or [min(2, len(measured)), min(4, len(measured))]
    alive = [n for n in stacks if n != baseline]
    metric = sc.metric.kind
    history = []
    comp: dict[str, dict] = {}
    for k in rungs:
        if not alive:
            break
        try:
            run.run_pass([baseline] + alive, num_c1=k, deadline_x=4.0)
        except Exception as exc:  # noqa: BLE001 - which arm broke is unknown: all drop out
            for name in alive:
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            alive = []
            break
        comp.update(_comparison(run, [baseline] + alive, metric, min_improvement))
        history.append({"requests_at_c1": k, "ratios": {n: comp[n]["ratio"] for n in alive}})
        alive = [n for n in alive if n not in run.cut]
        alive.sort(key=lambda n: comp[n]["ratio"] or 0.0, reverse=True)  # gains: best first
        if len(alive) <= 1:
            break
        alive = alive[:max(1, math.ceil(len(alive) / 2))]
    ranking = sorted(comp, key=lambda n: (n in alive, comp[n]["ratio"] or 0.0), reverse=True)
    return {"ranking": ranking, "scores": {n: c["ratio"] for n, c in comp.items()},
            "comparison": comp, "history": history, "errors": errors,
            "winner": alive[0] if alive else None, "load_average": run.loads, "ratio_is": _RATIO_IS,
            "findings": run.findings, "timed": run.timed}
