"""Scenario spec: `scenarios/<name>/scenario.toml` plus workload.py, reference.py, checker.py.

A scenario fixes what may not change while a stack is tuned: the model, the workload and its
load levels, the metric and the checker. Layout of scenario.toml::

    name = "code-edit"                      # optional, defaults to the folder name
    description = "..."

    [model]
    source = "zoo:code-edit-tiny"          # "zoo:<name>", "dummy:<preset|config.json>", HF folder
    fallback_source = "dummy:model.json"   # used when `source` is a zoo model not installed here
    dtype = "float32"                      # the reference dtype; the plan may search others
    device = "cpu"
    seed = 0                               # dummy weights depend on it, so it is never searched
    max_model_len = 2048                   # optional

    [workload]
    num_requests = 5                       # measured requests
    warmup_requests = 1                    # generated first, used only to warm up
    concurrency = [1]                      # load levels of the benchmark (closed loop)
    seed = 0
    max_tokens = 128                       # any other key: passed to
                                           # workload.make_requests(seed, n, **params)

    [metric]
    kind = "median_tok_s"                  # or "throughput_tok_s", "requests_per_s",
                                           # "chunk_ttft_p50_s" (or name = "images_per_s",
                                           # "ttft_per_chunk" and other aliases; the kinds
                                           # and the per-chunk protocol: vibekit_agents.metrics)
    higher_is_better = true                # optional: the kind's own direction; a value
                                           # that contradicts it is an error
    report = ["p99_latency_s"]             # extra numbers shown in the report
    min_improvement = 0.03                 # a change must win by this fraction to be kept

    [checker]
    kind = "exact_tokens"                  # informative; "exact*" marks an exact checker
    timeout_s = 300                        # each judge subprocess
    memory_limit_mb = 6144
    min_psnr_db = 35.0                     # any other key: a threshold passed to
                                           # checker.check(outputs, references, **thresholds)

    [search]
    primitives = ["predicted-outputs", "cpu-threads"]    # skill names the search may use
    [search.knobs]                         # knob domains overriding the skills' defaults;
    "engine.num_draft_tokens" = [4, 8, 16, 32]  # a bare name ("interval") is a knob of the
                                           # scenario's own stack, plan section [stack]

    [start]                                # the plain, untuned plan the search starts from
    [start.serving]                        # (bare keys go to the [stack] section)
    use_predictions = false

    [quick]                                # `vibekit-synthesize --quick`: [workload] keys (and
    num_requests = 2                       # workload params) for a run of seconds to minutes
    max_tokens = 24                        # that checks the scenario end to end

A folder may add `stack.py` with `build_stack(plan, scenario)` for pipelines that are not a
single LLM Engine (see vibekit_agents.stack).
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from vibekit_agents.metrics import KINDS

__all__ = ["Scenario", "ScenarioError", "dump_toml", "list_scenarios", "load_scenario",
           "scenario_roots", "write_quick_variant"]

METRIC_KINDS = tuple(KINDS)
METRIC_ALIASES = {**{k: k for k in METRIC_KINDS}, "images_per_s": "requests_per_s",
                  "aggregate_tok_s": "throughput_tok_s", "tok_s": "throughput_tok_s",
                  "throughput": "throughput_tok_s", "ttft_per_chunk": "chunk_ttft_p50_s",
                  "chunk_ttft_s": "chunk_ttft_p50_s"}
REPORT_NUMBERS = ("p50_latency_s", "p99_latency_s", "p50_ttft_s", "p99_ttft_s",
                  "throughput_tok_s", "median_tok_s", "requests_per_s", "chunk_ttft_p50_s",
                  "chunk_ttft_p99_s", "audio_s_per_s")
REQUIRED_FILES = ("workload.py", "reference.py", "checker.py")
_SECTIONS = {"name", "description", "model", "workload", "metric", "checker", "search", "start",
             "quick"}


class ScenarioError(ValueError):
    """A scenario folder or its scenario.toml is malformed; the message names the field."""


@dataclass(frozen=True)
class ModelSpec:
    source: str
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    fallback_source: str | None = None
    max_model_len: int | None = None


@dataclass(frozen=True)
class WorkloadSpec:
    num_requests: int
    concurrency: tuple[int, ...] = (1,)
    seed: int = 0
    warmup_requests: int = 1
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    kind: str
    higher_is_better: bool = True
    report: tuple[str, ...] = ()
    min_improvement: float = 0.03

    @property
    def label(self) -> str:
        return KINDS[self.kind].label

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def format(self, value: float | None) -> str:
        """The metric's value with its unit ("65.3 ms" for a latency kind)."""
        return KINDS[self.kind].format(value)


