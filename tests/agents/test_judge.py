"""The accuracy judge: honest candidates pass; planted cheats, hangs, memory hogs, broken plans
and crashing checkers each end with their own classified outcome."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from vibekit_agents.plan import Plan
from vibekit_agents.roles.cheat_scan import scan_source
from vibekit_agents.roles.judge import Judge
from vibekit_agents.scenario import load_scenario
from vibekit_agents.workspace import (
    CHEATING,
    CHECKER_FAILED,
    CRASHED,
    IMPLEMENTATION_BUG,
    TIMED_OUT,
)

from .conftest import make_context, make_tiny_scenario

# Serves a request it has seen before from memory: the second time, no forward at all. The
# names avoid the static scan's vocabulary, so only the runtime audit can catch it.
REMEMBERED_OUTPUTS = '''
from vibekit import RequestOutput

remembered = {}


def extend(engine, plan):
    add, step, busy = engine.add_request, engine.step, engine.has_unfinished_requests
    replay, keys = {}, {}

    def add_request(prompt, params=None, request_id=None, prediction=None):
        key = (repr(prompt), params.max_tokens)
        if key in remembered:
            replay[request_id] = remembered.get(key)
            return request_id
        keys[request_id] = key
        return add(prompt, params, request_id=request_id, prediction=prediction)

    def new_step():
        outs = []
        for rid in list(replay):
            old = replay.pop(rid)
            outs.append(RequestOutput(rid, old.prompt_token_ids, old.token_ids, old.text,
                                      old.finish_reason, old.usage, old.token_ids, old.text))
        for out in step():
            if out.finished and out.request_id in keys:
                remembered[keys.pop(out.request_id)] = out
            outs.append(out)
        return outs

    engine.add_request, engine.step = add_request, new_step
    engine.has_unfinished_requests = lambda: bool(replay) or busy()
'''

# The obvious version of the same cheat: the static scan names it.
PROMPT_KEYED_CACHE = REMEMBERED_OUTPUTS.replace("remembered", "_CACHE").replace(
    "replay[request_id] = _CACHE.get(key)", "replay[request_id] = _CACHE[key]")

# "Trusts" the prediction: emits it as the output without running the model.
SKIP_FORWARD = '''
from vibekit import RequestOutput, Usage


def extend(engine, plan):
    add, step, busy = engine.add_request, engine.step, engine.has_unfinished_requests
    trusted = {}

    def add_request(prompt, params=None, request_id=None, prediction=None):
        if isinstance(prediction, list):
            trusted[request_id] = (list(prompt), prediction[:params.max_tokens])
            return request_id
        return add(prompt, params, request_id=request_id, prediction=prediction)

    def new_step():
        outs = []
        for rid in list(trusted):
            prompt, ids = trusted.pop(rid)
            usage = Usage(prompt_tokens=len(prompt), completion_tokens=len(ids))
            outs.append(RequestOutput(rid, prompt, ids, "", "length", usage, ids, ""))
        return outs + step()

    engine.add_request, engine.step = add_request, new_step
    engine.has_unfinished_requests = lambda: bool(trusted) or busy()
'''

# Looks the answers up in the judge's folder (path assembled so no literal gives it away).
READS_REFERENCES = '''
import json
from pathlib import Path

from vibekit import RequestOutput, Usage


def extend(engine, plan):
    folder = Path.cwd().parent / ("." + "ju" + "dge")
    answers = json.loads((folder / ("refer" + "ences" + ".json")).read_text())
    return engine
'''

HANGS = '''
import time


def extend(engine, plan):
    time.sleep(3600)
'''

EATS_MEMORY = '''
def extend(engine, plan):
    hoard = []
    while True:
        hoard.append(bytearray(1 << 30))
'''


def _candidate(ctx, name: str, code: str | None = None, **changes) -> tuple:
    ws = ctx.workspace
    rd = ws.round_dir(1)
    plan = Plan.load(ws.root / "plan.toml").with_changes(changes)
    if code is not None:
        (ws.root / "extensions" / f"{name}.py").write_text(textwrap.dedent(code))
        plan = plan.with_changes({"extension.module": f"extensions/{name}.py"})
    path = rd / f"{name}.toml"
    plan.save(path)
    return rd, path


@pytest.fixture()
def ctx(tiny_scenario, tiny_prepared, tmp_path):
    return make_context(tiny_scenario, tiny_prepared, tmp_path / "out")


def test_honest_candidate_with_predictions_passes(ctx):
    rd, path = _candidate(ctx, "honest", **{"serving.use_predictions": True})
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["passed"], verdict
    assert verdict["run"]["forwarded_tokens"] >= verdict["run"]["needed_tokens"] > 0
    assert (rd / "judge.json").is_file() and "PASSED" in (rd / "judge.md").read_text()


@pytest.mark.parametrize("name, code, evidence", [
    ("prompt_keyed_cache", PROMPT_KEYED_CACHE, "static: caches outputs by prompt"),
    ("remembered_outputs", REMEMBERED_OUTPUTS, "a repeated request: 0 tokens went through"),
    ("skip_forward", SKIP_FORWARD, "tokens went through the model"),
    ("reads_references", READS_REFERENCES, "read of protected path"),
], ids=["prompt_keyed_cache", "remembered_outputs", "skip_forward", "reads_references"])
def test_planted_cheats_are_rejected(ctx, name, code, evidence):
    rd, path = _candidate(ctx, name, code, **{"serving.use_predictions": True})
    verdict = Judge(ctx).judge(rd, path)
    assert not verdict["passed"]
    assert verdict["outcome"] == CHEATING, verdict
    assert any(evidence in r for r in verdict["reasons"]), verdict["reasons"]
    if name == "reads_references":  # refused by the audit hook, not just reported
        assert "PermissionError" in verdict["run"]["error"]


def test_swapping_the_model_is_cheating(ctx):
    rd, path = _candidate(ctx, "swap", **{"model.source": "dummy:smollm-135m"})
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["outcome"] == CHEATING and "swaps the scenario's model" in verdict["reasons"][0]


def test_hanging_candidate_times_out(ctx):
    ctx.scenario = dataclasses.replace(
        ctx.scenario, checker=dataclasses.replace(ctx.scenario.checker, timeout_s=8))
    rd, path = _candidate(ctx, "hangs", HANGS)
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["outcome"] == TIMED_OUT, verdict


def test_memory_hog_crashes(ctx):
    ctx.scenario = dataclasses.replace(
        ctx.scenario, checker=dataclasses.replace(ctx.scenario.checker, memory_limit_mb=1024))
    rd, path = _candidate(ctx, "eats_memory", EATS_MEMORY)
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["outcome"] == CRASHED, verdict


def test_engine_error_is_an_implementation_bug(ctx):
    rd, path = _candidate(ctx, "bad_drafts", **{"engine.num_draft_tokens": 128,
                                                "engine.max_draft_tokens": 16})
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["outcome"] == IMPLEMENTATION_BUG
    assert "max_draft_tokens" in " ".join(verdict["reasons"])


def test_malformed_plan_is_an_implementation_bug(ctx):
    rd = ctx.workspace.round_dir(1)
    path = rd / "broken.toml"
    path.write_text("[engine\npage_size = 16\n")
    assert Judge(ctx).judge(rd, path)["outcome"] == IMPLEMENTATION_BUG


def test_wrong_outputs_fail_the_checker(tmp_path, tiny_scenario, tiny_prepared):
    folder = make_tiny_scenario(tmp_path / "sc")
    (folder / "checker.py").write_text(
        "def check(outputs, references, **_):\n"
        "    return {'passed': False, 'summary': 'never satisfied'}\n")
    ctx = make_context(folder, tiny_prepared, tmp_path / "out", load_scenario(folder))
    rd, path = _candidate(ctx, "plain")
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["outcome"] == CHECKER_FAILED and "never satisfied" in verdict["reasons"][0]


def test_crashing_checker_is_classified(tmp_path, tiny_prepared):
    folder = make_tiny_scenario(tmp_path / "sc")
    (folder / "checker.py").write_text("def check(outputs, references, **_):\n"
                                       "    raise RuntimeError('checker bug')\n")
    ctx = make_context(folder, tiny_prepared, tmp_path / "out", load_scenario(folder))
    rd, path = _candidate(ctx, "plain")
    verdict = Judge(ctx).judge(rd, path)
    assert verdict["outcome"] == CRASHED and "checker bug" in verdict["reasons"][0]


def test_static_scan_finds_known_patterns_and_ignores_comments():
    assert not scan_source('"""The workload is untouched; no references.json."""\n'
                           "def extend(engine, plan):  # concurrency stays\n"
                           "    return None\n", "ok.py")
    found = {f.what for f in scan_source(
        "import subprocess\nANSWER = '" + "x" * 400 + "'\n"
        "def extend(engine, plan):\n    engine.model.forward = lambda *a: None\n", "bad.py")}
    assert {"runs other programs or native code", "canned output text",
            "replaces the model forward or the runner"} <= found
