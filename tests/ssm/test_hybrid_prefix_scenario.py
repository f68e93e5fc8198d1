"""scenarios/hybrid-prefix: loads, and a small instance of its workload passes its checker
against its HF reference with vibekit's hybrid prefix cache on."""

from __future__ import annotations

from pathlib import Path

from vibekit import Engine, SamplingParams
from vibekit_agents.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2] / "scenarios" / "hybrid-prefix"


def _module(name: str):
    """Import one of the scenario's files (see Scenario.module)."""
    return load_scenario(ROOT).module(name)


def test_scenario_loads():

    sc = load_scenario(ROOT)
    assert sc.checker.exact and sc.model.source == "dummy:model.json"


def test_small_workload_passes_checker_with_prefix_cache():
    requests = _module("workload").make_requests(0, 3, prefix_len=40, tail_len=6, max_tokens=5)
    assert len({tuple(r["prompt"][:40]) for r in requests}) == 1
    source = f"dummy:{ROOT / 'model.json'}"
    references = _module("reference").reference_outputs(requests, model=source, seed=0)
    engine = Engine.from_pretrained(source, page_size=8, max_model_len=128)
    outs = engine.generate([r["prompt"] for r in requests],
                           SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    verdict = _module("checker").check([{"token_ids": o.token_ids} for o in outs], references)
    assert verdict["passed"], verdict
    assert engine.stats()["hybrid_prefix_hit_tokens"] > 0
    bad = [{"token_ids": [t + 1 for t in o.token_ids]} for o in outs]
    assert not _module("checker").check(bad, references)["passed"]
