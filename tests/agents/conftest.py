"""A tiny code-edit scenario (the real workload, reference and checker files on dummy:tiny-llama
with a few short requests) and helpers that build a run context around it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vibekit_agents.context import RunContext
from vibekit_agents.plan import Plan
from vibekit_agents.sandbox import run_task
from vibekit_agents.scenario import load_scenario
from vibekit_agents.skills import load_skills
from vibekit_agents.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]

TINY_TOML = """
name = "tiny-edit"
description = "code-edit on dummy:tiny-llama, a few short requests (tests)"

[model]
source = "dummy:tiny-llama"
dtype = "float32"
device = "cpu"
seed = 0
max_model_len = 1024

[workload]
num_requests = 2
warmup_requests = 1
concurrency = [1]
seed = 3
mode = "derived"
edit_density = 0.1
num_lines = 4
max_tokens = 24

[metric]
kind = "median_tok_s"
report = ["p99_latency_s"]
min_improvement = 0.03

[checker]
kind = "exact_tokens"
timeout_s = 60
memory_limit_mb = 4096

[search]
primitives = ["predicted-outputs", "cpu-threads"]

[search.knobs]
"engine.num_draft_tokens" = [4, 32]
"engine.max_draft_tokens" = [128]
"runtime.num_threads" = [2]

[start.serving]
use_predictions = false

[start.runtime]
num_threads = 1
"""


def make_tiny_scenario(folder: Path, toml: str = TINY_TOML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("workload.py", "reference.py", "checker.py"):
        shutil.copy(REPO / "scenarios" / "code-edit" / name, folder / name)
    (folder / "scenario.toml").write_text(toml)
    return folder


@pytest.fixture(scope="session")
def tiny_scenario(tmp_path_factory) -> Path:
    return make_tiny_scenario(tmp_path_factory.mktemp("tiny-edit"))


@pytest.fixture(scope="session")
def tiny_prepared(tiny_scenario, tmp_path_factory) -> Path:
    """An output folder with the tiny scenario's requests, facts and references."""
    out = tmp_path_factory.mktemp("prepared")
    res = run_task("vibekit_agents.tasks.prepare:prepare",
                   dict(scenario_dir=str(tiny_scenario), data_dir=str(out / "data"),
                        judge_dir=str(out / ".judge")), timeout_s=300)
    assert res.ok, res.error + res.traceback
    return out


def make_context(scenario_dir: Path, prepared: Path, out: Path, scenario=None) -> RunContext:
    """A RunContext on a fresh workspace whose data is a copy of `prepared`."""
    sc = scenario or load_scenario(scenario_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("data", ".judge"):
        shutil.copytree(prepared / name, out / name, dirs_exist_ok=True)
    ctx = RunContext(scenario=sc, out=out, workspace=Workspace(out / "workspace"),
                     skills=load_skills(), progress=lambda m: None)
    ctx.facts = json.loads((out / "data" / "facts.json").read_text())
    (out / "logs").mkdir(exist_ok=True)
    start = Plan.start(sc, ctx.facts["model.source"])
    ctx.workspace.create(sc, start.dumps(), {})
    (ctx.workspace.root / "start.toml").write_text(start.dumps())
    return ctx
