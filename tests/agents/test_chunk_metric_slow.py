"""The chunk-latency metric end to end on scenarios/streaming-asr's quick variant: the honest
stack passes the judge and the evaluator; a stack whose outputs lack per-chunk latencies is
refused by the judge (it cannot be measured); a stack that reports its chunks answered the
moment they were due is caught by the evaluator's timeline check (integrity: cheating).
Slow: real-time-paced audio, HF references and sandboxed processes (a minute or two)."""

from __future__ import annotations

import shutil

import pytest

from vibekit_agents.plan import Plan
from vibekit_agents.roles.evaluator import Evaluator
from vibekit_agents.roles.judge import Judge
from vibekit_agents.roles.planner import decide
from vibekit_agents.sandbox import run_task
from vibekit_agents.scenario import load_scenario, write_quick_variant
from vibekit_agents.workspace import CHEATING, IMPLEMENTATION_BUG

from .conftest import REPO, make_context

pytestmark = pytest.mark.slow

HONEST = "f.due_times += out.chunk_latencies"
EDITS = {
    "honest": (HONEST, HONEST),
    "drops": ('"chunk_ttft_s": f.due_times,', '"chunk_ttft_s": [],'),
    "shaves": (HONEST, "f.due_times += [0.0 for _ in out.chunk_latencies]"),
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    sc = load_scenario(REPO / "scenarios" / "streaming-asr")
    folder = write_quick_variant(sc, tmp_path_factory.mktemp("asr") / "streaming-asr")
    prepared = tmp_path_factory.mktemp("asr-prepared")
    res = run_task("vibekit_agents.tasks.prepare:prepare",
                   dict(scenario_dir=str(folder), data_dir=str(prepared / "data"),
                        judge_dir=str(prepared / ".judge")), timeout_s=600)
    assert res.ok, res.error + res.traceback
    return folder, prepared


def _ctx(quick, tmp_path, variant):
    folder, prepared = quick
    copy = tmp_path / "streaming-asr"
    shutil.copytree(folder, copy)
    old, new = EDITS[variant]
    text = (copy / "stack.py").read_text()
    assert old in text
    (copy / "stack.py").write_text(text.replace(old, new))
    ctx = make_context(copy, prepared, tmp_path / "out")
    plan = Plan.load(ctx.workspace.root / "start.toml").with_changes(
        {"stack.max_num_seqs": 8, "runtime.num_threads": 1})
    path = ctx.workspace.root / "candidate.toml"
    plan.save(path)
    return ctx, path


@pytest.mark.parametrize("variant", ["honest", "drops", "shaves"])
def test_judge_and_evaluator_on_chunk_latencies(quick, tmp_path, variant):
    ctx, path = _ctx(quick, tmp_path, variant)
    rd = ctx.workspace.round_dir(1)
    verdict = Judge(ctx).judge(rd, path)
    if variant == "drops":
        assert verdict["outcome"] == IMPLEMENTATION_BUG
        assert "cannot be measured as TTFT per chunk p50" in verdict["reasons"][0]
        assert "chunk_ttft_s must be a non-empty list" in verdict["reasons"][0]
        return
    assert verdict["passed"], verdict  # shaving does not change a transcript
    ev = Evaluator(ctx).evaluate(rd, {"best": path, "candidate": path}, "best", "candidate",
                                 max_passes=1, min_passes=1)
    assert ev["status"] == "ok", ev
    outcome, reason, _ = decide(verdict, ev, "candidate", 0.05, False)
    if variant == "shaves":
        assert outcome == CHEATING and "claims its first token" in reason, reason
    else:
        assert outcome != CHEATING, reason  # the same plan on both arms: any decision else
        assert not ev["integrity"] and not ev["checker_failures"], ev
        assert ev["arms"]["candidate"]["num_chunks"] > 0
