"""Predicted outputs: a user's prediction as the draft, verified in blocks by the target model."""

from vibekit.spec.drafter import PredictionDrafter
from vibekit.spec.verify import accept_greedy, accept_sampling

__all__ = ["PredictionDrafter", "accept_greedy", "accept_sampling"]
