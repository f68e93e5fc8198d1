"""SamplingParams: how one request is decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vibekit.errors import InvalidRequestError

# What torch.Generator.manual_seed accepts (a signed or unsigned 64-bit integer).
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass
class SamplingParams:
    """Decoding settings of one request (names and meanings follow the OpenAI / vLLM APIs).

    max_tokens: most tokens to generate (finish_reason "length" when reached).
    temperature: 0 is greedy; > 0 samples from softmax(logits / temperature).
    top_p: nucleus mass in (0, 1]; top_k: keep the k most likely tokens (0 or -1: off).
    seed: per-request RNG seed; the same seed gives the same tokens whatever else is batched.
    stop: strings that end generation (excluded from the text); stop_token_ids: ids that end it.
    ignore_eos: keep generating past the model's EOS tokens.
    response_format: OpenAI shape ({"type": "json_schema", ...} / {"type": "json_object"}).

    Example: `SamplingParams(max_tokens=64, temperature=0.0, stop=["\\n\\n"])`
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    response_format: dict[str, Any] | None = None
    stop_strings: tuple[str, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, allowed: str) -> InvalidRequestError:
            return InvalidRequestError(f"{name}={value!r} is invalid; {allowed}")

        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise bad("max_tokens", self.max_tokens, "it must be an integer >= 1")
        if self.max_tokens < 1:
            raise bad("max_tokens", self.max_tokens, "it must be >= 1")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool):
            raise bad("temperature", self.temperature, "it must be a number >= 0")
        if not 0.0 <= self.temperature <= 100.0:
            raise bad("temperature", self.temperature, "it must be in [0, 100]")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not (
            0.0 < self.top_p <= 1.0
        ):
            raise bad("top_p", self.top_p, "it must be in (0, 1]")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < -1:
            raise bad("top_k", self.top_k, "it must be an integer >= 1, or 0 / -1 for no limit")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise bad("seed", self.seed, "it must be an integer or None")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise bad("seed", self.seed, f"it must fit in 64 bits: [{SEED_MIN}, {SEED_MAX}]")
        stop = self.stop
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise bad("stop", self.stop, "it must be a string or a list of strings")
        if any(s == "" for s in stop):
            raise bad("stop", self.stop, "stop strings must be non-empty")
        self.stop_strings = tuple(stop)
        if self.stop_token_ids is not None:
            ids = self.stop_token_ids
            if not isinstance(ids, (list, tuple)) or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids
            ):
                raise bad("stop_token_ids", ids, "it must be a list of non-negative token ids")
        if self.response_format is not None and not isinstance(self.response_format, dict):
            raise bad("response_format", self.response_format,
                      "it must be a dict in the OpenAI shape")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
