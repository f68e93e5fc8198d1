"""Scenario specs: the shipped ones load; malformed ones fail naming the bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from vibekit_agents.scenario import ScenarioError, list_scenarios, load_scenario

from .conftest import REPO, TINY_TOML, make_tiny_scenario


@pytest.mark.parametrize("name", ["standard", "code-edit"])
def test_shipped_scenarios_load(name):
    sc = load_scenario(REPO / "scenarios" / name)
    assert sc.name == name and sc.workload.num_requests > 0
    assert sc.checker.exact and sc.metric.higher_is_better
    assert sc.start and sc.search.primitives


def test_code_edit_uses_the_zoo_model_or_its_labelled_fallback():
    sc = load_scenario(REPO / "scenarios" / "code-edit")
    source, note = sc.resolved_model()
    assert source.startswith(("zoo:", "dummy:"))
    assert sc.workload.params["mode"] == "auto"
    assert sc.metric.kind == "median_tok_s" and sc.workload.concurrency == (1,)


def test_workload_and_checker_extras_are_parameters(tmp_path):
    sc = load_scenario(make_tiny_scenario(tmp_path / "sc"))
    assert sc.workload.params == {"mode": "derived", "edit_density": 0.1, "num_lines": 4,
                                  "max_tokens": 24}
    assert sc.search.knobs["engine.num_draft_tokens"] == [4, 32]


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('kind = "median_tok_s"', 'kind = "fastest"'), "[metric] kind"),
    (lambda t: t.replace("num_requests = 2", "num_requests = -1"), "[workload] num_requests"),
    (lambda t: t.replace("concurrency = [1]", 'concurrency = ["many"]'),
     "[workload] concurrency"),
    (lambda t: t.replace("[metric]", "[metrics]"), "unknown top-level keys ['metrics']"),
    (lambda t: t.split("[metric]")[0] + "[checker]" + t.split("[checker]")[1],
     "missing the [metric] table"),
    (lambda t: t.replace('dtype = "float32"', 'dtype = "float64"'), "[model] dtype"),
    (lambda t: t.replace("timeout_s = 60", "timeout_s = 0"), "[checker] timeout_s"),
    (lambda t: t.replace('[start.serving]', '[start.workload]'), "[start] has unknown"),
    (lambda t: t.replace("[model]\n", "[model]\ncolour = 1\n"), "[model] has unknown keys"),
    (lambda t: t + "\n[[oops", "not valid TOML"),
    (lambda t: t.replace('"engine.num_draft_tokens" = [4, 32]',
                         '"engine.num_draft_tokens" = []'), "[search.knobs]"),
])
def test_malformed_scenario_names_the_field(tmp_path, edit, field):
    folder = make_tiny_scenario(tmp_path / "sc", edit(TINY_TOML))
    with pytest.raises(ScenarioError) as err:
        load_scenario(folder)
    assert field in str(err.value) and "scenario.toml" in str(err.value)


def test_missing_files_are_named(tmp_path):
    folder = make_tiny_scenario(tmp_path / "sc")
    (folder / "checker.py").unlink()
    with pytest.raises(ScenarioError, match="missing checker.py"):
        load_scenario(folder)
    with pytest.raises(ScenarioError, match="no such scenario folder"):
        load_scenario(tmp_path / "nowhere")


def test_list_shows_every_shipped_scenario():
    names = {Path(folder).name for folder, _, _ in list_scenarios()}
    assert {"standard", "code-edit"} <= names
