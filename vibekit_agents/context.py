"""RunContext: the fixed facts of one run that every role may read (paths, scenario, skills).

Roles keep no state between rounds; what they hand each other lives in the workspace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibekit_agents.scenario import Scenario
from vibekit_agents.workspace import Workspace


@dataclass
class RunContext:
    scenario: Scenario
    out: Path
    workspace: Workspace
    skills: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    policy_name: str = "local"
    deadline: float | None = None  # monotonic time the run should end by
    reserve_s: float = 0.0  # kept back for the final side-by-side check

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def judge_dir(self) -> Path:
        """Reference outputs: readable by the judge's checker, never by candidates."""
        return self.out / ".judge"

    def protected_dirs(self) -> tuple[str, ...]:
        """Folders candidate processes may not read: the references and the prepared requests
        (the harness hands a task its requests; a candidate never sees them ahead of time)."""
        return (str(self.judge_dir), str(self.data_dir))

    @property
    def logs_dir(self) -> Path:
        return self.out / "logs"

    @property
    def requests_path(self) -> Path:
        return self.data_dir / "requests.json"

    @property
    def references_path(self) -> Path:
        return self.judge_dir / "references.json"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def task_timeout(self, default: float, floor: float = 30.0) -> float:
        """A sandbox time limit: `default`, cut to what the budget leaves (never below floor)."""
        if self.deadline is None:
            return default
        left = self.deadline - time.monotonic() - self.reserve_s
        return max(floor, min(default, left))

    def say(self, message: str) -> None:
        t = int(self.elapsed())
        self.progress(f"[{t // 60:02d}:{t % 60:02d}] {message}")
