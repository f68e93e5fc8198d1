"""Plan: a declarative choice of vibekit primitives and knob values (TOML).

    [model]       source, dtype, device, seed   (source/device/seed come from the scenario)
    [engine]      any `Engine.from_pretrained` option: page_size, enable_prefix_caching,
                  max_num_seqs, max_num_batched_tokens, enable_chunked_prefill, use_cuda_graphs,
                  num_draft_tokens, adaptive_draft, max_draft_tokens, ...
    [serving]     use_predictions: hand each request's `prediction` to the engine (predicted
                  outputs) or drop it (plain decoding; the engine option enable_predictions)
    [runtime]     num_threads: torch CPU threads for this stack (0: the library default)
    [extension]   module: a workspace file defining `extend(engine, plan)` (see EXTENSIONS.md
                  in the workspace); written by the Claude implementer, never by the local policy
    [stack]       knobs of a scenario's own stack (a folder with stack.py), read by it

Knobs are addressed by dotted paths ("engine.num_draft_tokens", "serving.use_predictions").
`Plan.build_engine()` makes the Engine; `vibekit_agents.server_py.render_server_py` writes a
runnable server.py that serves the same stack through `vibekit.serve.create_app`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PLAN_SECTIONS", "Plan", "PlanError", "apply_extension", "toml_dumps"]

PLAN_SECTIONS: dict[str, set[str] | None] = {
    "model": {"source", "dtype", "device", "seed"},
    "engine": None,  # any engine option; the Engine rejects unknown ones by name
    "serving": {"use_predictions"},
    "runtime": {"num_threads"},
    "extension": {"module"},
    "stack": None,  # knobs of a scenario's own stack (stack.py), e.g. a CFG pipeline
}
DTYPES = ("float32", "bfloat16", "float16")


class PlanError(ValueError):
    """A plan is malformed; the message names the field."""


@dataclass
class Plan:
    """A serving stack as data. Example::

        plan = Plan.load("plan.toml")
        better = plan.with_changes({"serving.use_predictions": True,
                                    "engine.num_draft_tokens": 32})
        engine = better.build_engine()
    """

    data: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def start(cls, scenario: Any, source: str) -> Plan:
        """The scenario's [start] plan on the resolved model source."""
        m = scenario.model
        data: dict[str, dict[str, Any]] = {
            "model": {"source": source, "dtype": m.dtype, "device": m.device, "seed": m.seed},
            "engine": {}, "serving": {"use_predictions": False}, "runtime": {"num_threads": 0},
        }
        if m.max_model_len is not None:
            data["engine"]["max_model_len"] = m.max_model_len
        for section, body in scenario.start.items():
            data.setdefault(section, {}).update(copy.deepcopy(body))
        plan = cls(data)
        plan.validate()
        return plan

    @classmethod
    def loads(cls, text: str, where: str = "plan") -> Plan:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"{where}: not valid TOML: {exc}") from None
        plan = cls(data)
        plan.validate(where)
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"{path}: no such plan file")
        return cls.loads(path.read_text(), str(path))

    def dumps(self) -> str:
        return toml_dumps(self.data, header="vibekit plan: primitives and knob values")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps())

    # -- knobs --------------------------------------------------------------------------------

    def get(self, path: str, default: Any = None) -> Any:
        section, _, key = path.partition(".")
        return self.data.get(section, {}).get(key, default)

    def with_changes(self, changes: dict[str, Any]) -> Plan:
        data = copy.deepcopy(self.data)
        for path, value in changes.items():
            section, _, key = path.partition(".")
            if not key:
                raise PlanError(f"knob {path!r} is not a dotted path like 'engine.page_size'")
            data.setdefault(section, {})[key] = value
        plan = Plan(data)
        plan.validate()
        return plan

    def knobs(self) -> dict[str, Any]:
        """Every knob as {dotted path: value}."""
        return {f"{s}.{k}": v for s, body in self.data.items() for k, v in body.items()}

    def diff(self, other: Plan) -> dict[str, tuple[Any, Any]]:
        """{path: (value here, value in other)} for knobs that differ."""
        a, b = self.knobs(), other.knobs()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    def digest(self) -> str:
        blob = json.dumps(self.data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def use_predictions(self) -> bool:
        return bool(self.get("serving.use_predictions", False))

    @property
    def num_threads(self) -> int:
        return int(self.get("runtime.num_threads", 0) or 0)

    @property
    def extension(self) -> str | None:
        return self.get("extension.module")

    def engine_options(self) -> dict[str, Any]:
        opts = dict(self.data.get("engine", {}))
        opts.setdefault("seed", self.get("model.seed", 0))
        opts["enable_predictions"] = self.use_predictions  # [serving] use_predictions
        return opts

    # -- validation ---------------------------------------------------------------------------

    def validate(self, where: str = "plan") -> None:
        for section, body in self.data.items():
            if section not in PLAN_SECTIONS:
                raise PlanError(f"{where}: unknown section [{section}]; allowed: "
                                f"{', '.join(sorted(PLAN_SECTIONS))} (a plan chooses primitives "
                                f"and knobs; it cannot change the workload, metric or checker)")
            if not isinstance(body, dict):
                raise PlanError(f"{where}: [{section}] must be a table")
            keys = PLAN_SECTIONS[section]
            for key, value in body.items():
                if keys is not None and key not in keys:
                    raise PlanError(f"{where}: [{section}] {key} is not a plan knob; allowed: "
                                    f"{', '.join(sorted(keys))}")
                if not _plain(value):
                    raise PlanError(f"{where}: [{section}] {key} must be a string, number, bool "
                                    f"or list of those, got {value!r}")
        model = self.data.get("model", {})
        if not isinstance(model.get("source"), str) or not model.get("source"):
            raise PlanError(f"{where}: [model] source is required")
        if model.get("dtype", "float32") not in DTYPES:
            raise PlanError(f"{where}: [model] dtype {model.get('dtype')!r} is not one of "
                            f"{', '.join(DTYPES)}")
        if not isinstance(self.get("serving.use_predictions", False), bool):
            raise PlanError(f"{where}: [serving] use_predictions must be true or false")
        threads = self.get("runtime.num_threads", 0)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise PlanError(f"{where}: [runtime] num_threads must be an integer >= 0 (0: the "
                            f"library default), got {threads!r}")
        ext = self.get("extension.module")
        if ext is not None and (not isinstance(ext, str) or not ext.endswith(".py")
                                or ext.startswith("/") or ".." in Path(ext).parts):
            raise PlanError(f"{where}: [extension] module must be a relative path to a .py file "
                            f"inside the workspace, got {ext!r}")

    # -- building -----------------------------------------------------------------------------

    def build_engine(self, workspace: str | Path | None = None,
                     before_extension: Any = None) -> Any:
        """The Engine this plan describes (threads set, extension applied). The harness passes
        `before_extension(engine)` to install its forward audit before any extension code."""
        import torch

        from vibekit import Engine

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        m = self.data["model"]
        engine = Engine.from_pretrained(m["source"], dtype=m.get("dtype", "float32"),
                                        device=m.get("device", "cpu"), **self.engine_options())
        if before_extension is not None:
            before_extension(engine)
        if self.extension:
            engine = apply_extension(engine, self, workspace)
        return engine


def apply_extension(engine: Any, plan: Plan, workspace: str | Path | None) -> Any:
    """Load the plan's extension module and call `extend(engine, plan_dict)`; it returns the
    engine to use (or None to keep `engine`)."""
    import importlib.util

    if workspace is None:
        raise PlanError("[extension] module needs the workspace folder to resolve its path")
    path = Path(workspace) / str(plan.extension)
    if not path.is_file():
        raise PlanError(f"[extension] module {plan.extension!r} does not exist in the workspace")
    spec = importlib.util.spec_from_file_location(f"_vibekit_ext_{plan.digest()}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "extend"):
        raise PlanError(f"[extension] module {plan.extension!r} defines no extend(engine, plan)")
    result = module.extend(engine, copy.deepcopy(plan.data))
    return engine if result is None else result


def _plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise PlanError(f"cannot write {value!r} to TOML")


def toml_dumps(data: dict[str, Any], header: str = "") -> str:
    """Write a dict of tables of plain values (what plans and sidecars hold) as TOML."""
    lines = [f"# {header}", ""] if header else []
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in top.items():
        lines.append(f"{key} = {_toml_value(value)}")
    if top:
        lines.append("")
    for section, body in data.items():
        if not isinstance(body, dict):
            continue
        lines.append(f"[{section}]")
        for key, value in body.items():
            name = key if key.replace("_", "").isalnum() else json.dumps(key)
            lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
