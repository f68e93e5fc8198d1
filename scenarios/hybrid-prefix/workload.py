"""hybrid-prefix workload: n requests = one shared random prefix + a unique random tail each,
as token-id prompts (byte ids 0..255, so the byte-level tokenizer can show them), greedy."""

from __future__ import annotations

import random
from typing import Any


def make_requests(seed: int, n: int, prefix_len: int = 2048, tail_len: int = 64,
                  max_tokens: int = 32, **_: Any) -> list[dict[str, Any]]:
    """OpenAI-shaped completion requests: {"prompt": [ids], "max_tokens", "temperature": 0,
    "ignore_eos": True}; every prompt starts with the same `prefix_len` tokens."""
    rng = random.Random(seed)
    prefix = [rng.randrange(256) for _ in range(prefix_len)]
    return [
        {"prompt": prefix + [rng.randrange(256) for _ in range(tail_len)],
         "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
        for _ in range(n)
    ]
