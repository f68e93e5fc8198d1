"""Text CFG for LLMs, inside the engine: a guided request has an unconditional companion
sequence (the negative prompt, default the last prompt token as in HF, followed by the output)
that the scheduler runs beside it in the same ragged batch, and a logits processor that turns
the two rows into guided log-probs

    guided = logp_cond + (s - 1) * (logp_cond - logp_uncond)

the formula of "Stay on Topic with Classifier-Free Guidance" (Sanchez et al. 2023) and of HF
transformers' `generate(guidance_scale=..., negative_prompt_ids=...)`.

The CFG cache works as for images: on a step whose policy skips the unconditional branch the last
delta is reused (or guidance dropped past a "drop" gate). The companion then falls behind; the
next step that runs it feeds all its missing tokens as one chunk (a ragged prefill), so its KV
is always exact when it is read.

Example::

    engine.generate(["Tell me about cats"], SamplingParams(
        max_tokens=32, temperature=0.0, guidance_scale=1.5, negative_prompt="Talk about dogs",
        guidance_cache=CFGCachePolicy.every(3, warmup_steps=2)))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vibekit.cfg.cache import CFGCache
from vibekit.cfg.policy import CFGCachePolicy
from vibekit.core.request import Request
from vibekit.core.scheduled import ScheduledBatch
from vibekit.errors import InvalidRequestError


def guidance_policy(spec: Any, max_tokens: int) -> CFGCachePolicy:
    """A CFGCachePolicy from SamplingParams.guidance_cache (None, a policy, or a dict of its
    fields); raises InvalidRequestError naming what is wrong."""
    if spec is None:
        policy = CFGCachePolicy()
    elif isinstance(spec, CFGCachePolicy):
        policy = spec
    elif isinstance(spec, dict):
        names = {f.name for f in dataclasses.fields(CFGCachePolicy)}
        unknown = set(spec) - names
        if unknown:
            raise InvalidRequestError(f"guidance_cache has unknown fields {sorted(unknown)}; "
                                      f"allowed: {sorted(names)}")
        try:
            policy = CFGCachePolicy(**spec)
        except (TypeError, ValueError) as e:
            raise InvalidRequestError(f"guidance_cache is invalid: {e}") from None
    else:
        raise InvalidRequestError("guidance_cache must be a CFGCachePolicy, a dict of its "
                                  f"fields, or None; got {type(spec).__name__}")
    if policy.reweights:
        raise InvalidRequestError("guidance_cache: FasterCache frequency reweighting "
                                  "(alpha_low / alpha_high != 1) applies to images, not text")
    try:
        policy.check(max_tokens)
    except ValueError as e:
        raise InvalidRequestError(f"guidance_cache: {e}") from None
    return policy


class TextGuidance:
    """The guidance of one request (vibekit.core.Guidance): its companion and its CFG cache,
    one row (batch_size 1) whose step is the output position being sampled."""

    def __init__(self, uncond: Request, policy: CFGCachePolicy, max_tokens: int,
                 guidance_scale: float) -> None:
        self.uncond = uncond
        self.cache = CFGCache(policy, max_tokens, guidance_scale, batch_size=1)

    @property
    def num_uncond_steps(self) -> int:
        """Steps on which the unconditional branch ran."""
        return self.cache.num_uncond_rows

    def runs_uncond(self, step: int) -> bool:
        return bool(self.cache.uncond_rows(step))

    def guide(self, step: int, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        rows = self.cache.uncond_rows(step)
        return self.cache.guide(step, cond[None], None if uncond is None else uncond[None],
                                rows)[0]


class PendingGuidance:
    __slots__ = ("jobs",)

    def __init__(self, jobs: list[tuple[TextGuidance, int, int, int]]) -> None:
        self.jobs = jobs

    @torch.inference_mode()
    def apply(self, logits: torch.Tensor) -> None:
        for guidance, step, row, aux_row in self.jobs:
            cond = torch.log_softmax(logits[row].float(), dim=-1)
            uncond = None if aux_row < 0 else torch.log_softmax(logits[aux_row].float(), dim=-1)
            logits[row] = guidance.guide(step, cond, uncond).to(logits.dtype)


class GuidanceProcessor:
    """The CFG logits processor: each guided request's row becomes guided log-probs (from its
    own row and its companion's aux row, or the cached delta). First in the runner's list, as
    in HF's generate, so the grammar mask and the penalties see the guided distribution."""

    def start(self, batch: ScheduledBatch) -> PendingGuidance | None:
        jobs = [(g.request.guidance, g.request.num_output_tokens, g.start, g.aux_row)
                for g in batch.groups if g.request.guidance is not None]
        return PendingGuidance(jobs) if jobs else None
