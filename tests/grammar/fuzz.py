"""Random walks through a compiled grammar: outputs a grammar admits, without any model."""

from __future__ import annotations

import random

import torch
import xgrammar as xgr

_BITS = torch.arange(32, dtype=torch.int32)


def allowed_tokens(bitmask_row: torch.Tensor, vocab_size: int) -> list[int]:
    bits = ((bitmask_row.unsqueeze(-1) >> _BITS) & 1).flatten()[:vocab_size]
    return torch.nonzero(bits).flatten().tolist()


def random_walk(compiled, decoded_vocab: list[bytes], rng: random.Random, max_tokens: int = 200,
                closers: frozenset[int] = frozenset(), p_close: float = 0.3) -> bytes | None:
    """The bytes of one random string the grammar admits (stop token excluded), or None when the
    walk did not end within max_tokens. Tokens are drawn uniformly from the allowed set, or with
    probability p_close from the allowed `closers` (quotes, brackets, stop) so walks end."""
    vocab_size = compiled.tokenizer_info.vocab_size
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab_size)
    out: list[bytes] = []
    for _ in range(max_tokens):
        matcher.fill_next_token_bitmask(bitmask)
        allowed = allowed_tokens(bitmask[0], vocab_size)
        assert allowed, "the grammar has no continuation"
        preferred = [t for t in allowed if t in closers]
        pool = preferred if preferred and rng.random() < p_close else allowed
        token = rng.choice(pool)
        assert matcher.accept_token(token)
        if matcher.is_terminated():
            return b"".join(out)
        out.append(decoded_vocab[token])
    return None


def closer_ids(decoded_vocab: list[bytes], stop_token_ids) -> frozenset[int]:
    return frozenset({i for i, b in enumerate(decoded_vocab)
                      if b in (b'"', b"}", b"]", b",", b'"}', b'"]')} | set(stop_token_ids))
