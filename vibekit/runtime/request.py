"""Request: one sequence's state as it moves through the scheduler."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from vibekit.kvcache import PageTable
from vibekit.runtime.detokenizer import IncrementalDetokenizer
from vibekit.runtime.outputs import Usage
from vibekit.runtime.sampling_params import SamplingParams
from vibekit.spec import PredictionDrafter

if TYPE_CHECKING:
    from vibekit.grammar import RequestGrammar


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Request:
    """A prompt, its sampling settings and everything decoded so far.

    token_ids holds prompt + output. num_computed_tokens counts the leading tokens whose KV is in
    the cache; the scheduler feeds token_ids[num_computed_tokens:] to the next forward.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    arrival_index: int
    token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_prompt_tokens: int = -1  # -1 until the first schedule
    page_table: PageTable | None = None  # set by the engine (KVCacheManager.new_table)
    finish_reason: str | None = None
    detokenizer: IncrementalDetokenizer | None = None
    text: str = ""
    num_emitted_tokens: int = 0
    num_emitted_chars: int = 0
    stop_ids: frozenset[int] = frozenset()
    max_len: int = 0  # token_ids may not grow beyond this (min of prompt+max_tokens, max_model_len)
    num_preemptions: int = 0
    drafter: PredictionDrafter | None = None  # predicted outputs
    grammar: RequestGrammar | None = None  # structured output (vibekit.grammar)
    num_accepted_prediction_tokens: int = 0
    num_rejected_prediction_tokens: int = 0
    state_slot: int = -1  # hybrid models: the recurrent-state slot while running (vibekit.ssm)
    extra: dict[str, Any] = field(default_factory=dict)

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
