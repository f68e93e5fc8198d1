"""unified-image workload: text-to-image requests for the digits-flow zoo model, in the shape of
an OpenAI images request plus the diffusion fields (seed, num_inference_steps, guidance_scale,
negative_prompt)."""

from __future__ import annotations

import random
from typing import Any

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten {d}", "the digit {w}", "a {d}", "a picture of the number {w}",
             "an image of a handwritten {d}", "handwritten digit {d}", "a drawing of the digit {w}")


def make_requests(seed: int, n: int, num_steps: int = 50, guidance_scale: float = 4.0,
                  negative_prompt: str = "", **_: Any) -> list[dict[str, Any]]:
    """n requests with prompts over all ten digits and varied wording; per-request seeds."""
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        digit = i % 10 if i < 10 else rng.randrange(10)
        template = rng.choice(TEMPLATES)
        requests.append({
            "model": "digits-flow",
            "prompt": template.format(d=digit, w=DIGIT_NAMES[digit]),
            "n": 1,
            "size": "16x16",
            "response_format": "array",
            "seed": rng.randrange(2**31),
            "num_inference_steps": num_steps,
            "guidance_scale": guidance_scale,
            "negative_prompt": negative_prompt,
            "digit": digit,  # what the image should show (for recognisability reports)
        })
    return requests
