"""The roles of a round, each working only from workspace files: planner, implementer,
accuracy judge, performance evaluator."""

from vibekit_agents.roles.evaluator import Evaluator
from vibekit_agents.roles.implementer import LocalImplementer
from vibekit_agents.roles.judge import Judge
from vibekit_agents.roles.planner import LocalPlanner, decide

__all__ = ["Evaluator", "Judge", "LocalImplementer", "LocalPlanner", "decide"]
