"""The offline planner and implementer: ranking from skills + hints, memory deciding what is
retried (implementation bugs, with a repair) and what is not (not beneficial)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vibekit_agents.plan import Plan
from vibekit_agents.roles.implementer import LocalImplementer, repair
from vibekit_agents.roles.planner import LocalPlanner, build_backlog, decide
from vibekit_agents.workspace import (
    ACCEPTED,
    CHEATING,
    IMPLEMENTATION_BUG,
    INCONCLUSIVE,
    NOT_BENEFICIAL,
    TIMED_OUT,
)

from .conftest import make_context


@pytest.fixture()
def ctx(tiny_scenario, tiny_prepared, tmp_path):
    return make_context(tiny_scenario, tiny_prepared, tmp_path / "out")


def _record(ctx, n, changes, outcome, reason=""):
    ctx.workspace.record({"round": n, "change": str(changes), "changes": changes,
                          "outcome": outcome, "reason": reason}, "tiny")


def test_first_proposal_is_predicted_outputs_when_requests_carry_predictions(ctx):
    rd = ctx.workspace.round_dir(1)
    proposal = LocalPlanner(ctx).propose(1, rd)
    assert proposal["knob"] == "serving.use_predictions" and proposal["values"] == [True]
    assert json.loads((rd / "proposal.json").read_text())["knob"] == proposal["knob"]
    assert "serving.use_predictions" in (ctx.workspace.root / "BACKLOG.md").read_text()


def test_dependent_knobs_wait_for_their_primitive(ctx):
    items = {it["knob"]: it for it in build_backlog(ctx, Plan.load(ctx.workspace.root /
                                                                   "plan.toml"))}
    assert items["engine.num_draft_tokens"]["status"] == "waiting"
    assert "needs {'serving.use_predictions': True}" in items["engine.num_draft_tokens"][
        "evidence"][-1]


def test_unsupported_knobs_are_listed_as_blocked(ctx):
    ctx.scenario = dataclasses.replace(ctx.scenario, search=dataclasses.replace(
        ctx.scenario.search, primitives=("torch-compile",), knobs={}))
    items = build_backlog(ctx, Plan.load(ctx.workspace.root / "plan.toml"))
    assert [(it["knob"], it["status"]) for it in items] == [("runtime.torch_compile",
                                                             "blocked")]


def test_memory_decides_what_is_retried(ctx):
    _record(ctx, 0, {}, ACCEPTED)
    _record(ctx, 1, {"serving.use_predictions": True}, ACCEPTED)
    ctx.workspace.write_memory_md("tiny")
    plan = Plan.load(ctx.workspace.root / "plan.toml").with_changes(
        {"serving.use_predictions": True})
    plan.save(ctx.workspace.root / "plan.toml")
    _record(ctx, 2, {"engine.num_draft_tokens": 4}, NOT_BENEFICIAL)
    _record(ctx, 3, {"runtime.num_threads": 2}, TIMED_OUT)
    _record(ctx, 4, {"engine.max_draft_tokens": 128}, IMPLEMENTATION_BUG, "a typo")
    items = {it["knob"]: it for it in build_backlog(ctx, plan)}
    assert items["engine.num_draft_tokens"]["values"] == [32]  # 4 did not pay
    assert items["runtime.num_threads"]["status"] == "done"  # timed out: not again
    assert items["engine.max_draft_tokens"]["values"] == [128]  # a bug: retried


def test_a_value_an_accepted_change_replaced_is_not_tried_again(ctx):
    plan = Plan.load(ctx.workspace.root / "plan.toml").with_changes(
        {"serving.use_predictions": True, "engine.num_draft_tokens": 32})
    ctx.workspace.record({"round": 1, "change": "k 32", "changes": {"engine.num_draft_tokens": 32},
                          "previous": {"engine.num_draft_tokens": 4}, "outcome": ACCEPTED},
                         "tiny")
    ctx.workspace.record({"round": 2, "change": "cap", "changes": {"engine.max_draft_tokens": 128},
                          "previous": {"engine.max_draft_tokens": None}, "outcome": ACCEPTED},
                         "tiny")
    plan = plan.with_changes({"engine.max_draft_tokens": 128})
    search = dataclasses.replace(ctx.scenario.search, knobs={
        **ctx.scenario.search.knobs, "engine.max_draft_tokens": [64, 256]})
    ctx.scenario = dataclasses.replace(ctx.scenario, search=search)
    items = {it["knob"]: it for it in build_backlog(ctx, plan)}
    assert items["engine.num_draft_tokens"]["status"] == "done"  # 4 lost to 32 already
    assert items["engine.max_draft_tokens"]["values"] == [256]  # the unset default 64 lost


def test_implementation_bug_is_retried_with_a_repair(ctx):
    err = ("ValueError: max_draft_tokens (64) must be >= num_draft_tokens (128)")
    _record(ctx, 1, {"engine.num_draft_tokens": 128}, IMPLEMENTATION_BUG, err)
    plan, notes = LocalImplementer(ctx).candidate_for("engine.num_draft_tokens", 128)
    assert plan.get("engine.max_draft_tokens") == 128 and "repair" in notes[0]
    fixed, _ = repair(Plan.load(ctx.workspace.root / "plan.toml"),
                      "max_num_batched_tokens (512) must be >= max_model_len (1024)")
    assert fixed.get("engine.max_num_batched_tokens") == 1024


def test_decision_is_mechanical():
    ok = {"passed": True, "reasons": []}

    def ev_of(ratio, lo, hi, decision):
        return {"status": "ok", "comparison": {"candidate": {
            "ratio": ratio, "interval": [lo, hi], "samples": 5, "decision": decision}}}

    ev = ev_of(1.5, 1.3, 1.7, "better")
    assert decide(ok, ev, "candidate", 0.03, True)[0] == ACCEPTED
    assert decide(ok, ev_of(1.01, 0.97, 1.02, "not better"), "candidate", 0.03,
                  True)[0] == NOT_BENEFICIAL
    assert decide(ok, ev_of(1.1, 0.8, 1.4, "undecided"), "candidate", 0.03,
                  True)[0] == INCONCLUSIVE
    cheat = dict(ev, integrity={"candidate": ["a timed request: 0 tokens went through"]})
    assert decide(ok, cheat, "candidate", 0.03, True)[0] == CHEATING
    assert decide(ok, {"status": "timeout", "error": "x"}, "candidate", 0.03, True)[0] \
        == TIMED_OUT
    bad = {"passed": False, "outcome": IMPLEMENTATION_BUG, "reasons": ["boom"]}
    assert decide(bad, ev, "candidate", 0.03, True)[:2] == (IMPLEMENTATION_BUG, "boom")