@dataclass(frozen=True)
class CheckerSpec:
    kind: str = "custom"
    timeout_s: float = 300.0
    memory_limit_mb: int = 6144
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.kind.startswith("exact")


@dataclass(frozen=True)
class SearchSpec:
    primitives: tuple[str, ...] = ()
    knobs: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A loaded, validated scenario folder. `module("workload")` imports one of its files."""

    name: str
    root: Path
    description: str
    model: ModelSpec
    workload: WorkloadSpec
    metric: MetricSpec
    checker: CheckerSpec
    search: SearchSpec
    start: dict[str, Any]
    quick: dict[str, Any] = field(default_factory=dict)

    @property
    def toml_path(self) -> Path:
        return self.root / "scenario.toml"

    def module(self, name: str) -> ModuleType:
        """Import `<root>/<name>.py` under a private module name (scenario files are not a
        package; two scenarios may both have workload.py)."""
        path = self.root / f"{name}.py"
        if not path.is_file():
            raise ScenarioError(f"{self.root}: missing {name}.py")
        mod_name = f"_vibekit_scenario_{self.name.replace('-', '_')}_{name}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return module

    def has_module(self, name: str) -> bool:
        return (self.root / f"{name}.py").is_file()

    def resolved_model(self) -> tuple[str, str]:
        """(source to load, a note on why). A "zoo:<name>" source that is not installed falls
        back to `fallback_source`; relative "dummy:" config paths resolve against the folder."""
        source, note = self.model.source, "as declared"
        if source.startswith("zoo:") and not _zoo_available(source[4:]):
            if self.model.fallback_source is None:
                raise ScenarioError(f"{self.toml_path}: [model] source {source!r} is not "
                                    f"installed and no fallback_source is declared")
            note = f"{source} is not installed here; using the declared fallback"
            source = self.model.fallback_source
        return self.resolve_source(source), note

    def resolve_source(self, source: str) -> str:
        if source.startswith("dummy:"):
            spec = source[len("dummy:"):]
            if spec.endswith(".json") or "/" in spec:
                path = Path(spec)
                if not path.is_absolute():
                    path = (self.root / path).resolve()
                return f"dummy:{path}"
            return source
        if ":" not in source:
            path = Path(source)
            if not path.is_absolute() and (self.root / path).exists():
                return str((self.root / path).resolve())
        return source


def _zoo_available(name: str) -> bool:
    try:
        from vibekit import zoo
    except ImportError:
        return False
    try:
        return name in zoo.names()
    except Exception:  # a half-installed zoo folder
        return False


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate `path` (a scenario folder or its scenario.toml). Raises ScenarioError
    naming the bad field: `scenarios/x/scenario.toml: [metric] kind 'fast' is not one of ...`."""
    path = Path(path)
    root = path.parent if path.name == "scenario.toml" else path
    toml_path = root / "scenario.toml"
    if not root.is_dir():
        raise ScenarioError(f"{root}: no such scenario folder")
    if not toml_path.is_file():
        raise ScenarioError(f"{root}: missing scenario.toml")
    try:
        data = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{toml_path}: not valid TOML: {exc}") from None
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ScenarioError(f"{root}: missing {', '.join(missing)} (a scenario needs "
                            f"{', '.join(REQUIRED_FILES)})")
    v = _Validator(toml_path)
    unknown = set(data) - _SECTIONS
    if unknown:
        v.fail(f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(_SECTIONS)}")
    name = v.get(data, "", "name", str, root.name)
    description = v.get(data, "", "description", str, "")
    workload = _workload(v, v.table(data, "workload", required=True))
    metric = _metric(v, v.table(data, "metric", required=True))
    if metric.kind == "median_tok_s" and 1 not in workload.concurrency:
        v.fail("[metric] kind 'median_tok_s' is measured at concurrency 1; add 1 to "
               "[workload] concurrency")
    return Scenario(
        name=name, root=root.resolve(), description=description,
        model=_model(v, v.table(data, "model", required=True)),
        workload=workload,
        metric=metric,
        checker=_checker(v, v.table(data, "checker", required=True)),
        search=_search(v, v.table(data, "search")),
        start=_start(v, v.table(data, "start")),
        quick=dict(v.table(data, "quick")),
    )


