"""The per-chunk latency metric (chunk_ttft_p50_s, lower is better): gains flip for it in
every comparison, the scenario spec refuses a contradicting direction, the judge refuses
outputs it cannot measure, and the evaluator catches latencies shaved off the real ones."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from vibekit_agents.metrics import claim_findings, format_number, gain, output_problems
from vibekit_agents.scenario import ScenarioError, load_scenario
from vibekit_agents.stack import StepEvent
from vibekit_agents.tasks.bench import (
    BETTER,
    NOT_BETTER,
    _comparison,
    _Run,
    _summary,
    classify,
    interval,
    paired_logs,
    point_ratio,
)

from .conftest import REPO, TINY_TOML, make_tiny_scenario

KIND = "chunk_ttft_p50_s"


def _units(p50s, level=8, spread=(0.5, 1.0, 1.5)):
    """One unit per pass at `level`; its chunk latencies have median p50."""
    return [{"key": [p, level, None], "level": level, "time_s": 2.0, "tokens": 40,
             "requests": 8, "chunk_ttfts": [m * s for s in spread], "audio_s": 16.0}
            for p, m in enumerate(p50s)]


def test_a_lower_latency_is_a_gain_above_one():
    base = _units([0.10, 0.12, 0.11])
    faster = _units([0.05, 0.06, 0.055])  # half the latency in every pass
    slower = _units([0.20, 0.24, 0.22])
    assert [round(math.exp(x), 9) for x in paired_logs(faster, base, KIND)] == [2.0] * 3
    assert math.isclose(point_ratio(faster, base, KIND), 2.0)
    assert math.isclose(point_ratio(slower, base, KIND), 0.5)
    assert gain(0.05, 0.10, KIND) == 2.0 and gain(50.0, 100.0, "requests_per_s") == 0.5


def test_the_decision_and_the_ranking_read_gains_for_a_lower_is_better_metric():
    base = _units([0.10, 0.12, 0.11, 0.10])
    arms = {"base": base, "fast": _units([0.05, 0.06, 0.055, 0.05]),
            "slow": _units([0.20, 0.24, 0.22, 0.20])}
    run = SimpleNamespace(units=arms, baseline="base", cut=set())
    comp = _comparison(run, list(arms), KIND, 0.05)
    assert comp["fast"]["decision"] == BETTER and comp["fast"]["ratio"] > 1.9
    assert comp["slow"]["decision"] == NOT_BETTER and comp["slow"]["ratio"] < 0.6
    lo, hi, _ = interval(paired_logs(arms["fast"], base, KIND), KIND)
    assert classify(comp["fast"]["ratio"], lo, hi, 0.05) == BETTER
    # an arm cut short for being far slower is not better, whatever the metric's direction
    run.cut = {"slow"}
    assert _comparison(run, list(arms), KIND, 0.05)["slow"]["decision"] == NOT_BETTER


def test_summary_reports_chunk_p50_p99_and_audio_seconds_per_wall_second():
    units = _units([0.1, 0.1], spread=[0.01 * i for i in range(1, 101)])
    for u in units:
        u.update(latencies=[1.0], ttfts=[0.1], load=0.0, usage={})
    s = _summary(units)
    assert math.isclose(s["chunk_ttft_p50_s"], 0.1 * 0.5)
    assert math.isclose(s["chunk_ttft_p99_s"], 0.1 * 0.99)
    assert s["num_chunks"] == 200 and math.isclose(s["audio_s_per_s"], 32.0 / 4.0)
    assert format_number("chunk_ttft_p99_s", 0.0123) == "TTFT per chunk p99 12.3 ms"


def test_the_shipped_scenario_declares_the_chunk_metric():
    sc = load_scenario(REPO / "scenarios" / "streaming-asr")
    assert sc.metric.kind == KIND and not sc.metric.higher_is_better
    assert sc.metric.label == "TTFT per chunk p50" and sc.metric.format(0.0653) == "65.3 ms"
    assert {"chunk_ttft_p99_s", "audio_s_per_s"} <= set(sc.metric.report)
    assert {"stack.max_num_seqs", "stack.min_encode_seconds"} <= set(sc.search.knobs)


@pytest.mark.parametrize("metric, message", [
    ('kind = "chunk_ttft_p50_s"\nhigher_is_better = true', "contradicts kind"),
    ('kind = "requests_per_s"\nhigher_is_better = false', "contradicts kind"),
    ('name = "latency"', "[metric] name 'latency' is not one of"),
])
def test_a_metric_direction_that_contradicts_its_kind_is_refused(tmp_path, metric, message):
    text = TINY_TOML.replace('kind = "median_tok_s"', metric)
    folder = make_tiny_scenario(tmp_path / "sc", text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(folder)
    assert message in str(err.value)


def test_alias_ttft_per_chunk_loads_as_the_chunk_kind(tmp_path):
    text = TINY_TOML.replace('kind = "median_tok_s"', 'name = "ttft_per_chunk"')
    sc = load_scenario(make_tiny_scenario(tmp_path / "sc", text))
    assert sc.metric.kind == KIND and not sc.metric.higher_is_better


def test_outputs_without_well_formed_chunk_latencies_cannot_be_measured():
    req = {"chunk_seconds": 0.16}
    good = {"chunk_ttft_s": [0.01, 0.02], "audio_seconds": 0.32}
    assert output_problems(KIND, [req], [good]) == []
    assert output_problems("requests_per_s", [req], [{}]) == []  # only chunk kinds need them
    cases = [({"audio_seconds": 0.32}, "chunk_ttft_s must be a non-empty list"),
             ({"chunk_ttft_s": [0.01, -1.0], "audio_seconds": 0.32}, "not finite latencies"),
             ({"chunk_ttft_s": [0.01, float("nan")], "audio_seconds": 0.32}, "not finite"),
             ({"chunk_ttft_s": [0.01] * 3, "audio_seconds": 0.32}, "at most 2"),
             ({"chunk_ttft_s": [0.01]}, "audio_seconds must be a positive number")]
    for out, message in cases:
        problems = output_problems(KIND, [req], [out])
        assert len(problems) == 1 and message in problems[0] and "request 0" in problems[0]
    assert "no positive chunk_seconds" in output_problems(KIND, [{}], [good])[0]


def test_claimed_latencies_must_fall_in_a_step_that_returned_tokens():
    req = {"chunk_seconds": 0.1}
    added = (100.0, 100.001)
    windows = [(100.0, 100.03), (100.15, 100.18)]  # tokens for chunk 0, then for chunk 1
    honest = {"chunk_ttft_s": [0.03, 0.08]}  # chunk 1 due at 100.1, first token at 100.18
    assert claim_findings(req, honest, added, windows, "w") == []
    shaved = {"chunk_ttft_s": [0.03, 0.0]}  # claims chunk 1's token the moment it was due
    found = claim_findings(req, shaved, added, windows, "w")
    assert len(found) == 1 and "chunk 1" in found[0]
    assert claim_findings(req, honest, added, [], "w")  # latencies, yet no token at all


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _FakeStreamStack:
    """Chunks of `chunk_seconds` on a virtual clock; each step takes `step_s` and gives a first
    token to every chunk due before it started. `shave` scales the latencies it reports."""

    def __init__(self, clock: _VirtualClock, step_s: float, shave: float = 1.0) -> None:
        self.clock, self.step_s, self.shave, self.streams = clock, step_s, shave, {}

    def activate(self):
        pass

    def add(self, request, request_id):
        n = math.ceil(request["audio_seconds"] / request["chunk_seconds"])
        self.streams[request_id] = {"start": self.clock(), "c": request["chunk_seconds"],
                                    "n": n, "done": 0, "lat": [], "a": request["audio_seconds"]}

    def step(self):
        t0 = self.clock()
        self.clock.now += self.step_s
        now, events = self.clock(), []
        for rid, s in list(self.streams.items()):
            due = [k for k in range(s["done"], s["n"]) if s["start"] + k * s["c"] <= t0]
            for k in due:
                s["lat"].append((now - (s["start"] + k * s["c"])) * self.shave)
            s["done"] += len(due)
            if s["done"] == s["n"]:
                del self.streams[rid]
                events.append(StepEvent(rid, 1, True, {"token_ids": [1], "audio_seconds": s["a"],
                                                       "chunk_ttft_s": s["lat"]}))
            elif due:
                events.append(StepEvent(rid, 1, False, None))
        return events


@pytest.mark.parametrize("shave, caught", [(1.0, False), (0.1, True), (0.0, True)])
def test_the_benchmark_flags_a_stack_that_shaves_its_chunk_latencies(shave, caught,
                                                                     monkeypatch):
    import vibekit_agents.tasks.bench as bench

    clock = _VirtualClock()
    monkeypatch.setattr(bench, "clock", clock)
    sc = SimpleNamespace(workload=SimpleNamespace(concurrency=(2,)))
    requests = [{"chunk_seconds": 0.06, "audio_seconds": 0.24}] * 2
    run = _Run(sc, {"arm": _FakeStreamStack(clock, 0.025, shave)}, requests, 0, "arm")
    rec, outputs = run.level("arm", requests, 2)
    assert all(len(o["chunk_ttft_s"]) == 4 for o in outputs)
    assert bool(run.findings["arm"]) == caught, run.findings


def test_an_arm_is_cut_short_on_the_metric_not_on_its_token_rate():
    sc = SimpleNamespace(workload=SimpleNamespace(concurrency=(1,)),
                         metric=SimpleNamespace(kind=KIND))

    def c1(p50):  # same tokens and wall time per request: only the chunk latencies differ
        return [{"key": [0, 1, i], "level": 1, "time_s": 1.0, "tokens": 5, "requests": 1,
                 "chunk_ttfts": [p50] * 3} for i in range(2)]

    run = _Run(sc, {"base": None, "slow": None, "fast": None}, [], 0, "base")
    run.units = {"base": c1(0.1), "slow": c1(0.5), "fast": c1(0.02)}
    assert run._hopeless(["base", "slow", "fast"]) and run.cut == {"slow"}
