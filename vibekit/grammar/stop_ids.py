"""The one set of stop token ids that the engine stops on and every grammar ends with."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any


def resolve_stop_token_ids(tokenizer: Any, config_ids: Iterable[int]) -> tuple[int, ...]:
    """The stop ids of a model: its config's (config.json / generation_config.json
    `eos_token_id`) and its tokenizer's EOS, less config ids that are ordinary vocabulary tokens.

    An ordinary token (one the tokenizer decodes as text, not a special token) as EOS is a
    misconfiguration: the engine would end every output at that text, and a grammar, which
    treats it as content, would see structured output cut short and invalid. Such ids are
    dropped with a warning (kept, with a warning, when nothing else could end generation; a
    grammar then treats them as stop tokens only). The engine and its grammars use the result.
    """
    ids = {int(i) for i in config_ids}
    eos = getattr(tokenizer, "eos_token_id", None)
    if tokenizer is None:
        return tuple(sorted(ids))
    ordinary = sorted(i for i in ids if is_ordinary_token(tokenizer, i))
    kept = (ids - set(ordinary)) | ({eos} if eos is not None else set())
    if ordinary:
        texts = ", ".join(f"{i} ({tokenizer.convert_ids_to_tokens(i)!r})" for i in ordinary)
        if kept:
            warnings.warn(
                f"the model config's eos_token_id lists ordinary vocabulary tokens: {texts}; they "
                f"are not used as stop tokens (they would end outputs at that text and cut "
                f"structured output short); generation stops on {sorted(kept)}. Pass "
                f"stop_token_ids per request to stop on them anyway.", stacklevel=3)
        else:
            kept = set(ordinary)
            warnings.warn(
                f"the model config's eos_token_id lists ordinary vocabulary tokens: {texts}, and "
                f"the tokenizer names no EOS token; they stay stop tokens, so outputs end at "
                f"that text and structured output never uses them as text.", stacklevel=3)
    return tuple(sorted(kept))


def is_ordinary_token(tokenizer: Any, token_id: int) -> bool:
    """True when `token_id` is a non-special token of the tokenizer's vocabulary (ids past the
    vocabulary, as in padded embeddings, are not)."""
    try:
        size = len(tokenizer)
    except TypeError:
        return False
    if not 0 <= token_id < size:
        return False
    special = set(getattr(tokenizer, "all_special_ids", ()))
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                if getattr(t, "special", False)}
    return token_id not in special and tokenizer.convert_ids_to_tokens(token_id) is not None
