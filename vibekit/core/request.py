"""Request: one sequence's state as it moves through the scheduler."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from vibekit.core.outputs import Usage
from vibekit.core.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Drafter(Protocol):
    """Proposes draft tokens to verify after the output so far (vibekit.spec.PredictionDrafter)."""

    def propose(self, output_ids: Sequence[int], max_tokens: int) -> list[int]: ...

    def update(self, draft: Sequence[int], num_accepted: int, emitted: Sequence[int]) -> None: ...


class Grammar(Protocol):
    """A request's structured-output state (vibekit.grammar.RequestGrammar)."""

    def propose(self, prediction: Sequence[int] | None, output_ids: Sequence[int],
                max_tokens: int) -> list[int]: ...

    def fill_bitmask(self, bitmask: torch.Tensor, row: int, draft: Sequence[int]) -> None: ...

    def advance(self, token: int) -> bool: ...


class Guidance(Protocol):
    """A request's classifier-free guidance (vibekit.cfg.TextGuidance): its unconditional
    companion sequence, scheduled beside it, and the CFG cache that decides when it runs."""

    uncond: Request

    def runs_uncond(self, step: int) -> bool: ...

    def guide(self, step: int, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        """Guided log-probs [V] of output position `step` from cond [V] and uncond [V] log-probs
        (None on a step the cache skips)."""
        ...


@dataclass(slots=True, eq=False)
class Request:
    """A prompt, its sampling settings and everything decoded so far.

    token_ids holds prompt + output, and is only ever appended to (or replaced by a new list):
    the RequestOutputs of earlier steps slice it lazily. num_computed_tokens counts the leading
    tokens whose KV (and, for hybrid models, recurrent state) is in the cache; the scheduler feeds
    token_ids[num_computed_tokens:] to the next forward. The caches keep their own per-request
    records (page tables, state slots) keyed by request_id.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None = None
    arrival_index: int = 0
    token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_prompt_tokens: int = -1  # -1 until the first schedule
    finish_reason: str | None = None
    text: str = ""  # detokenized output, maintained by the output processor
    num_emitted_tokens: int = 0
    num_emitted_chars: int = 0
    stop_ids: frozenset[int] = frozenset()
    max_len: int = 0  # token_ids may not grow beyond this (min of prompt+max_tokens, max_model_len)
    num_preemptions: int = 0
    drafter: Drafter | None = None  # predicted outputs
    grammar: Grammar | None = None  # structured output
    guidance: Guidance | None = None  # classifier-free guidance
    num_accepted_prediction_tokens: int = 0
    num_rejected_prediction_tokens: int = 0
    prefix_cache_reason: str = ""  # how its prefix matched ("hit", "partial hit: ...", "miss: ...")

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids):]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.num_prompt_tokens,
            completion_tokens=self.num_output_tokens,
            cached_prompt_tokens=max(self.num_cached_prompt_tokens, 0),
            accepted_prediction_tokens=self.num_accepted_prediction_tokens,
            rejected_prediction_tokens=self.num_rejected_prediction_tokens,
        )
