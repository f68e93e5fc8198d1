"""Every shipped scenario runs through `vibekit-synthesize --rounds 1` (slow: minutes each), so
none can silently break: preparation, the start plan's judge and benchmark, one search round,
the final check and the report."""

from __future__ import annotations

import pytest

from vibekit_agents.cli import main

from .conftest import REPO

SCENARIOS = sorted(p.name for p in (REPO / "scenarios").iterdir()
                   if (p / "scenario.toml").is_file())


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(
        strict=True, reason="unified-image has no stack.py yet: the flow sampler is not an "
                            "Engine and its references are arrays (issue 19, item 4, open)"))
    if n == "unified-image" else n for n in SCENARIOS])
def test_scenario_synthesizes_one_round(name, tmp_path):
    out = tmp_path / name
    assert main([str(REPO / "scenarios" / name), "--rounds", "1", "--out", str(out),
                 "--budget-minutes", "30"]) == 0
    assert (out / "report.md").is_file() and (out / "server.py").is_file()
