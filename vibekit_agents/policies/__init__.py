"""Policies supply the planner and the implementer of a round: `local` (offline search over the
skills' knobs, the default) and `claude` (role conversations through the anthropic SDK)."""

from vibekit_agents.policies.local import LocalPolicy

__all__ = ["LocalPolicy"]
