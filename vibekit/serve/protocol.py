"""OpenAI request bodies as pydantic models (strict types: "5" is not an integer here).

Besides the OpenAI fields, requests take vLLM-style extras (send them with the openai client's
`extra_body`): `top_k`, `repetition_penalty`, `ignore_eos`, `stop_token_ids` and `return_token_ids`
(adds the generated
`token_ids` to each choice and the `prompt_token_ids`). Unknown fields are ignored; known OpenAI
fields this server cannot honour (logprobs, tools...) are rejected with a 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vibekit.serve.errors import APIError

NonNegInt = Annotated[int, Field(ge=0)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Prediction(_Body):
    """Predicted output: the text the completion is expected to mostly repeat."""

    type: Literal["content"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return _join_text(self.content)


class SamplingRequest(_Body):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    prediction: Prediction | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM-style extras
    top_k: int | None = Field(default=None, ge=-1)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)
    ignore_eos: bool = False
    stop_token_ids: list[NonNegInt] | None = None
    return_token_ids: bool = False

    def check_supported(self) -> None:
        """Reject fields we parse but cannot honour (a 400 naming the field)."""
        for key, bias in (self.logit_bias or {}).items():
            if not key.isdigit() or not -100.0 <= bias <= 100.0:
                raise APIError(f"logit_bias maps token ids (digit strings) to biases in "
                               f"[-100, 100]; got {key!r}: {bias}", param="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise APIError("stream_options is only allowed when stream is true",
                           param="stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def structured_format(self) -> dict[str, Any] | None:
        """response_format for SamplingParams: None for plain text; the engine checks the rest
        (json_object, json_schema, and vibekit's regex / grammar shapes)."""
        if self.response_format is None or self.response_format == {"type": "text"}:
            return None
        return self.response_format


class CompletionRequest(SamplingRequest):
    """POST /v1/completions. prompt: a string, a list of strings, token ids, or lists of ids."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)  # the OpenAI default for completions
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise APIError("echo is not supported by this server", param="echo")
        if self.suffix:
            raise APIError("suffix is not supported by this server", param="suffix")
        if self.logprobs:
            raise APIError("logprobs is not supported by this server", param="logprobs")
        if self.best_of not in (None, self.n):
            raise APIError("best_of must equal n (no server-side ranking)", param="best_of")

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise APIError("prompt must not be empty", param="prompt")
        if all(isinstance(p, int) for p in prompt):
            return [prompt]  # type: ignore[list-item]
        return prompt  # type: ignore[return-value]


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        return {"role": self.role, "content": _join_text(self.content or "")}


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions. max_completion_tokens wins over the older max_tokens."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs:
            raise APIError("logprobs is not supported by this server", param="logprobs")
        if self.tools:
            raise APIError("tools are not supported by this server", param="tools")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _join_text(content: str | list[TextPart]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)
