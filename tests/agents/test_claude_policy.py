"""The Claude policy through the real anthropic SDK, against a scripted Messages endpoint on
loopback: tool-use round trips, a fresh conversation per role, tools confined to the
workspace, and the API key never written anywhere."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("anthropic")

from vibekit_agents.loop import Synthesizer  # noqa: E402
from vibekit_agents.policies.claude import claude_policy_factory  # noqa: E402
from vibekit_agents.scenario import load_scenario  # noqa: E402
from vibekit_agents.workspace import ACCEPTED  # noqa: E402

API_KEY = "sk-ant-test-7f3a9c-DO-NOT-LEAK"


def _role(system: str) -> str:
    for role in ("PLANNER", "IMPLEMENTER", "ACCURACY JUDGE", "PERFORMANCE EVALUATOR"):
        if f"You are the {role}" in system:
            return role.split()[-1].lower()
    raise AssertionError("unknown role in system prompt")


def _tool_result(body: dict, tool_use_id: str) -> str:
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_result" and block["tool_use_id"] == tool_use_id:
                content = block["content"]
                return content if isinstance(content, str) else json.dumps(content)
    raise AssertionError(f"no tool_result for {tool_use_id}")


def script(role: str, turn: int, body: dict) -> list[dict] | None:
    """The assistant's tool calls for this role and turn (None: end the conversation)."""
    rd = "rounds/round-01"
    if role == "planner":
        calls = [("read_file", {"path": "MEMORY.md"}), ("read_skill", {"name":
                                                                        "predicted-outputs"}),
                 ("submit_proposal", {"change": "turn on predicted outputs",
                                      "knobs": {"serving.use_predictions": True},
                                      "rationale": "the requests carry predictions"})]
    elif role == "implementer":
        plan = _tool_result(body, "toolu_implementer_0") if turn == 2 else ""
        calls = [("read_file", {"path": "plan.toml"}),
                 ("write_file", {"path": "../escaped.txt", "content": "outside"}),
                 ("write_file", {"path": f"{rd}/candidate.toml",
                                 "content": plan.replace("use_predictions = false",
                                                         "use_predictions = true")}),
                 ("validate_plan", {"path": f"{rd}/candidate.toml"}),
                 ("submit_candidate", {"notes": "flipped serving.use_predictions"})]
    elif role == "judge":
        calls = [("run_checker", {}), ("show_diff", {}),
                 ("verdict", {"passed": True, "category": "ok", "reason": "plan-only change"})]
    else:
        calls = [("run_benchmark", {}), ("run_profile", {}),
                 ("write_hints", {"text": "scripted evaluator: predictions pay here"})]
    if turn >= len(calls):
        return None
    name, args = calls[turn]
    return [{"type": "text", "text": f"step {turn}"},
            {"type": "tool_use", "id": f"toolu_{role}_{turn}", "name": name, "input": args}]


