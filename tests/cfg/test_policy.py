"""CFGCachePolicy: which steps run the unconditional branch, and its limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vibekit.cfg import CFGCachePolicy


def uncond_steps(policy: CFGCachePolicy, num_steps: int) -> list[int]:
    return [s for s in range(num_steps) if policy.runs_uncond(s)]


def test_full_cfg_runs_uncond_on_every_step():
    assert uncond_steps(CFGCachePolicy.full(), 7) == list(range(7))
    assert CFGCachePolicy.full().is_full


def test_every_k_after_warmup():
    assert uncond_steps(CFGCachePolicy.every(3, warmup_steps=4), 12) == [0, 1, 2, 3, 4, 7, 10]
    assert uncond_steps(CFGCachePolicy.every(4), 10) == [0, 4, 8]


def test_gate_step_stops_uncond_and_drop_or_reuse_applies_after_it():
    drop = CFGCachePolicy.gate(gate_step=3)
    assert uncond_steps(drop, 6) == [0, 1, 2]
    assert [drop.drops(s) for s in range(6)] == [False] * 3 + [True] * 3
    reuse = CFGCachePolicy.gate(gate_step=3, after_gate="reuse")
    assert not any(reuse.drops(s) for s in range(6))


def test_adaptive_gate_closes_per_request():
    policy = CFGCachePolicy.gate(gate_cos=0.9)
    assert policy.runs_uncond(5, gated=False)
    assert not policy.runs_uncond(5, gated=True)
    assert policy.drops(5, gated=True)
    assert policy.runs_uncond(0, gated=True)  # step 0 always computes a delta


def test_extrapolation_coefficient_is_capped_at_one_gap():
    policy = CFGCachePolicy.every(4, extrapolate=True)
    assert policy.extrapolation(step=9, last=8, prev=4) == 0.25
    assert policy.extrapolation(step=30, last=8, prev=4) == 1.0
    assert policy.extrapolation(step=9, last=8, prev=None) == 0.0
    assert CFGCachePolicy.every(4).extrapolation(step=9, last=8, prev=4) == 0.0


def test_fastercache_weights_follow_progress():
    policy = CFGCachePolicy.fastercache(alpha_low=1.2, alpha_high=1.3)
    assert policy.delta_weights(0, 10) == (1.0, 1.0)  # before low_range (0.1, 0.9)
    assert policy.delta_weights(5, 10) == (1.2, 1.0)
    assert policy.delta_weights(8, 10) == (1.2, 1.3)
    assert policy.delta_weights(9, 10) == (1.0, 1.3)


@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 60))
def test_uncond_count_matches_the_schedule(num_steps, interval, warmup):
    policy = CFGCachePolicy.every(interval, warmup)
    if interval > num_steps or warmup > num_steps:
        with pytest.raises(ValueError):
            policy.check(num_steps)
        return
    steps = uncond_steps(policy, num_steps)
    assert steps[0] == 0
    assert set(range(min(warmup, num_steps))) <= set(steps)
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert all(g <= interval for g in gaps)
    assert policy.num_uncond_steps(num_steps) == len(steps)


def test_cache_interval_larger_than_step_count_is_an_error_naming_both():
    with pytest.raises(ValueError, match="interval 30 is larger than the step count 20"):
        CFGCachePolicy.every(30).check(20)
    with pytest.raises(ValueError, match="gate_step 25 is larger than the step count 20"):
        CFGCachePolicy.gate(gate_step=25).check(20)


@pytest.mark.parametrize("kwargs, message", [
    (dict(interval=0), "interval must be >= 1"),
    (dict(warmup_steps=-1), "warmup_steps must be >= 0"),
    (dict(gate_step=0), "gate_step must be >= 1"),
    (dict(gate_cos=1.5), "gate_cos must be in"),
    (dict(after_gate="skip"), "after_gate must be one of"),
    (dict(alpha_low=9.0), "alpha_low must be in"),
    (dict(low_range=(0.8, 0.2)), "low_range"),
    (dict(freq_radius=0.0), "freq_radius"),
])
def test_bad_knobs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CFGCachePolicy(**kwargs)
