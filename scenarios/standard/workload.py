"""Standard workload: mixed chat requests - one shared system prompt, user turns of varied
length and topic built from a fixed word list, varied max_tokens, greedy decoding."""

from __future__ import annotations

import random
from typing import Any

SYSTEM = ("You are a concise assistant for a software team. Answer in plain sentences, cite the "
          "relevant file when you know it, and say so when you are unsure.")
TOPICS = ("the build", "a flaky test", "the release notes", "memory usage", "the cache",
          "a slow query", "the deploy script", "an API change", "the logging format",
          "a race condition", "the config loader", "the retry policy")
ASKS = ("Summarize what changed in {t}.", "Why might {t} break on Mondays?",
        "Write a short checklist for reviewing {t}.", "Explain {t} to a new teammate.",
        "List three risks of touching {t} this week.", "What should we measure about {t}?")
FILLER = ("we saw it twice yesterday", "the logs are noisy", "nobody owns it now",
          "it worked before the upgrade", "the numbers look odd", "users noticed it first")


def make_requests(seed: int, n: int, min_tokens: int = 16, max_tokens: int = 48,
                  **_: Any) -> list[dict[str, Any]]:
    """n chat requests in the OpenAI shape (messages, max_tokens, temperature 0)."""
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        ask = rng.choice(ASKS).format(t=rng.choice(TOPICS))
        context = "; ".join(rng.sample(FILLER, rng.randint(0, 4)))
        user = ask + (f" Context: {context}." if context else "")
        requests.append({
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            "max_tokens": rng.randint(min_tokens, max_tokens),
            "temperature": 0.0,
        })
    return requests
