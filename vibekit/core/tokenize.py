"""Text <-> token ids through a transformers tokenizer, without HF's per-call wrapper where
that gives exactly HF's result.

For a transformers fast tokenizer (TokenizersBackend), `tokenizer(text)` and
`tokenizer.decode(ids)` validate their arguments, reconfigure the backend (truncation, padding,
special-token splitting) and convert the result on every call, then call the Rust backend. On a
detokenizer's few-token window that wrapper costs several times the decode itself (4.0 vs 1.3 us
a token on the zoo tokenizer, two decodes a token), and on a short prompt HF's encode costs ~26
us against the backend's ~12; it also goes through `encode_batch`, which releases the GIL, so on
a busy server the call then waits to get it back (~170 us wall time measured under load). These
helpers return the backend's own call when its result is HF's: no subclass overrides the HF
methods, the backend has no truncation or padding of its own, special tokens split as HF would
split them, and (decode) no clean-up of tokenization spaces. Any other tokenizer goes through
its own methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def _backend(tokenizer: Any) -> Any | None:
    """The tokenizers.Tokenizer behind a plain TokenizersBackend, else None."""
    try:
        from tokenizers import Tokenizer
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    if not (isinstance(tokenizer, TokenizersBackend) and isinstance(backend, Tokenizer)):
        return None
    cls = type(tokenizer)
    if (cls.decode is not PreTrainedTokenizerBase.decode
            or cls.__call__ is not PreTrainedTokenizerBase.__call__
            or cls._decode is not TokenizersBackend._decode
            or cls._encode_plus is not TokenizersBackend._encode_plus):
        return None
    return backend


def text_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """`ids -> tokenizer.decode(ids, skip_special_tokens=True)`, the backend's where it is
    the same."""
    backend = _backend(tokenizer)
    if backend is not None and getattr(tokenizer, "clean_up_tokenization_spaces", True) is False:
        return functools.partial(backend.decode, skip_special_tokens=True)
    return functools.partial(tokenizer.decode, skip_special_tokens=True)


def text_encoder(tokenizer: Any, add_special_tokens: bool = True) -> Callable[[str], list[int]]:
    """`text -> tokenizer(text, add_special_tokens=...)["input_ids"]`, the backend's `encode`
    where it is the same (checked on every call: HF's own calls reconfigure the backend)."""

    def slow(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    backend = _backend(tokenizer)
    if backend is None:
        return slow
    encode = backend.encode

    def fast(text: str) -> list[int]:
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if (backend.truncation is not None or backend.padding is not None
                or backend.encode_special_tokens != split):
            return slow(text)  # HF turns these off (or sets them) for its call
        return encode(text, add_special_tokens=add_special_tokens).ids

    fast.backend = backend  # type: ignore[attr-defined]  # which path it took, for tests
    return fast
