"""streaming-asr workload: one request per audio stream. The audio is synthetic and
deterministic (voiced "syllables": a pitch with harmonics under formant-like envelopes, plus
noise and pauses), generated from the request's seed by `audio_for`, so requests stay small."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

SAMPLE_RATE = 16000


def make_requests(seed: int, n: int, audio_seconds: float = 2.0, chunk_seconds: float = 0.16,
                  max_tokens: int = 12, **_: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"model": "asr", "audio": {"seed": rng.randrange(2**31), "seconds": audio_seconds,
                                       "sample_rate": SAMPLE_RATE},
             "chunk_seconds": chunk_seconds, "max_tokens": max_tokens, "temperature": 0.0}
            for _ in range(n)]


def audio_for(request: dict[str, Any]) -> np.ndarray:
    """The request's waveform: float32 [n] in [-1, 1] at 16 kHz."""
    spec = request["audio"]
    rng = np.random.default_rng(spec["seed"])
    n = int(spec["seconds"] * spec["sample_rate"])
    t = np.arange(n) / spec["sample_rate"]
    x = np.zeros(n)
    pos = 0.0
    while pos < spec["seconds"]:
        dur = rng.uniform(0.08, 0.25)
        f0 = rng.uniform(90, 220)
        mask = (t >= pos) & (t < pos + dur)
        env = np.sin(math.pi * (t[mask] - pos) / dur) ** 2
        for h in range(1, 6):
            x[mask] += env * rng.uniform(0.05, 0.3) / h * np.sin(2 * math.pi * f0 * h * t[mask])
        pos += dur + rng.uniform(0.0, 0.08)
    x += 0.01 * rng.standard_normal(n)
    return np.clip(x, -1, 1).astype(np.float32)
