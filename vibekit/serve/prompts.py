"""Turn OpenAI prompts and chat messages into token ids, and check them against the context.

Chat prompts come from the tokenizer's chat template
(`apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`). A tokenizer with
no template gets the plain fallback below, one header line per message and an open assistant
header at the end:

    <|system|>
    You are terse.
    <|user|>
    Hi
    <|assistant|>
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vibekit.serve.errors import APIError


def fallback_chat_template(messages: Sequence[dict[str, str]]) -> str:
    """The documented plain template for tokenizers without a chat_template."""
    body = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return body + "<|assistant|>\n"


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    if tokenizer is None:
        raise APIError("chat completions need a tokenizer; this model has none "
                       "(use /v1/completions with token ids)", param="messages")
    if not getattr(tokenizer, "chat_template", None):
        return fallback_chat_template(messages)
    try:
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                             tokenize=False)
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
        return list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    ids = list(prompt)
    if vocab_size is not None and any(not 0 <= t < vocab_size for t in ids):
        raise APIError(f"prompt token ids must be in [0, {vocab_size})", param="prompt")
    return ids


def resolve_max_tokens(num_prompt_tokens: int, max_tokens: int | None, max_model_len: int,
                       param: str) -> int:
    """max_tokens, or all the room left in the context when it is None; 400 if it cannot fit."""
    if num_prompt_tokens == 0:
        raise APIError("the prompt is empty; it must have at least one token", param="prompt")
    room = max_model_len - num_prompt_tokens
    if max_tokens is None:
        if room < 1:
            raise APIError(f"This model's maximum context length is {max_model_len} tokens. "
                           f"However, your prompt has {num_prompt_tokens} tokens, which leaves "
                           f"no room for a completion.", param="messages",
                           code="context_length_exceeded")
        return room
    if max_tokens > room:
        raise APIError(f"This model's maximum context length is {max_model_len} tokens. "
                       f"However, you requested {num_prompt_tokens + max_tokens} tokens "
                       f"({num_prompt_tokens} in the prompt, {max_tokens} in the completion). "
                       f"Please reduce the length of the prompt or the completion.",
                       param=param, code="context_length_exceeded")
    return max_tokens
