"""Skills: `skills/<name>/SKILL.md` (Agent Skills format) and `skills/<name>/knobs.toml`.

SKILL.md starts with YAML front matter holding `name` and `description`; the body is for
readers (people and the Claude roles). knobs.toml is for the offline planner::

    skill = "predicted-outputs"
    kind = "primitive"                   # or "generic": a knob any engine has (threads,
                                         # batching, graphs, dtype); reports split the gain

    [[knobs]]
    name = "engine.num_draft_tokens"     # a dotted plan path (see vibekit_agents.plan)
    domain = [4, 8, 16, 32, 64]          # values worth trying
    default = 16                         # the library default
    supported = true                     # true, false, or "if-engine-option": supported when
                                         # vibekit.config declares the engine option
    applies_when = ["workload.has_predictions"]   # facts that must hold ("!fact" negates)
    requires = { "serving.use_predictions" = true }  # plan values that must already hold
    priority = 6                         # base rank; evaluator hints add to it
    max_fact = "cpu.count"               # optional: values above this fact are skipped
    why = "one line: what it buys and when"
    note = "for unsupported knobs: what is missing"
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Knob", "Skill", "load_skills", "skills_root"]


def skills_root() -> Path:
    return Path(__file__).resolve().parent.parent / "skills"


@dataclass(frozen=True)
class Knob:
    name: str
    skill: str
    domain: tuple[Any, ...]
    default: Any
    supported: bool
    applies_when: tuple[str, ...] = ()
    requires: dict[str, Any] = field(default_factory=dict)
    priority: float = 1.0
    max_fact: str | None = None
    why: str = ""
    note: str = ""

    def applies(self, facts: dict[str, Any]) -> bool:
        for cond in self.applies_when:
            neg = cond.startswith("!")
            value = bool(facts.get(cond.lstrip("!"), False))
            if value == neg:
                return False
        return True

    def values(self, facts: dict[str, Any], override: list[Any] | None = None) -> list[Any]:
        values = list(override if override is not None else self.domain)
        if self.max_fact and isinstance(facts.get(self.max_fact), (int, float)):
            values = [v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)
                      or v <= facts[self.max_fact]]
        return values


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    path: Path
    knobs: tuple[Knob, ...]
    kind: str = "primitive"  # "primitive" (a vibekit technique) or "generic" (any engine's knob)

    def text(self) -> str:
        return (self.path / "SKILL.md").read_text()


def _front_matter(text: str, path: Path) -> dict[str, str]:
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    if not m:
        raise ValueError(f"{path}: SKILL.md must start with YAML front matter (---)")
    out: dict[str, str] = {}
    key = None
    for line in m.group(1).splitlines():
        if re.match(r"^[A-Za-z_-]+:", line):
            key, _, value = line.partition(":")
            key = key.strip()
            out[key] = value.strip().strip("'\"")
        elif key and line.startswith((" ", "\t")):
            out[key] = (out[key] + " " + line.strip()).strip()
    for required in ("name", "description"):
        if not out.get(required):
            raise ValueError(f"{path}: front matter has no {required!r}")
    return out


def _engine_option_exists(option: str) -> bool:
    try:
        from vibekit import config
    except ImportError:
        return False
    for cls in (config.CacheConfig, config.SchedulerConfig, getattr(config, "SpecConfig", None),
                config.EngineConfig):
        if cls is not None and option in {f.name for f in dataclasses.fields(cls)}:
            return True
    return False


def _supported(value: Any, name: str) -> bool:
    if value == "if-engine-option":
        section, _, option = name.partition(".")
        return section == "engine" and _engine_option_exists(option)
    return bool(value)


def load_skills(root: str | Path | None = None) -> dict[str, Skill]:
    """Every skill under `root` (default: the repository's skills/), by name."""
    root = Path(root) if root else skills_root()
    skills: dict[str, Skill] = {}
    for folder in sorted(p for p in root.iterdir() if (p / "SKILL.md").is_file()):
        meta = _front_matter((folder / "SKILL.md").read_text(), folder / "SKILL.md")
        if meta["name"] != folder.name:
            raise ValueError(f"{folder}/SKILL.md: name {meta['name']!r} must match the folder")
        knobs: list[Knob] = []
        sidecar = folder / "knobs.toml"
        kind = "primitive"
        if sidecar.is_file():
            data = tomllib.loads(sidecar.read_text())
            kind = data.get("kind", "primitive")
            if kind not in ("primitive", "generic"):
                raise ValueError(f"{sidecar}: kind {kind!r} must be 'primitive' or 'generic'")
            for k in data.get("knobs", []):
                knobs.append(Knob(
                    name=k["name"], skill=folder.name, domain=tuple(k.get("domain", [])),
                    default=k.get("default"), supported=_supported(k.get("supported", True),
                                                                   k["name"]),
                    applies_when=tuple(k.get("applies_when", [])),
                    requires=dict(k.get("requires", {})), priority=float(k.get("priority", 1)),
                    max_fact=k.get("max_fact"), why=k.get("why", ""), note=k.get("note", ""),
                ))
        skills[folder.name] = Skill(meta["name"], meta["description"], folder, tuple(knobs),
                                    kind)
    return skills
