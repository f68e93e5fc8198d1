"""What the engine returns: RequestOutput and Usage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Usage:
    """Token counts in the OpenAI sense, plus what the caches and drafts saved."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RequestOutput:
    """The state of one request after a step (cumulative), plus what changed in that step.

    token_ids / text: everything generated so far. delta_token_ids / delta_text: new in this step
    (for streaming; text that might still turn out to be part of a stop string is held back until
    it cannot). finish_reason: None while running, else "stop", "length" or "abort".
    """

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    usage: Usage
    delta_token_ids: list[int] = field(default_factory=list)
    delta_text: str = ""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