class _Validator:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> None:
        raise ScenarioError(f"{self.path}: {message}")

    def table(self, data: dict, key: str, required: bool = False) -> dict:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(f"missing the [{key}] table")
            return {}
        if not isinstance(value, dict):
            self.fail(f"[{key}] must be a table, got {type(value).__name__}")
        return value

    def get(self, table: dict, section: str, key: str, kind: type | tuple, default: Any = ...,
            check: Any = None, allowed: str = "") -> Any:
        where = f"[{section}] {key}" if section else key
        if key not in table:
            if default is ...:
                self.fail(f"{where} is required")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok or (check is not None and not check(value)):
            names = "/".join(k.__name__ for k in kinds)
            self.fail(f"{where} must be {allowed or 'a ' + names}, got {value!r}")
        return value

    def only(self, table: dict, section: str, keys: set[str]) -> None:
        unknown = set(table) - keys
        if unknown:
            self.fail(f"[{section}] has unknown keys {sorted(unknown)}; allowed: {sorted(keys)}")


def _model(v: _Validator, t: dict) -> ModelSpec:
    v.only(t, "model", {"source", "fallback_source", "dtype", "device", "seed", "max_model_len"})
    dtypes = ("float32", "bfloat16", "float16")
    return ModelSpec(
        source=v.get(t, "model", "source", str, check=bool, allowed="a non-empty string"),
        fallback_source=v.get(t, "model", "fallback_source", str, None),
        dtype=v.get(t, "model", "dtype", str, "float32", check=lambda d: d in dtypes,
                    allowed=f"one of {', '.join(dtypes)}"),
        device=v.get(t, "model", "device", str, "cpu",
                     check=lambda d: d in ("cpu", "mlx") or d.startswith(("cuda", "mps")),
                     allowed="'cpu', 'cuda[:N]', 'mps' or 'mlx'"),
        seed=v.get(t, "model", "seed", int, 0),
        max_model_len=v.get(t, "model", "max_model_len", int, None, check=lambda n: n > 0,
                            allowed="a positive integer"),
    )


def _workload(v: _Validator, t: dict) -> WorkloadSpec:
    known = {"num_requests", "concurrency", "seed", "warmup_requests", "params"}
    # The workload's own parameters sit beside the known keys (or in a [workload.params] table).
    params = {k: val for k, val in t.items() if k not in known}
    params.update(v.get(t, "workload", "params", dict, {}))
    conc = v.get(t, "workload", "concurrency", (list, int), [1])
    conc = [conc] if isinstance(conc, int) else conc
    if not conc or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                           for c in conc):
        v.fail(f"[workload] concurrency must be a positive integer or a non-empty list of them, "
               f"got {t.get('concurrency')!r}")
    return WorkloadSpec(
        num_requests=v.get(t, "workload", "num_requests", int, check=lambda n: n > 0,
                           allowed="a positive integer"),
        concurrency=tuple(conc),
        seed=v.get(t, "workload", "seed", int, 0),
        warmup_requests=v.get(t, "workload", "warmup_requests", int, 1, check=lambda n: n >= 0,
                              allowed="an integer >= 0"),
        params=params,
    )


def _metric(v: _Validator, t: dict) -> MetricSpec:
    v.only(t, "metric", {"kind", "name", "higher_is_better", "report", "min_improvement"})
    if "kind" not in t and "name" in t:  # `name` as in DESIGN.md, mapped to a measured kind
        name = t["name"]
        if name not in METRIC_ALIASES:
            v.fail(f"[metric] name {name!r} is not one of {', '.join(sorted(METRIC_ALIASES))}")
        t = {**t, "kind": METRIC_ALIASES[name]}
    kind = v.get(t, "metric", "kind", str, check=lambda k: k in METRIC_KINDS,
                 allowed=f"one of {', '.join(METRIC_KINDS)}")
    report = v.get(t, "metric", "report", list, [])
    bad = [r for r in report if r not in REPORT_NUMBERS]
    if bad:
        v.fail(f"[metric] report has unknown numbers {bad}; allowed: {', '.join(REPORT_NUMBERS)}")
    direction = KINDS[kind].higher_is_better
    declared = v.get(t, "metric", "higher_is_better", bool, direction)
    if declared != direction:
        v.fail(f"[metric] higher_is_better = {str(declared).lower()} contradicts kind {kind!r} "
               f"({'higher' if direction else 'lower'} is better); drop the key or set it to "
               f"{str(direction).lower()}")
    return MetricSpec(
        kind=kind,
        higher_is_better=direction,
        report=tuple(report),
        min_improvement=float(v.get(t, "metric", "min_improvement", (float, int), 0.03,
                                    check=lambda x: 0 <= x < 1, allowed="a number in [0, 1)")),
    )


