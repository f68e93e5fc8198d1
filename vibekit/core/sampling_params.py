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
    repetition_penalty: HF's / vLLM's: logits of tokens in the prompt or output are divided by it
        when positive, multiplied when negative (1.0: off; > 1 discourages repeats).
    frequency_penalty / presence_penalty: OpenAI's, in [-2, 2]: subtract
        frequency_penalty * count + presence_penalty * (count > 0) for each token's count in
        the output so far (0: off).
    logit_bias: OpenAI's {token_id: bias}, bias in [-100, 100], added to that token's logit.
    guidance_scale: classifier-free guidance (HF generate's `guidance_scale`, in [0, 20]; 1.0:
        off): sample from logp + (s - 1) * (logp - logp_uncond), where the unconditional
        sequence is `negative_prompt` (text or ids; None: the last prompt token, as HF) followed
        by the output. guidance_cache: a vibekit.cfg.CFGCachePolicy (or a dict of its fields)
        that skips the unconditional forward on some steps (None: every step).

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
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    guidance_scale: float = 1.0
    negative_prompt: str | list[int] | None = None
    guidance_cache: Any = None
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
        if (not _is_number(self.repetition_penalty)
                or not 0.0 < self.repetition_penalty <= 100.0):
            raise bad("repetition_penalty", self.repetition_penalty,
                      "it must be a number in (0, 100] (1.0: off)")
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not -2.0 <= value <= 2.0:
                raise bad(name, value, "it must be a number in [-2, 2] (0: off)")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise bad("logit_bias", self.logit_bias, "it must be a dict {token_id: bias}")
            bias = {}
            for key, value in self.logit_bias.items():
                token = _as_token_id(key)
                if token is None:
                    raise bad("logit_bias", self.logit_bias,
                              f"key {key!r} is not a non-negative integer token id")
                if not _is_number(value) or not -100.0 <= value <= 100.0:
                    raise bad("logit_bias", self.logit_bias,
                              f"bias {value!r} of token {key!r} must be a number in [-100, 100]")
                bias[token] = float(value)
            self.logit_bias = bias or None
        if not _is_number(self.guidance_scale) or not 0.0 <= self.guidance_scale <= 20.0:
            raise bad("guidance_scale", self.guidance_scale,
                      "it must be a number in [0, 20] (1.0: no guidance)")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str) and (
                not isinstance(self.negative_prompt, (list, tuple)) or not all(
                    isinstance(t, int) and not isinstance(t, bool) and t >= 0
                    for t in self.negative_prompt)):
            raise bad("negative_prompt", self.negative_prompt,
                      "it must be a string or a list of token ids")
        if self.response_format is not None and not isinstance(self.response_format, dict):
            raise bad("response_format", self.response_format,
                      "it must be a dict in the OpenAI shape")



def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _as_token_id(key: Any) -> int | None:
    """An int token id from a logit_bias key (JSON object keys arrive as strings)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, str) and key.isdigit():
        return int(key)
    if isinstance(key, int) and key >= 0:
        return key
    return None
