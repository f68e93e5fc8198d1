"""Tools the Claude roles may call, confined to the workspace.

Reads resolve inside the workspace (no absolute paths, no `..`, no symlinks out); writes are
further limited to the prefixes a role is given (the implementer: its round folder and
extensions/). Tool results are plain text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_READ = 20_000  # characters per read_file result


class ToolError(Exception):
    """A tool call the role may fix and retry (reported to the model as is_error)."""


@dataclass
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    run: Callable[..., str]
    terminal: bool = False  # the conversation ends once this succeeds

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.schema}


def _obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


_STR = {"type": "string"}


@dataclass
class WorkspaceFiles:
    root: Path
    writable: tuple[str, ...] = ()
    written: list[str] = field(default_factory=list)
    hidden: tuple[str, ...] = ()  # workspace paths (files or folders) this role may not see

    def _hidden(self, p: Path) -> bool:
        rel = str(p.relative_to(self.root.resolve())) if p != self.root.resolve() else ""
        return any(rel == h or rel.startswith(h.rstrip("/") + "/") for h in self.hidden)

    def resolve(self, rel: str) -> Path:
        if not isinstance(rel, str) or not rel or rel.startswith(("/", "~")) or "\\" in rel:
            raise ToolError(f"path {rel!r} must be relative to the workspace")
        root = self.root.resolve()
        path = (root / rel).resolve()
        if path != root and root not in path.parents:
            raise ToolError(f"path {rel!r} leaves the workspace")
        return path

    def read_file(self, path: str) -> str:
        p = self.resolve(path)
        if self._hidden(p):
            raise ToolError(f"{path}: not visible to this role")
        if not p.is_file():
            raise ToolError(f"{path}: no such file")
        text = p.read_text(errors="replace")
        return text if len(text) <= MAX_READ else text[:MAX_READ] + "\n[... truncated]"

    def list_files(self, path: str = ".") -> str:
        p = self.resolve(path or ".")
        if not p.is_dir():
            raise ToolError(f"{path}: not a folder")
        root = self.root.resolve()
        names = sorted(str(q.relative_to(root)) + ("/" if q.is_dir() else "")
                       for q in p.iterdir() if q.name != ".git" and not self._hidden(q))
        return "\n".join(names) or "(empty)"

    def write_file(self, path: str, content: str) -> str:
        p = self.resolve(path)
        rel = str(p.relative_to(self.root.resolve()))
        if not any(rel == w or rel.startswith(w.rstrip("/") + "/") for w in self.writable):
            raise ToolError(f"{path}: this role may only write under {list(self.writable)}")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        self.written.append(rel)
        return f"wrote {rel} ({len(content)} characters)"

    def tools(self) -> list[Tool]:
        out = [
            Tool("read_file", "Read a text file of the workspace (path relative to it).",
                 _obj({"path": _STR}, ["path"]), lambda path: self.read_file(path)),
            Tool("list_files", "List a folder of the workspace ('.' for the top).",
                 _obj({"path": _STR}, []), lambda path=".": self.list_files(path)),
            Tool("read_skill", "Read skills/<name>/SKILL.md and its knobs.toml.",
                 _obj({"name": _STR}, ["name"]), self._read_skill),
        ]
        if self.writable:
            out.append(Tool("write_file", "Write a text file under: " + ", ".join(self.writable),
                            _obj({"path": _STR, "content": _STR}, ["path", "content"]),
                            lambda path, content: self.write_file(path, content)))
        return out

    def _read_skill(self, name: str) -> str:
        text = self.read_file(f"skills/{name}/SKILL.md")
        knobs = self.root / "skills" / name / "knobs.toml"
        if knobs.is_file():
            text += "\n\n--- knobs.toml ---\n" + knobs.read_text()
        return text


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
