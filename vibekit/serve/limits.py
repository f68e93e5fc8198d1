"""What one HTTP request may cost before any real work: body bytes and prompt characters.

Both are checked before the expensive steps they guard: the body size from Content-Length (and
while reading a chunked body) before parsing, the prompt length in characters before tokenizing.
A token decodes to at most `max_token_chars` characters (the longest entry of the vocabulary),
so a prompt longer than `max_model_len * max_token_chars` characters cannot fit the context
whatever the tokenizer makes of it (assuming its normalizer does not delete characters).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from vibekit.serve.errors import APIError

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """max_body_bytes: largest request body (413 beyond it). max_prompt_chars: most characters
    of prompt text (prompt strings, or message contents and tool schemas) per request."""

    max_body_bytes: int
    max_prompt_chars: int

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes={self.max_body_bytes} must be >= 1")
        if self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars={self.max_prompt_chars} must be >= 1")

    def check_prompt_chars(self, texts: Iterable[str], param: str, max_model_len: int) -> None:
        num_chars = sum(len(t) for t in texts)
        if num_chars > self.max_prompt_chars:
            raise APIError(
                f"The {param} has {num_chars} characters; at most {self.max_prompt_chars} can "
                f"fit this model's context of {max_model_len} tokens. Please shorten it.",
                param=param, code="context_length_exceeded")


def max_token_chars(tokenizer: Any) -> int:
    """Characters of the longest vocabulary entry (an upper bound on what one token decodes to:
    byte-level and SentencePiece entries spell each byte or character with one character)."""
    if tokenizer is None:
        return 1
    vocab = tokenizer.get_vocab()
    return max((len(token) for token in vocab), default=1)


def default_max_prompt_chars(tokenizer: Any, max_model_len: int) -> int:
    return max_model_len * max_token_chars(tokenizer)


async def read_json_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refused with 415 unless it is JSON and 413 once it exceeds the limit
    (from Content-Length before reading anything, else while reading)."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise APIError(f"Unsupported Content-Type {media!r}: send the body as JSON with "
                           "'Content-Type: application/json'.", status_code=415,
                           code="unsupported_media_type")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise APIError(f"Invalid Content-Length header {length!r}")
        if int(length) > max_body_bytes:
            raise _too_large(f"{int(length)} bytes", max_body_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise _too_large("more bytes than that", max_body_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> APIError:
    return APIError(f"This server accepts request bodies of at most {limit} bytes (vibekit "
                    f"serve --max-body-bytes); this one has {size}.", status_code=413,
                    code="request_too_large")
