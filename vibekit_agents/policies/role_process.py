"""One Claude role in its own process, on its own copy of the workspace.

The parent (ClaudePolicy, in the synthesizer's process) writes a RoleSpec, builds the role's
*view* (a copy of the workspace without .git and without what the role may not see) outside
the workspace, and starts::

    python -m vibekit_agents.policies.role_process SPEC.json

with the API key in the child's environment only (never in the spec, the view or a log). The
child runs one fresh conversation (tool-use loop through the `anthropic` SDK) against the view,
writes its transcript where the spec says (outside every view) and a small result file: which
terminal tool ended the turn and with what arguments. The parent then copies back only the
files the role may write (its writable prefixes) and applies the result. So a role cannot read
what is not in its view (the judge's view has no proposal, no implementer notes, no
transcripts), cannot write outside its prefixes, and shares no memory with any other role.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vibekit_agents.policies.tools import Tool, ToolError, WorkspaceFiles, _obj, as_text

MAX_TURNS = 16
ROLE_TIMEOUT_S = 900.0
# Environment a role's process inherits; everything else (other secrets) stays behind.
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE",
             "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy",
             "http_proxy", "no_proxy", "TMPDIR")


@dataclass
class RoleSpec:
    role: str                      # planner | implementer | judge | evaluator
    model: str
    system: str
    user: str
    view: str                      # the role's copy of the workspace
    round_dir: str                 # the round folder, relative to the workspace
    transcript: str                # where the conversation is written (outside every view)
    result: str                    # where the terminal tool's arguments are written
    base_url: str | None = None
    writable: list[str] = field(default_factory=list)
    # Tools whose answer the parent computed (checker verdict, diff, benchmark, profile).
    static: list[dict[str, Any]] = field(default_factory=list)
    max_tokens: int = 4096

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def load(cls, path: Path) -> RoleSpec:
        return cls(**json.loads(path.read_text()))


# -- the parent side ----------------------------------------------------------------------------

def make_view(workspace: Path, view: Path, hidden: tuple[str, ...] = ()) -> Path:
    """Copy the workspace to `view` without .git and without the `hidden` paths (relative to
    the workspace; files or folders). Symlinks are not followed out of the workspace."""
    root = workspace.resolve()
    hide = {h.rstrip("/") for h in hidden}

    def ignore(folder: str, names: list[str]) -> list[str]:
        rel = Path(folder).resolve().relative_to(root)
        out = []
        for n in names:
            r = str(rel / n) if str(rel) != "." else n
            p = Path(folder) / n
            if n == ".git" or r in hide or (p.is_symlink() and root not in
                                             p.resolve().parents):
                out.append(n)
        return out

    if view.exists():
        shutil.rmtree(view)
    shutil.copytree(root, view, ignore=ignore, symlinks=False)
    return view


def copy_back(view: Path, workspace: Path, writable: list[str]) -> list[str]:
    """Copy the files under the writable prefixes that the role created or changed in its view
    back into the workspace; returns their workspace paths."""
    changed: list[str] = []
    view = view.resolve()
    for prefix in writable:
        src = view / prefix
        files = [src] if src.is_file() else (sorted(p for p in src.rglob("*") if p.is_file())
                                             if src.is_dir() else [])
        for f in files:
            if f.is_symlink():
                continue
            rel = f.relative_to(view)
            dst = workspace / rel
            data = f.read_bytes()
            if dst.is_file() and dst.read_bytes() == data:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            changed.append(str(rel))
    return changed


def run_role(spec: RoleSpec, api_key: str, workdir: Path,
             timeout_s: float = ROLE_TIMEOUT_S) -> dict[str, Any]:
    """Run one role in a child process; returns its result ({"finished": tool name or None,
    "args": the terminal tool's arguments, "error": why it ended without one})."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{spec.role}.spec.json"
    spec.dump(spec_path)
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env["ANTHROPIC_API_KEY"] = api_key
    # The child imports this package from wherever the parent did.
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", "vibekit_agents.policies.role_process",
                               str(spec_path)], env=env, cwd=spec.view, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"finished": None, "args": {}, "error": f"role timed out after {timeout_s:.0f} s"}
    result_path = Path(spec.result)
    if result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        result = {"finished": None, "args": {},
                  "error": f"role process exited {proc.returncode}: " + " | ".join(tail)}
    if proc.returncode != 0 and not result.get("error"):
        result["error"] = f"role process exited {proc.returncode}"
    return result


# -- the child side -----------------------------------------------------------------------------

