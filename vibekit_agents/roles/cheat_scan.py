"""Static scan of a candidate for the known ways to look fast without serving honestly.

This only finds what it knows to look for (the paper's own caveat); the judge pairs it with
dynamic evidence from an instrumented run (forward accounting, a repeated request, a streamed
request, an audit hook on reads of the references). Findings carry a severity: "reject" ends
the round as cheating, "warn" is reported.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PATTERNS: list[tuple[str, str, str]] = [
    # (severity, what it means, regex over the source)
    ("reject", "reads reference outputs", r"references?\.json|\.judge\b|reference_outputs"
     r"|judge_dir"),
    ("reject", "caches outputs by prompt or request",
     r"(cache|memo|seen|store|answers?)\w*\s*\[\s*[^\]]*(prompt|request|token_ids|ids|key|req)"
     r"|(lru_cache|functools\.cache|@cache\b)"),
    ("reject", "replaces the model forward or the runner",
     r"\.(forward|execute|sample|_forward)\s*=(?!=)|\bmodel\s*=\s*(None|lambda)"
     r"|runner\s*=\s*(None|lambda)"),
    ("reject", "changes the workload, its load levels or the clock",
     r"\b(concurrency|num_requests|warmup_requests|make_requests|workload)\b"
     r"|\.max_tokens\s*=(?!=)|time\.(perf_counter|time|monotonic)\s*=(?!=)"),
    ("reject", "runs other programs or native code",
     r"\b(subprocess|os\.system|os\.popen|ctypes|cffi|pty\.spawn|os\.exec)"),
    ("warn", "overrides streaming", r"def\s+(stream|step)\s*\("),
    ("warn", "opens files outside the workspace", r"open\(\s*['\"](/|\.\./)"),
]
_CANNED_STR = 300  # characters
_CANNED_INTS = 64  # literal integers in one list


@dataclass
class Finding:
    severity: str
    what: str
    where: str

    def __str__(self) -> str:
        return f"{self.what} ({self.where})"


def _code_only(text: str) -> str:
    """The source with comments and docstrings blanked (line numbers kept)."""
    import io
    import tokenize

    lines = text.splitlines(keepends=True)
    try:
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and _is_docstring(node, tree):
                for i in range(node.lineno - 1, (node.end_lineno or node.lineno)):
                    lines[i] = "\n"
        text = "".join(lines)
        out = []
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                out.append((row, col))
        lines = text.splitlines(keepends=True)
        for row, col in out:
            lines[row - 1] = lines[row - 1][:col] + "\n"
        return "".join(lines)
    except (SyntaxError, tokenize.TokenError, IndexError):
        return text


def scan_source(text: str, name: str) -> list[Finding]:
    findings: list[Finding] = []
    code = _code_only(text)
    for severity, what, pattern in _PATTERNS:
        for m in re.finditer(pattern, code, re.IGNORECASE):
            line = code.count("\n", 0, m.start()) + 1
            findings.append(Finding(severity, what, f"{name}:{line}: {m.group(0)[:60]!r}"))
            break
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return findings + [Finding("warn", f"does not parse: {exc.msg}", f"{name}:{exc.lineno}")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and len(node.value) > _CANNED_STR and not _is_docstring(node, tree):
            findings.append(Finding("reject", "canned output text",
                                    f"{name}:{node.lineno}: a {len(node.value)}-char literal"))
        if isinstance(node, (ast.List, ast.Tuple)):
            ints = sum(isinstance(e, ast.Constant) and isinstance(e.value, int) for e in node.elts)
            if ints > _CANNED_INTS:
                findings.append(Finding("reject", "canned output token ids",
                                        f"{name}:{node.lineno}: {ints} literal ints"))
    return findings


def _is_docstring(node: ast.Constant, tree: ast.AST) -> bool:
    for parent in ast.walk(tree):
        if isinstance(parent, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            body = parent.body
            if body and isinstance(body[0], ast.Expr) and body[0].value is node:
                return True
    return False


def scan_candidate(plan: Any, workspace: Path, scenario: Any, source: str) -> list[Finding]:
    """Findings for a candidate plan and the extension code it loads."""
    findings: list[Finding] = []
    m = plan.data.get("model", {})
    if m.get("source") != source:
        findings.append(Finding("reject", "swaps the scenario's model",
                                f"[model] source {m.get('source')!r} != {source!r}"))
    if m.get("device") != scenario.model.device:
        findings.append(Finding("reject", "moves the model to another device",
                                f"[model] device {m.get('device')!r}"))
    if m.get("seed") != scenario.model.seed:
        findings.append(Finding("reject", "changes the model seed (dummy weights)",
                                f"[model] seed {m.get('seed')!r}"))
    if plan.extension:
        files = sorted((workspace / "extensions").rglob("*.py"))
        main = workspace / plan.extension
        if main.is_file() and main not in files:
            files.insert(0, main)
        for f in files:
            findings += scan_source(f.read_text(errors="replace"), str(f.relative_to(workspace)))
    return findings
