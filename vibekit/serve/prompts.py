"""Turn OpenAI prompts and chat messages into token ids, and check them against the context.

Chat prompts come from the tokenizer's chat template
(`apply_chat_template(messages, tools=..., add_generation_prompt=True, tokenize=False)`). A
tokenizer without a template (zoo:code-edit-tiny, most base models) was never trained on chat,
so chat requests get a 400 saying so (serve it with `--chat-template FILE` to supply one, or use
/v1/completions) instead of a prompt the model has never seen and an empty answer.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from vibekit.core.tokenize import text_encoder
from vibekit.serve.errors import APIError

# tokenizer -> {add_special_tokens: its text_encoder}, for as long as the tokenizer lives
_ENCODERS: weakref.WeakKeyDictionary[Any, dict[bool, Any]] = weakref.WeakKeyDictionary()


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def template_knows_tools(tokenizer: Any) -> bool:
    """Whether the chat template reads `tools` / tool calls (else they are spelled out)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "tool" in template


def render_chat(tokenizer: Any, messages: Sequence[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None) -> str:
    if tokenizer is None:
        raise APIError("chat completions need a tokenizer; this model has none "
                       "(use /v1/completions with token ids)", param="messages")
    if not has_chat_template(tokenizer):
        raise APIError("This model's tokenizer has no chat template, so the model was not "
                       "trained on chat and would answer a chat request with nothing useful. "
                       "Use /v1/completions with a plain prompt, or start the server with "
                       "`--chat-template FILE` (a Jinja chat template).", param="messages",
                       code="no_chat_template")
    kwargs = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                             tokenize=False, **kwargs)
    except Exception as exc:  # jinja raises for e.g. roles that do not alternate
        raise APIError(f"the chat template rejected these messages: {exc}",
                       param="messages") from exc


def encode(tokenizer: Any, prompt: str | Sequence[int], add_special_tokens: bool = True,
           vocab_size: int | None = None) -> list[int]:
    """Token ids of a prompt. Strings are tokenized the way Engine.add_request does (with the
    tokenizer's special tokens); a rendered chat prompt passes add_special_tokens=False because
    the template already holds them."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise APIError("this model has no tokenizer; send the prompt as token ids",
                           param="prompt")
        try:
            encoders = _ENCODERS.setdefault(tokenizer, {})
        except TypeError:  # not weak-referenceable or not hashable: no cache
            return text_encoder(tokenizer, add_special_tokens)(prompt)
        encoder = encoders.get(add_special_tokens)
        if encoder is None:
            encoder = encoders[add_special_tokens] = text_encoder(tokenizer, add_special_tokens)
        return encoder(prompt)
    ids = list(prompt)
    if vocab_size is not None and any(not 0 <= t < vocab_size for t in ids):
        raise APIError(f"prompt token ids must be in [0, {vocab_size})", param="prompt")
    return ids


def resolve_max_tokens(num_prompt_tokens: int, max_tokens: int | None, max_model_len: int,
                       param: str, sent: bool = True, prompt_param: str = "prompt") -> int:
    """max_tokens, or all the room left in the context when it is None; 400 if it cannot fit.
    sent: whether the client sent `param` (else max_tokens is the endpoint's default)."""
    if num_prompt_tokens == 0:
        raise APIError("the prompt is empty; it must have at least one token", param=prompt_param)
    room = max_model_len - num_prompt_tokens
    if room < 1:
        raise APIError(f"This model's maximum context length is {max_model_len} tokens. "
                       f"However, your prompt has {num_prompt_tokens} tokens, which leaves "
                       f"no room for a completion. Please shorten the prompt.",
                       param=prompt_param, code="context_length_exceeded")
    if max_tokens is None:
        return room
    if max_tokens > room:
        if not sent:
            raise APIError(f"This model's maximum context length is {max_model_len} tokens. "
                           f"However, your prompt has {num_prompt_tokens} tokens and {param} "
                           f"(not sent) defaults to {max_tokens}, {num_prompt_tokens + max_tokens} "
                           f"in all. Please shorten the prompt or send a {param} of at most "
                           f"{room}.", param=prompt_param, code="context_length_exceeded")
        raise APIError(f"This model's maximum context length is {max_model_len} tokens. "
                       f"However, you requested {num_prompt_tokens + max_tokens} tokens "
                       f"({num_prompt_tokens} in the prompt, {max_tokens} in the completion). "
                       f"Please reduce the length of the prompt or the completion.",
                       param=param, code="context_length_exceeded")
    return max_tokens
