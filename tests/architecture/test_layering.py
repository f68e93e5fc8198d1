"""The package's import graph: no cycles (not even through type-checking or function-level
imports), and the layering DESIGN.md promises."""

from __future__ import annotations

import ast
from pathlib import Path

import vibekit

ROOT = Path(vibekit.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the vibekit modules it imports anywhere in its body (resolved to modules)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("vibekit"):
                    targets.add(target)
        graph[name] = targets
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def test_no_import_cycles_between_modules():
    graph = _imports()
    # A package's __init__ re-exports its modules; count edges between modules of different
    # packages plus edges inside one package, but not a package's own __init__ -> its children.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_shared_types_sit_below_models_and_runtime():
    graph = _imports()
    rules = {
        "vibekit.core": {"vibekit.core", "vibekit.errors"},
    }
    never = {
        "vibekit.models": {"vibekit.runtime", "vibekit.serve"},
        "vibekit.ssm": {"vibekit.runtime", "vibekit.models", "vibekit.serve"},
        "vibekit.kvcache": {"vibekit.runtime", "vibekit.models", "vibekit.ssm", "vibekit.serve"},
        "vibekit.cfg": {"vibekit.runtime", "vibekit.serve"},
        "vibekit.spec": {"vibekit.runtime", "vibekit.models", "vibekit.serve"},
        "vibekit.grammar": {"vibekit.runtime", "vibekit.models", "vibekit.serve"},
        "vibekit.ops": {"vibekit.runtime", "vibekit.models", "vibekit.serve", "vibekit.core"},
        "vibekit.logits": {"vibekit.runtime", "vibekit.models", "vibekit.serve"},
    }
    bad = []
    for module, targets in graph.items():
        pkg = _package(module)
        for target in targets:
            tpkg = _package(target)
            if pkg in rules and tpkg not in rules[pkg]:
                bad.append(f"{module} imports {target}")
            if tpkg in never.get(pkg, ()):
                bad.append(f"{module} imports {target}")
    assert not bad, "layering violations:\n" + "\n".join(sorted(bad))


def test_vibekit_never_imports_vibekit_agents():
    offenders = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("vibekit_agents")]
    assert not offenders
