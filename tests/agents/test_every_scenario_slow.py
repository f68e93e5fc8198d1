"""Every shipped scenario runs through `vibekit-synthesize --quick --rounds 1`, so none can
silently break: preparation, the start plan's judge and benchmark, one search round, the final
side-by-side check and the report. All of them are slow (a minute or more each on 2 shared
cores); the default run keeps a fast subset: every scenario's quick variant loads, and the
unified-image pipeline (a scenario-owned stack.py) runs end to end."""

from __future__ import annotations

import json

import pytest

from vibekit_agents.cli import main
from vibekit_agents.metrics import format_number
from vibekit_agents.scenario import load_scenario, write_quick_variant

from .conftest import REPO

SCENARIOS = sorted(p.name for p in (REPO / "scenarios").iterdir()
                   if (p / "scenario.toml").is_file())


def _synthesize(name, tmp_path):
    out = tmp_path / name
    assert main([str(REPO / "scenarios" / name), "--quick", "--rounds", "1", "--out", str(out),
                 "--budget-minutes", "20"]) == 0
    assert (out / "report.md").is_file() and (out / "server.py").is_file()
    memory = [json.loads(line) for line in
              (out / "workspace" / "memory.jsonl").read_text().splitlines()]
    assert memory[0]["round"] == 0 and memory[0]["outcome"] == "accepted"
    assert len(memory) == 2, "the quick run must reach a search round"
    # the report shows the scenario's metric, with its unit, and every number it asks for
    sc, report = load_scenario(REPO / "scenarios" / name), (out / "report.md").read_text()
    assert f"| {sc.metric.label} |" in report and sc.metric.format(memory[0]["metric"]) in report
    for k in sc.metric.report:
        assert format_number(k, memory[0]["report"][k]) in report, k
    return out, memory


@pytest.mark.parametrize("name", SCENARIOS)
def test_quick_variant_of_every_scenario_loads(name, tmp_path):
    sc = load_scenario(REPO / "scenarios" / name)
    quick = load_scenario(write_quick_variant(sc, tmp_path / name))
    assert quick.name == sc.name and quick.metric == sc.metric and quick.search == sc.search
    assert quick.workload.num_requests <= sc.workload.num_requests
    assert max(quick.workload.concurrency) <= quick.workload.num_requests


def test_unified_image_synthesizes_with_its_own_stack(tmp_path):
    out, memory = _synthesize("unified-image", tmp_path)
    assert memory[1]["changes"] and all(k.startswith("stack.") for k in memory[1]["changes"])
    verdict = json.loads((out / "workspace" / "rounds" / "round-00" / "judge.json").read_text())
    assert verdict["passed"] and verdict["checker"]["min_psnr_db"] >= 35.0


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "unified-image"])
def test_scenario_synthesizes_one_round(name, tmp_path):
    _synthesize(name, tmp_path)
