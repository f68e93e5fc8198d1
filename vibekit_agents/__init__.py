"""vibekit_agents: assemble, check and tune a serving stack per scenario from vibekit primitives.

    vibekit-synthesize scenarios/code-edit            # offline local policy
    vibekit-synthesize scenarios/code-edit --planner claude   # with ANTHROPIC_API_KEY set

Pieces: scenario (spec loader), plan (primitives + knobs -> Engine, server.py), workspace
(git, MEMORY.md, BACKLOG.md), roles (planner, implementer, judge, evaluator), policies (local,
claude), loop (the rounds), report.
"""

from vibekit_agents.plan import Plan, PlanError
from vibekit_agents.scenario import Scenario, ScenarioError, list_scenarios, load_scenario
from vibekit_agents.server_py import render_server_py
from vibekit_agents.skills import load_skills

__all__ = ["Plan", "PlanError", "Scenario", "ScenarioError", "list_scenarios", "load_scenario",
           "load_skills", "render_server_py"]