def _role_tools(spec: RoleSpec, files: WorkspaceFiles, result: dict[str, Any]) -> list[Tool]:
    """The role's terminal and checking tools, run in the child against its view."""
    view = Path(spec.view)
    round_dir = view / spec.round_dir
    tools: list[Tool] = []
    for s in spec.static:
        tools.append(Tool(s["name"], s["description"], _obj({}, []),
                          (lambda value=s["result"]: value)))

    def finish(name: str, args: dict[str, Any]) -> None:
        result.update(finished=name, args=args)

    if spec.role == "planner":
        from vibekit_agents.roles.planner import write_proposal

        def submit_proposal(change: str, knobs: dict | None = None, rationale: str = "") -> str:
            if not isinstance(change, str) or not change.strip():
                raise ToolError("change must describe the change in a few words")
            knobs = knobs or {}
            if not isinstance(knobs, dict) or any("." not in k for k in knobs):
                raise ToolError("knobs must map dotted plan paths to values")
            proposal = {"change": change.strip()[:200], "knobs": knobs,
                        "evidence": [rationale[:1000]] if rationale else []}
            finish("submit_proposal", proposal)
            write_proposal(round_dir, proposal)
            return "proposal recorded"

        tools.append(Tool(
            "submit_proposal", "Record this round's single change and end your turn.",
            _obj({"change": {"type": "string"}, "knobs": {"type": "object"},
                  "rationale": {"type": "string"}}, ["change"]), submit_proposal,
            terminal=True))
    elif spec.role == "implementer":
        from vibekit_agents.plan import Plan, PlanError

        cand = round_dir / "candidate.toml"

        def validate_plan(path: str) -> str:
            try:
                Plan.load(files.resolve(path))
            except PlanError as exc:
                raise ToolError(str(exc).replace(str(view) + "/", "")) from None
            return "valid plan"

        def submit_candidate(path: str = f"{spec.round_dir}/candidate.toml",
                             notes: str = "") -> str:
            p = files.resolve(path)
            validate_plan(path)
            if p != cand.resolve():
                cand.write_text(p.read_text())
            finish("submit_candidate", {"notes": notes[:1000]})
            return "candidate submitted"

        tools += [
            Tool("validate_plan", "Check that a plan file parses and validates.",
                 _obj({"path": {"type": "string"}}, ["path"]), validate_plan),
            Tool("submit_candidate", "Submit the candidate plan and end your turn.",
                 _obj({"path": {"type": "string"}, "notes": {"type": "string"}}, []),
                 submit_candidate, terminal=True)]
    elif spec.role == "judge":
        def verdict(passed: bool, category: str = "ok", reason: str = "") -> str:
            finish("verdict", {"passed": bool(passed), "category": str(category),
                               "reason": str(reason)[:1000]})
            return "verdict recorded"

        tools.append(Tool(
            "verdict", "Confirm (passed=true) or reject; category 'cheating' or 'incorrect' "
            "when rejecting.", _obj({"passed": {"type": "boolean"}, "category":
                                     {"type": "string"}, "reason": {"type": "string"}},
                                    ["passed"]), verdict, terminal=True))
    elif spec.role == "evaluator":
        def write_hints(text: str) -> str:
            with open(round_dir / "hints.md", "a") as f:
                f.write("\n## Evaluator notes\n\n" + text.strip()[:4000] + "\n")
            finish("write_hints", {})
            return "hints written"

        tools.append(Tool("write_hints", "Append your notes to this round's hints.md and end "
                          "your turn.", _obj({"text": {"type": "string"}}, ["text"]),
                          write_hints, terminal=True))
    else:
        raise ValueError(f"unknown role {spec.role!r}; roles: planner, implementer, judge, "
                         "evaluator")
    return tools


def converse(client: Any, spec: RoleSpec, tools: list[Tool]) -> list[dict[str, Any]]:
    """The tool-use loop: messages.create until a terminal tool succeeds or the model stops."""
    by_name = {t.name: t for t in tools}
    messages: list[dict[str, Any]] = [{"role": "user", "content": spec.user}]
    finished = False

    def call(block: Any) -> dict[str, Any]:
        nonlocal finished
        tool = by_name.get(block.name)
        try:
            if tool is None:
                raise ToolError(f"no tool named {block.name!r}")
            out = tool.run(**(block.input or {}))
            finished = finished or tool.terminal
            return {"type": "tool_result", "tool_use_id": block.id, "content": as_text(out)}
        except (ToolError, TypeError, ValueError, OSError) as exc:
            return {"type": "tool_result", "tool_use_id": block.id, "content": str(exc),
                    "is_error": True}

    try:
        for _ in range(MAX_TURNS):
            resp = client.messages.create(
                model=spec.model, max_tokens=spec.max_tokens, system=spec.system,
                tools=[t.spec() for t in tools], messages=messages)
            content = [b.model_dump(exclude_none=True) for b in resp.content]
            messages.append({"role": "assistant", "content": content})
            calls = [b for b in resp.content if b.type == "tool_use"]
            if not calls:
                break
            messages.append({"role": "user", "content": [call(b) for b in calls]})
            if finished:
                break
    except Exception as exc:  # an API failure ends this role's turn, not the run
        messages.append({"role": "error", "content": f"{type(exc).__name__}: {exc}"[:500]})
    return messages


def main(argv: list[str] | None = None) -> int:
    import anthropic

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m vibekit_agents.policies.role_process SPEC.json",
              file=sys.stderr)
        return 2
    spec = RoleSpec.load(Path(argv[0]))
    key = os.environ.pop("ANTHROPIC_API_KEY", None)
    if not key:
        print("role_process: ANTHROPIC_API_KEY is not set", file=sys.stderr)
        return 2
    client = anthropic.Anthropic(api_key=key, base_url=spec.base_url, max_retries=1,
                                 timeout=300.0)
    files = WorkspaceFiles(Path(spec.view), writable=tuple(spec.writable))
    result: dict[str, Any] = {"finished": None, "args": {}}
    messages = converse(client, spec, files.tools() + _role_tools(spec, files, result))
    transcript = Path(spec.transcript)
    transcript.parent.mkdir(parents=True, exist_ok=True)
    transcript.write_text(json.dumps({"role": spec.role, "model": spec.model, "pid": os.getpid(),
                                      "system": spec.system, "messages": messages},
                                     indent=1, default=str))
    if result["finished"] is None and messages and messages[-1]["role"] == "error":
        result["error"] = messages[-1]["content"]
    Path(spec.result).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
