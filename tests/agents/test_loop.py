"""The outer loop on a tiny scenario: the local policy finds predicted outputs in its first
round, the outputs are written, a run resumes after an interruption without losing accepted
rounds, and bad rounds end classified while the loop goes on."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import xml.dom.minidom
from pathlib import Path
from unittest import mock

import pytest

from vibekit import SamplingParams
from vibekit_agents.loop import Candidate, Synthesizer
from vibekit_agents.plan import Plan
from vibekit_agents.policies.local import LocalPolicy
from vibekit_agents.scenario import load_scenario
from vibekit_agents.workspace import (
    ACCEPTED,
    CHEATING,
    IMPLEMENTATION_BUG,
    OUTCOMES,
    Workspace,
)

from .conftest import make_tiny_scenario


def _seed_out(prepared: Path, out: Path) -> Path:
    """An output folder that already holds the prepared requests (skips the preparation)."""
    for name in ("data", ".judge"):
        shutil.copytree(prepared / name, out / name, dirs_exist_ok=True)
    return out


@pytest.fixture(scope="module")
def first_run(tiny_scenario, tiny_prepared, tmp_path_factory):
    out = _seed_out(tiny_prepared, tmp_path_factory.mktemp("run") / "out")
    synth = Synthesizer(load_scenario(tiny_scenario), out, LocalPolicy, rounds=1, budget_s=600,
                        progress=lambda m: None)
    return out, synth.run()


def test_first_round_discovers_predicted_outputs(first_run):
    out, result = first_run
    memory = [json.loads(line) for line in
              (out / "workspace" / "memory.jsonl").read_text().splitlines()]
    assert [e["round"] for e in memory] == [0, 1]
    assert memory[1]["changes"] == {"serving.use_predictions": True}
    assert memory[1]["outcome"] == ACCEPTED and memory[1]["ratio"] > 1.03
    assert result["speedup"] > 1.03
    assert Plan.load(out / "best_plan.toml").use_predictions


def test_outputs_hold_plan_server_report_plot_and_history(first_run):
    out, _ = first_run
    report = (out / "report.md").read_text()
    assert "| round | change | verdict |" in report and "speedup over start" in report
    assert "serving.use_predictions" in report
    xml.dom.minidom.parse(str(out / "progress.svg"))  # well-formed
    compile((out / "server.py").read_text(), "server.py", "exec")
    assert "create_app" in (out / "server.py").read_text()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=out / "workspace",
                         capture_output=True, text=True).stdout
    assert "round 0: start plan" in log and "round 1: serving.use_predictions" in log
    memory_md = (out / "workspace" / "MEMORY.md").read_text()
    assert all(o in memory_md for o in OUTCOMES)  # the classes are spelled out
    assert (out / "workspace" / "BACKLOG.md").read_text().startswith("# BACKLOG")


def test_rendered_server_builds_its_engine(first_run):
    out, _ = first_run
    spec = importlib.util.spec_from_file_location("rendered_server", out / "server.py")
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)  # imports vibekit.serve; main() is not run
    engine = server.build_engine()
    assert server.USE_PREDICTIONS and engine.generate(
        [[1, 2, 3]], SamplingParams(max_tokens=3, temperature=0.0))[0].token_ids


def test_interrupted_run_resumes_without_losing_accepted_rounds(first_run, tiny_scenario,
                                                                 tmp_path):
    src, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    sc = load_scenario(tiny_scenario)
    real_record = Workspace.record

    def interrupt(self, entry, *args, **kwargs):  # Ctrl-C just before round 2 is recorded
        if entry["round"] == 2:
            raise KeyboardInterrupt
        return real_record(self, entry, *args, **kwargs)

    with mock.patch.object(Workspace, "record", interrupt), pytest.raises(KeyboardInterrupt):
        Synthesizer(sc, out, LocalPolicy, rounds=2, budget_s=600, progress=lambda m: None).run()
    assert (out / "workspace" / "rounds" / "round-02").is_dir()  # left half done
    said = []
    Synthesizer(sc, out, LocalPolicy, rounds=2, budget_s=600, progress=said.append).run()
    assert any("resuming" in s and "discarded interrupted round(s) [2]" in s for s in said)
    memory = [json.loads(line) for line in
              (out / "workspace" / "memory.jsonl").read_text().splitlines()]
    assert [e["round"] for e in memory] == [0, 1, 2]
    assert memory[1]["outcome"] == ACCEPTED
    log = subprocess.run(["git", "log", "--format=%s"], cwd=out / "workspace",
                         capture_output=True, text=True).stdout
    assert "round 1: serving.use_predictions" in log


CACHED_ANSWER = """
CACHE = {}


def extend(engine, plan):
    add = engine.add_request

    def add_request(prompt, *args, **kwargs):
        CACHE[repr(prompt)] = add(prompt, *args, **kwargs)
        return CACHE[repr(prompt)]

    engine.add_request = add_request
"""


class ScriptedPolicy:
    """Proposes prepared candidates in order: (change, plan changes, extension code)."""

    name = "scripted"
    script: list = []

    def __init__(self, ctx):
        self.ctx = ctx

    def propose(self, round_no, round_dir):
        if round_no > len(self.script):
            return None
        change, changes, code = self.script[round_no - 1]
        ws = self.ctx.workspace
        path = round_dir / "candidate.toml"
        if changes is None:
            path.write_text("this is [not a plan")
            return Candidate(change, {}, path)
        plan = Plan.load(ws.root / "plan.toml").with_changes(changes)
        if code is not None:
            (ws.root / "extensions" / f"r{round_no}.py").write_text(code)
            plan = plan.with_changes({"extension.module": f"extensions/r{round_no}.py"})
        plan.save(path)
        return Candidate(change, changes, path)

    def review_judgement(self, round_no, round_dir, verdict):
        return verdict

    def review_evaluation(self, round_no, round_dir, evaluation):
        return None


def test_bad_rounds_end_classified_and_the_loop_goes_on(tiny_prepared, tmp_path):
    # (A hanging candidate and a memory hog are classified in test_judge.py.)
    folder = make_tiny_scenario(tmp_path / "sc")
    ScriptedPolicy.script = [
        ("a malformed plan", None, None),
        ("an extension that raises", {}, "def extend(engine, plan):\n"
                                         "    raise RuntimeError('bug in the extension')\n"),
        ("a cached answer", {}, CACHED_ANSWER),
        ("predicted outputs", {"serving.use_predictions": True}, None),
    ]
    out = _seed_out(tiny_prepared, tmp_path / "out")
    Synthesizer(load_scenario(folder), out, ScriptedPolicy, rounds=4, budget_s=600,
                progress=lambda m: None).run()
    memory = [json.loads(line) for line in
              (out / "workspace" / "memory.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in memory[1:]] == [IMPLEMENTATION_BUG, IMPLEMENTATION_BUG,
                                                  CHEATING, ACCEPTED]
    assert "bug in the extension" in memory[2]["reason"]
