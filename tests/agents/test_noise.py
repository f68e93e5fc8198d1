"""Noise-aware decisions: intervals of paired ratios, the three-way decision, bounded retries of
inconclusive values, the seeds summary and the scenario skeleton."""

from __future__ import annotations

import math
import random

from vibekit_agents.cli import main
from vibekit_agents.roles.planner import MAX_NOISE_RETRIES, tried_values
from vibekit_agents.scenario import load_scenario
from vibekit_agents.seeds import summarize_runs
from vibekit_agents.tasks.bench import (
    BETTER,
    NOT_BETTER,
    UNDECIDED,
    classify,
    interval,
    paired_logs,
    point_ratio,
)
from vibekit_agents.workspace import INCONCLUSIVE, NOT_BENEFICIAL


def _units(rates, level=1, tokens=100):
    return [{"key": [0, level, i], "level": level, "time_s": tokens / r, "tokens": tokens,
             "requests": 1} for i, r in enumerate(rates)]


def test_median_interval_is_order_statistics_with_exact_coverage():
    logs = [math.log(x) for x in (1.1, 1.2, 1.3, 1.15, 1.25, 1.05, 1.22, 1.18, 1.12, 1.3)]
    lo, hi, cov = interval(logs, "median_tok_s")
    # sorted: 1.05 1.1 ... 1.25 1.3 1.3; n=10: the 2nd and the 9th order statistics
    assert math.isclose(lo, 1.1) and math.isclose(hi, 1.3)
    assert abs(cov - (1 - 2 * 11 / 1024)) < 1e-12 and cov >= 0.95
    assert interval(logs[:1], "median_tok_s") == (None, None, 0.0)


def test_t_interval_of_the_mean_log_ratio_widens_with_noise():
    rng = random.Random(0)
    tight = [math.log(1.3) + rng.gauss(0, 0.01) for _ in range(6)]
    loose = [math.log(1.3) + rng.gauss(0, 0.4) for _ in range(6)]
    lo_t, hi_t, _ = interval(tight, "throughput_tok_s")
    lo_l, hi_l, _ = interval(loose, "throughput_tok_s")
    assert 1.25 < lo_t < 1.3 < hi_t < 1.35
    assert hi_l - lo_l > 5 * (hi_t - lo_t)


def test_three_way_decision():
    assert classify(1.3, 1.2, 1.4, 0.05) == BETTER
    assert classify(1.0, 0.95, 1.04, 0.05) == NOT_BETTER
    assert classify(1.06, 0.9, 1.3, 0.05) == UNDECIDED  # the noise straddles both sides
    assert classify(1.04, 1.01, 1.07, 0.05) == UNDECIDED  # real but below the threshold? not yet
    assert classify(None, None, None, 0.05) == UNDECIDED


def test_paired_ratios_pair_the_same_request():
    a, b = _units([200, 100, 300]), _units([100, 100, 100])
    assert sorted(round(math.exp(x), 6) for x in paired_logs(a, b, "median_tok_s")) == [1, 2, 3]
    assert point_ratio(a, b, "median_tok_s") == 2.0
    # throughput: one sample per (pass, level), the ratio of totals
    assert abs(point_ratio(a, b, "throughput_tok_s") - 300 / (100 / 200 + 1 + 100 / 300) / 100
               ) < 1e-9


def test_inconclusive_values_are_retried_a_bounded_number_of_times():
    entry = {"changes": {"engine.max_num_seqs": 8}, "outcome": INCONCLUSIVE, "screened": []}
    final, _ = tried_values([entry], "engine.max_num_seqs")
    assert "8" not in final  # retried later
    final, _ = tried_values([entry] * MAX_NOISE_RETRIES, "engine.max_num_seqs")
    assert "8" in final
    lost = {"changes": {"engine.max_num_seqs": 4}, "outcome": NOT_BENEFICIAL, "screened": []}
    assert "4" in tried_values([lost], "engine.max_num_seqs")[0]


def test_seeds_summary_counts_steps_and_spread():
    runs = [{"run": 1, "speedup": 2.0, "speedup_text": "x2.00", "inconclusive": 0, "rounds": 3,
             "steps": ["serving.use_predictions: False -> True"]},
            {"run": 2, "speedup": 2.4, "speedup_text": "x2.40", "inconclusive": 1, "rounds": 3,
             "steps": ["serving.use_predictions: False -> True",
                       "runtime.num_threads: 0 -> 1"]},
            {"run": 3, "speedup": 2.2, "speedup_text": "x2.20", "inconclusive": 0, "rounds": 3,
             "steps": ["serving.use_predictions: False -> True"]}]
    s = summarize_runs(runs)
    assert (s["median"], s["min"], s["max"]) == (2.2, 2.0, 2.4)
    assert abs(s["spread"] - 1.2) < 1e-9
    assert s["steps"] == {"serving.use_predictions: True": 3, "runtime.num_threads: 1": 1}


def test_init_writes_a_loadable_scenario_and_refuses_to_overwrite(tmp_path, capsys):
    folder = tmp_path / "my-shop"
    assert main(["--init", str(folder)]) == 0
    sc = load_scenario(folder)
    assert sc.name == "my-shop" and sc.workload.concurrency == (1, 4)
    requests = sc.module("workload").make_requests(0, 3, max_tokens=8)
    assert len(requests) == 3 and all(r["max_tokens"] == 8 for r in requests)
    assert main(["--init", str(folder)]) == 2
    assert "exists" in capsys.readouterr().err
