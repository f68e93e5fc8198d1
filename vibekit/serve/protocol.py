"""OpenAI request bodies as pydantic models (strict types: "5" is not an integer here).

Besides the OpenAI fields, requests take vLLM-style extras (send them with the openai client's
`extra_body`): `top_k`, `repetition_penalty`, `ignore_eos`, `stop_token_ids` and
`return_token_ids` (adds the generated `token_ids` to each choice and the `prompt_token_ids`),
and `timeout` (seconds: the request is aborted with a 504 past it). Unknown fields are ignored;
known OpenAI fields this server cannot honour (logprobs...) are rejected with a 400. Every
number is range-checked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vibekit.core.sampling_params import SEED_MAX, SEED_MIN
from vibekit.serve.errors import APIError

INT32_MAX = 2**31 - 1
NonNegInt = Annotated[int, Field(ge=0, le=INT32_MAX)]


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
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    prediction: Prediction | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, allow_inf_nan=False)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM-style extras
    top_k: int | None = Field(default=None, ge=-1, le=INT32_MAX)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0, allow_inf_nan=False)
    ignore_eos: bool = False
    stop_token_ids: list[NonNegInt] | None = None
    return_token_ids: bool = False
    timeout: float | None = Field(default=None, gt=0.0, le=86400.0, allow_inf_nan=False)

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
    max_tokens: int | None = Field(default=16, ge=1, le=INT32_MAX)  # OpenAI's default here
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    best_of: int | None = Field(default=None, ge=1, le=128)

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


class FunctionCall(_Body):
    name: str
    arguments: str  # JSON text, as the OpenAI API sends it


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages
    tool_call_id: str | None = None  # tool messages: which call this answers

    def model_post_init(self, context: Any) -> None:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise APIError(f"a {self.role!r} message needs content (a string or a list of text "
                           "parts); only an assistant message with tool_calls may omit it",
                           param="messages")
        if self.tool_calls and self.role != "assistant":
            raise APIError("only assistant messages may have tool_calls", param="messages")
        if self.role == "tool" and not self.tool_call_id:
            raise APIError("a 'tool' message needs the tool_call_id of the call it answers",
                           param="messages")

    @property
    def text(self) -> str:
        return _join_text(self.content or "")


class FunctionDefinition(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; None: no arguments
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class ToolName(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: ToolName


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions. max_completion_tokens wins over the older max_tokens."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs:
            raise APIError("logprobs is not supported by this server", param="logprobs")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise APIError("tool_choice needs `tools`: name the functions the model may call",
                           param="tool_choice")
        if self.tools:
            names = [t.function.name for t in self.tools]
            if len(set(names)) != len(names):
                raise APIError(f"tool names must be unique; got {names}", param="tools")
            if isinstance(self.tool_choice, NamedToolChoice) and (
                    self.tool_choice.function.name not in names):
                raise APIError(f"tool_choice names {self.tool_choice.function.name!r}, which "
                               f"is not among the tools {names}", param="tool_choice")
            if self.tool_mode != "none" and self.response_format not in (
                    None, {"type": "text"}):
                raise APIError("response_format cannot be combined with tools unless "
                               "tool_choice is 'none'", param="response_format")

    @property
    def tool_mode(self) -> str:
        """'none', 'auto', 'required' or 'named' (OpenAI's default: auto when tools are sent)."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _join_text(content: str | list[TextPart]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)