def _key(headers) -> str | None:
    """The API key as the SDK sends it (x-api-key, or a bearer token in newer versions)."""
    auth = headers.get("authorization") or ""
    return headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else None)


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script_fn=None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.script = script_fn or script


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        role = _role(body["system"] if isinstance(body["system"], str)
                     else " ".join(b["text"] for b in body["system"]))
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        with self.server.lock:
            self.server.requests.append({"path": self.path, "role": role, "turn": turn,
                                         "key": _key(self.headers), "body": body})
        content = self.server.script(role, turn, body)
        stop = "tool_use" if content else "end_turn"
        reply = {"id": f"msg_{role}_{turn}", "type": "message", "role": "assistant",
                 "model": body["model"], "content": content or [{"type": "text",
                                                                 "text": "done"}],
                 "stop_reason": stop, "stop_sequence": None,
                 "usage": {"input_tokens": 10, "output_tokens": 5}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def claude_run(tiny_scenario, tiny_prepared, tmp_path_factory):
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out = tmp_path_factory.mktemp("claude") / "out"
    for name in ("data", ".judge"):
        shutil.copytree(tiny_prepared / name, out / name)
    factory = claude_policy_factory(API_KEY, "claude-test-model",
                                    base_url=f"http://127.0.0.1:{server.server_port}")
    said: list[str] = []
    Synthesizer(load_scenario(tiny_scenario), out, factory, rounds=1, budget_s=600,
                progress=said.append).run()
    server.shutdown()
    return out, server.requests, said


def test_each_role_is_a_fresh_conversation(claude_run):
    _, requests, _ = claude_run
    firsts = [r for r in requests if r["turn"] == 0]
    assert [r["role"] for r in firsts] == ["planner", "implementer", "judge", "evaluator"]
    for r in firsts:  # nothing carried over from another role
        assert len(r["body"]["messages"]) == 1 and r["body"]["messages"][0]["role"] == "user"
    assert {r["path"] for r in requests} == {"/v1/messages"}
    assert {r["body"]["model"] for r in requests} == {"claude-test-model"}


def test_tool_calls_round_trip(claude_run):
    _, requests, _ = claude_run
    for r in requests:
        if r["turn"] == 0:
            continue
        last = r["body"]["messages"][-1]
        ids = [b["tool_use_id"] for b in last["content"] if b["type"] == "tool_result"]
        assert ids == [f"toolu_{r['role']}_{r['turn'] - 1}"]
    implementer = {r["turn"]: r for r in requests if r["role"] == "implementer"}
    assert "use_predictions = false" in _tool_result(implementer[1]["body"],
                                                     "toolu_implementer_0")


def test_tools_are_confined_to_the_workspace(claude_run):
    out, requests, _ = claude_run
    turn2 = next(r for r in requests if r["role"] == "implementer" and r["turn"] == 2)
    result = turn2["body"]["messages"][-1]["content"][0]
    assert result["is_error"] and "leaves the workspace" in result["content"]
    assert not (out / "escaped.txt").exists()


def test_round_is_judged_measured_and_recorded(claude_run):
    out, _, _ = claude_run
    ws = out / "workspace"
    memory = [json.loads(line) for line in (ws / "memory.jsonl").read_text().splitlines()]
    assert memory[1]["change"] == "turn on predicted outputs"
    assert memory[1]["changes"] == {"serving.use_predictions": True}
    assert memory[1]["outcome"] == ACCEPTED
    rd = ws / "rounds" / "round-01"
    assert json.loads((rd / "judge.json").read_text())["review"]["passed"] is True
    assert "scripted evaluator" in (rd / "hints.md").read_text()
    assert not (rd / "transcripts").exists()  # outside the workspace: no role can read them
    assert {p.stem for p in (out / "transcripts" / "round-01").glob("*.json")} == {
        "planner", "implementer", "judge", "evaluator"}


def test_api_key_is_sent_but_never_written(claude_run):
    out, requests, said = claude_run
    assert {r["key"] for r in requests} == {API_KEY}
    secret = API_KEY.encode()
    leaked = [p for p in Path(out).rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []
    assert not any(API_KEY in line for line in said)


def _round_of(role: str, body: dict) -> int:
    import re

    first = body["messages"][0]["content"]
    text = first if isinstance(first, str) else json.dumps(first)
    m = re.search(r"[Rr]ound[ -]0?(\d+)", text)
    assert m, text
    return int(m.group(1))


def reject_then_fix(role: str, turn: int, body: dict) -> list[dict] | None:
    """Round 1: the implementer slips an unasked change in; the judge (who tries to read the
    implementer's transcript and notes, and cannot) rejects. Round 2: the fix is accepted."""
    n = _round_of(role, body)
    rd = f"rounds/round-{n:02d}"
    if role == "planner":
        calls = [("read_file", {"path": "MEMORY.md"}),
                 ("submit_proposal", {"change": "turn on predicted outputs" + (
                     "" if n == 1 else " (without the page_size change)"),
                     "knobs": {"serving.use_predictions": True}})]
    elif role == "implementer":
        plan = _tool_result(body, "toolu_implementer_0") if turn == 1 else ""
        new = plan.replace("use_predictions = false", "use_predictions = true")
        if n == 1:
            new = new.replace("[engine]\n", "[engine]\npage_size = 8\n")
        calls = [("read_file", {"path": "plan.toml"}),
                 ("write_file", {"path": f"{rd}/candidate.toml", "content": new}),
                 ("submit_candidate", {"notes": "trust me, page_size 8 is needed"})]
    elif role == "judge":
        calls = [("read_file", {"path": f"{rd}/transcripts/implementer.json"}),
                 ("read_file", {"path": f"{rd}/implementer.md"}),
                 ("list_files", {"path": rd}),
                 ("show_diff", {}),
                 ("verdict", {"passed": n != 1, "category": "incorrect",
                              "reason": "changes page_size, which the proposal did not ask"}
                  if n == 1 else {"passed": True, "category": "ok", "reason": "one knob"})]
    else:
        calls = [("write_hints", {"text": f"round {n}: fine"})]
    if turn >= len(calls):
        return None
    name, args = calls[turn]
    return [{"type": "tool_use", "id": f"toolu_{role}_{turn}", "name": name, "input": args}]


def test_implement_judge_rejects_fix_accept(tiny_scenario, tiny_prepared, tmp_path):
    server = Recorder(reject_then_fix)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    for name in ("data", ".judge"):
        shutil.copytree(tiny_prepared / name, out / name)
    factory = claude_policy_factory(API_KEY, "claude-test-model",
                                    base_url=f"http://127.0.0.1:{server.server_port}")
    Synthesizer(load_scenario(tiny_scenario), out, factory, rounds=2, budget_s=900,
                progress=lambda m: None).run()
    server.shutdown()
    memory = [json.loads(line) for line in
              (out / "workspace" / "memory.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in memory] == [ACCEPTED, "checker failed", ACCEPTED], memory
    assert "judge review: changes page_size" in memory[1]["reason"]
    assert memory[2]["changes"] == {"serving.use_predictions": True}
    # The judge's reads of the implementer's transcript and notes failed; its listing hid them.
    judge = [r for r in server.requests if r["role"] == "judge"]
    r1 = [r for r in judge if _round_of("judge", r["body"]) == 1]
    last = max(r1, key=lambda r: r["turn"])["body"]
    results = {b["tool_use_id"]: b for m in last["messages"] if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"}
    assert results["toolu_judge_0"]["is_error"] and results["toolu_judge_1"]["is_error"]
    listing = results["toolu_judge_2"]["content"]
    assert "candidate.toml" in listing and "implementer.md" not in listing
    assert "proposal" not in listing and "transcripts" not in listing
    assert "trust me" not in json.dumps([r["body"] for r in judge])
    assert (out / "transcripts" / "round-01" / "implementer.json").is_file()


def test_each_role_runs_in_its_own_process_on_its_own_view(claude_run):
    import os

    out, _, _ = claude_run
    pids = {json.loads(p.read_text())["pid"]
            for p in (out / "transcripts" / "round-01").glob("*.json")}
    assert len(pids) == 4 and os.getpid() not in pids
    # The views were thrown away once each role finished; the spec files hold no key.
    roles = out / "roles" / "round-01"
    assert not list(roles.glob("*-view"))
    assert {p.name for p in roles.glob("*.spec.json")} == {
        f"{r}.spec.json" for r in ("planner", "implementer", "judge", "evaluator")}
