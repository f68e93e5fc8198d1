"""digits-flow: a unified text + image flow model trained here on scikit-learn's handwritten
digits (8x8, upscaled to 16x16), prompted with text such as "a handwritten 7".

Trained by `scripts/train_digits_flow.py` (seeded, CPU, one thread); the weights ship in this
folder. scikit-learn is needed only for the data and the classifier helpers, not to load.

    model = vibekit.zoo.load("digits-flow")                 # UnifiedFlowModel (torch)
    mlx_model = vibekit.zoo.load("digits-flow", backend="mlx")
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

HERE = Path(__file__).parent
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The prompt vocabulary: filler words, the digits as numerals and as words.
WORDS = ("a", "an", "the", "of", "handwritten", "digit", "number", "picture", "image", "drawing",
         *(str(d) for d in range(10)), *DIGIT_NAMES)
# Training prompt templates; {d} is the numeral, {w} the word.
TEMPLATES = (
    "a handwritten {d}", "a handwritten {w}", "the digit {d}", "the digit {w}", "a {d}", "{w}",
    "handwritten digit {d}", "a picture of the number {w}", "an image of a handwritten {d}",
    "a drawing of the digit {w}",
)


def digit_prompt(digit: int, template: int = 0) -> str:
    """The prompt for `digit` in template `template` ("a handwritten 7" by default)."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    return TEMPLATES[template % len(TEMPLATES)].format(d=digit, w=DIGIT_NAMES[digit])


def random_prompt(digit: int, rng: random.Random) -> str:
    return digit_prompt(digit, rng.randrange(len(TEMPLATES)))


def load_digit_images(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits, bilinearly upscaled from 8x8.

    Returns (images [1797, 1, S, S] float32 in [0, 1], labels [1797] int64).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits data needs scikit-learn: pip install scikit-learn") from e
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8]
    if image_size != 8:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size),
                                                 mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0), torch.tensor(data.target, dtype=torch.int64)


def digit_classifier(image_size: int = 16, seed: int = 0):
    """A scikit-learn logistic regression on the same (upscaled) digits, the judge of whether a
    generated image shows the requested digit. Returns (classifier, held-out accuracy); call
    `classifier.predict(images.reshape(n, -1).numpy())`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    images, labels = load_digit_images(image_size)
    x = images.reshape(len(images), -1).numpy()
    y = labels.numpy()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed,
                                              stratify=y)
    # NOTE: one BLAS thread: on a busy 2-core machine more threads make the fit 100x slower.
    with threadpool_limits(1):
        held_out = LogisticRegression(max_iter=2000).fit(x_tr, y_tr).score(x_te, y_te)
        return LogisticRegression(max_iter=2000).fit(x, y), float(held_out)


def load(backend: str = "torch", device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, path: str | Path | None = None):
    """The trained model: a torch `UnifiedFlowModel` (eval, no grad), or with backend="mlx" an
    `MLXUnifiedFlowModel`. `path` overrides the folder holding config.json + model.safetensors."""
    from safetensors.torch import load_file

    from vibekit.models.unified import UnifiedConfig, UnifiedFlowModel

    folder = Path(path) if path is not None else HERE
    config = UnifiedConfig.from_dict(json.loads((folder / "config.json").read_text()))
    weights = load_file(folder / "model.safetensors")
    if backend == "mlx":
        try:
            from vibekit.models.unified.mlx import MLXUnifiedFlowModel
        except ImportError as e:
            raise ImportError('backend="mlx" needs mlx: pip install "mlx[cpu]" on Linux, '
                              "pip install mlx on macOS") from e

        return MLXUnifiedFlowModel(config, weights)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r} for digits-flow; allowed: torch, mlx")
    model = UnifiedFlowModel(config)
    model.load_state_dict(weights)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
