"""Logits processors: batched edits of the sampling rows between the forward and the sampler.

The runner holds a list in a fixed order: the grammar mask (vibekit.grammar.GrammarMasker)
first, then PenaltiesProcessor (repetition / frequency / presence penalties, logit bias)."""

from vibekit.logits.base import LogitsProcessor, PendingLogits
from vibekit.logits.penalties import PenaltiesProcessor, apply_penalties_ref

__all__ = ["LogitsProcessor", "PenaltiesProcessor", "PendingLogits", "apply_penalties_ref"]