def _checker(v: _Validator, t: dict) -> CheckerSpec:
    known = {"kind", "timeout_s", "memory_limit_mb", "thresholds"}
    # Thresholds sit beside the known keys (or in a [checker.thresholds] table).
    thresholds = {k: val for k, val in t.items() if k not in known}
    thresholds.update(v.get(t, "checker", "thresholds", dict, {}))
    return CheckerSpec(
        kind=v.get(t, "checker", "kind", str, "custom"),
        timeout_s=float(v.get(t, "checker", "timeout_s", (int, float), 300.0,
                              check=lambda x: x > 0, allowed="a positive number")),
        memory_limit_mb=v.get(t, "checker", "memory_limit_mb", int, 6144,
                              check=lambda x: x >= 256, allowed="an integer >= 256"),
        thresholds=thresholds,
    )


def _search(v: _Validator, t: dict) -> SearchSpec:
    v.only(t, "search", {"primitives", "knobs"})
    prims = v.get(t, "search", "primitives", list, [])
    if not all(isinstance(p, str) for p in prims):
        v.fail(f"[search] primitives must be a list of skill names, got {prims!r}")
    knobs = v.get(t, "search", "knobs", dict, {})
    out = {}
    for name, domain in knobs.items():
        if not isinstance(domain, list) or not domain:
            v.fail(f"[search.knobs] {name!r} must be a non-empty list of values, got {domain!r}")
        # A bare name is a knob of the scenario's own stack (stack.py): plan section [stack].
        out[name if "." in name else f"stack.{name}"] = domain
    return SearchSpec(primitives=tuple(prims), knobs=out)


def _start(v: _Validator, t: dict) -> dict[str, Any]:
    from vibekit_agents.plan import PLAN_SECTIONS

    out: dict[str, Any] = {}
    for section, body in t.items():
        if not isinstance(body, dict):  # a bare value is a knob of the scenario's own stack
            out.setdefault("stack", {})[section] = body
            continue
        if section not in PLAN_SECTIONS or section == "model":
            allowed = sorted(set(PLAN_SECTIONS) - {"model"})
            v.fail(f"[start] has unknown section {section!r}; allowed: {allowed} (the model "
                   f"comes from [model])")
        out.setdefault(section, {}).update(body)
    return out


QUICK_DEFAULTS = {"num_requests": 2, "warmup_requests": 1}


def write_quick_variant(sc: Scenario, folder: str | Path) -> Path:
    """A copy of the scenario folder whose workload is cut to the [quick] table (default: 2
    measured requests, 1 warm-up, load levels capped at the request count), for a run that
    checks the scenario end to end in little time. Returns the new folder."""
    import shutil

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(sc.root, folder, ignore=shutil.ignore_patterns("__pycache__"))
    data = tomllib.loads(sc.toml_path.read_text())
    data.pop("quick", None)
    data["name"] = sc.name
    workload = data.setdefault("workload", {})
    params = workload.get("params") if isinstance(workload.get("params"), dict) else None
    known = {"num_requests", "concurrency", "seed", "warmup_requests"}
    for key, value in {**QUICK_DEFAULTS, **sc.quick}.items():
        if key not in known and params is not None and key in params:
            params[key] = value
        else:
            workload[key] = value
    n = workload["num_requests"]
    conc = workload.get("concurrency", [1])
    conc = [conc] if isinstance(conc, int) else conc
    workload["concurrency"] = sorted({min(c, n) for c in conc})
    (folder / "scenario.toml").write_text(dump_toml(data))
    return folder


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Nested tables of plain values (what scenario.toml holds) as TOML."""
    import json

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise ScenarioError(f"cannot write {v!r} to TOML")

    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{key(k)}" if prefix else key(k)
            lines += ["", f"[{name}]", dump_toml(v, name).strip("\n")]
    return "\n".join(lines) + "\n"


def scenario_roots() -> list[Path]:
    """Where `--list` looks: ./scenarios and the repository's scenarios folder."""
    here = Path(__file__).resolve().parent.parent / "scenarios"
    roots = [Path.cwd() / "scenarios", here]
    out: list[Path] = []
    for r in roots:
        if r.is_dir() and r.resolve() not in [o.resolve() for o in out]:
            out.append(r)
    return out


def list_scenarios() -> list[tuple[Path, Scenario | None, str]]:
    """(folder, scenario or None, status line) for every folder under the scenario roots."""
    rows = []
    for root in scenario_roots():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name.startswith((".", "_")):
                continue
            try:
                sc = load_scenario(folder)
            except ScenarioError as exc:
                status = "incomplete" if "missing" in str(exc) else "invalid"
                rows.append((folder, None, f"{status}: {str(exc).split(': ', 1)[-1]}"))
                continue
            rows.append((folder, sc, sc.description.strip().splitlines()[0]
                         if sc.description.strip() else ""))
    return rows
