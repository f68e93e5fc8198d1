"""Plans: built from a scenario's start, changed by dotted knobs, validated with errors that name
the field, rendered to a server.py that serves the same stack through vibekit.serve."""

from __future__ import annotations

import pytest

from vibekit_agents.plan import Plan, PlanError
from vibekit_agents.scenario import load_scenario
from vibekit_agents.server_py import render_server_py

from .conftest import REPO


def _start() -> Plan:
    sc = load_scenario(REPO / "scenarios" / "code-edit")
    return Plan.start(sc, "dummy:tiny-llama")


def test_start_plan_is_plain_decoding_on_engine_defaults():
    plan = _start()
    assert not plan.use_predictions and plan.num_threads == 0  # 0: torch's default, the cores
    assert plan.engine_options() == {"max_model_len": 1024, "seed": 0,
                                     "enable_predictions": False}


def test_changes_round_trip_through_toml():
    plan = _start().with_changes({"serving.use_predictions": True,
                                  "engine.num_draft_tokens": 32})
    again = Plan.loads(plan.dumps())
    assert again.data == plan.data and again.digest() == plan.digest()
    assert _start().diff(again) == {"engine.num_draft_tokens": (None, 32),
                                    "serving.use_predictions": (False, True)}


@pytest.mark.parametrize("changes, field", [
    ({"workload.num_requests": 1}, "unknown section [workload]"),
    ({"serving.use_predictions": "yes"}, "[serving] use_predictions"),
    ({"runtime.num_threads": -2}, "[runtime] num_threads"),
    ({"model.dtype": "int3"}, "[model] dtype"),
    ({"extension.module": "../outside.py"}, "[extension] module"),
    ({"serving.batch_everything": True}, "[serving] batch_everything is not a plan knob"),
])
def test_bad_plans_name_the_field(changes, field):
    with pytest.raises(PlanError, match=field.replace("[", r"\[").replace("]", r"\]")):
        _start().with_changes(changes)


def test_plan_builds_its_engine():
    plan = _start().with_changes({"serving.use_predictions": True, "engine.page_size": 8})
    engine = plan.build_engine()
    assert engine.config.cache.page_size == 8 and engine.config.max_model_len == 1024


def test_server_py_serves_the_plan_through_the_public_api():
    plan = _start().with_changes({"serving.use_predictions": True,
                                  "engine.num_draft_tokens": 32})
    text = render_server_py(plan, "code-edit")
    compile(text, "server.py", "exec")
    assert "from vibekit.serve import create_app" in text
    assert "'num_draft_tokens': 32" in text and "USE_PREDICTIONS = True" in text
    plain = render_server_py(_start(), "code-edit")
    assert "USE_PREDICTIONS = False" in plain and "'enable_predictions': False" in plain
    assert "PlainDecodingEngine" not in plain  # the engine option switches predictions off
