"""From a request body (bytes) to a serving.Job: parse, validate, render, tokenize.

All of it is CPU work that grows with the body, so the app runs it in a worker thread, never on
the event loop: a 5 MB prompt costs its own request time, not everyone's. The cheap checks run
before the expensive ones (the prompt's length in characters before it is tokenized).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vibekit import AsyncEngine
from vibekit.serve import prompts, serving, tools
from vibekit.serve.errors import APIError
from vibekit.serve.limits import Limits
from vibekit.serve.protocol import ChatCompletionRequest, CompletionRequest, SamplingRequest

MAX_CHOICES = 1024  # prompts * n per HTTP request


class Preparer:
    """Turns bodies into Jobs for one engine. Thread-safe: it only reads shared state (the
    tokenizer is safe to call from several threads)."""

    def __init__(self, engine: AsyncEngine, served_model_names: Sequence[str], limits: Limits,
                 request_timeout: float | None = None) -> None:
        self.engine = engine
        self.names = list(served_model_names)
        self.limits = limits
        self.request_timeout = request_timeout
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.config.max_model_len
        self.vocab_size = engine.model_config.vocab_size

    def completion(self, body: bytes) -> serving.Job:
        req = CompletionRequest.model_validate_json(body)
        self._check_model(req)
        texts = [p for p in req.prompts if isinstance(p, str)]
        self.limits.check_prompt_chars(texts, "prompt", self.max_model_len)
        ids = [prompts.encode(self.tokenizer, p, vocab_size=self.vocab_size)
               for p in req.prompts]
        sent = "max_tokens" in req.model_fields_set
        return self._job("completion", req, ids, "max_tokens", req.max_tokens, sent, "prompt")

    def chat(self, body: bytes) -> serving.Job:
        req = ChatCompletionRequest.model_validate_json(body)
        self._check_model(req)
        texts = [m.text for m in req.messages]
        texts += [t.function.model_dump_json() for t in req.tools or ()]
        self.limits.check_prompt_chars(texts, "messages", self.max_model_len)
        text = self._render(req)
        ids = prompts.encode(self.tokenizer, text, add_special_tokens=False)
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        sent = bool({"max_tokens", "max_completion_tokens"} & req.model_fields_set)
        return self._job("chat", req, [ids], param, req.requested_max_tokens, sent, "messages")

    # -- pieces ---------------------------------------------------------------------------------

    def _check_model(self, req: SamplingRequest) -> None:
        if req.model not in self.names:
            raise APIError(f"The model `{req.model}` does not exist. This server serves "
                           f"{', '.join(repr(n) for n in self.names)}.", status_code=404,
                           param="model", code="model_not_found")
        req.check_supported()

    def _render(self, req: ChatCompletionRequest) -> str:
        return render_request(self.tokenizer, req)

    def _prediction(self, req: SamplingRequest) -> list[int] | None:
        """The predicted output as token ids, tokenized here rather than on the engine thread
        (a prediction is often a whole file)."""
        if req.prediction is None:
            return None
        text = req.prediction.text
        self.limits.check_prompt_chars([text], "prediction", self.max_model_len)
        if self.tokenizer is None:
            raise APIError("prediction is text but this model has no tokenizer",
                           param="prediction")
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _job(self, kind: str, req: SamplingRequest, prompt_ids: list[list[int]], param: str,
             max_tokens: int | None, sent: bool, prompt_param: str) -> serving.Job:
        if len(prompt_ids) * req.n > MAX_CHOICES:
            raise APIError(f"at most {MAX_CHOICES} choices (prompts x n) per request",
                           param="n")
        tool_request = req if isinstance(req, ChatCompletionRequest) and req.tools else None
        response_format: dict[str, Any] | None = req.structured_format
        if tool_request is not None and tool_request.tool_mode in ("named", "required"):
            response_format = tools.response_format(tool_request)
        # The grammar is compiled after this, by the app, awaited without holding this thread
        # (compile_grammar_async): a slow schema must not take a worker from other requests.
        timeout = req.timeout if req.timeout is not None else self.request_timeout
        params = []
        for ids in prompt_ids:
            budget = prompts.resolve_max_tokens(len(ids), max_tokens, self.max_model_len, param,
                                                sent, prompt_param)
            params += [serving.sampling_params(req, budget, i, response_format)
                       for i in range(req.n)]
        return serving.Job(kind=kind, model=req.model, prompts=prompt_ids, params=params,
                           n=req.n, stream=req.stream, prediction=self._prediction(req),
                           include_usage=req.include_usage,
                           return_token_ids=req.return_token_ids, timeout=timeout,
                           tool_request=tool_request)


def render_request(tokenizer: Any, req: ChatCompletionRequest) -> str:
    """The prompt text of a chat request: messages (and tools) through the chat template; a
    template that does not know tools gets them as a system message. vibekit_agents renders
    workload requests with this too, so tuning measures what the server serves."""
    native = prompts.template_knows_tools(tokenizer)
    messages = tools.template_messages(req.messages, native)
    listed = tools.template_tools(req)
    if listed and not native:
        messages = [tools.tools_system_message(listed), *messages]
        listed = None
    return prompts.render_chat(tokenizer, messages, listed)
