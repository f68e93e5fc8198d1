"""UnifiedConfig: the shape of the unified text + image flow model, and its prompt vocabulary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Special prompt tokens: every prompt starts with BOS; PAD fills a prompt up to max_prompt_len.
BOS_TOKEN, PAD_TOKEN = "<bos>", "<pad>"
SPECIAL_TOKENS = (BOS_TOKEN, PAD_TOKEN)


@dataclass(frozen=True)
class UnifiedConfig:
    """A small unified transformer: a causal text prompt and a grid of image-latent tokens.

    The image (num_channels x image_size x image_size) is cut into `patch_size` squares; each
    square is one latent token of `patch_dim` values, so the grid has `num_patches` tokens. The
    prompt is `words` (the vocabulary after the special tokens), at most `max_prompt_len` tokens
    including BOS.
    """

    words: tuple[str, ...]
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    image_size: int = 16
    patch_size: int = 4
    num_channels: int = 1
    max_prompt_len: int = 8
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", tuple(self.words))
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "image_size", "patch_size", "num_channels", "max_prompt_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of "
                             f"num_heads ({self.num_heads})")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of "
                             f"patch_size ({self.patch_size})")
        if len(set(self.words)) != len(self.words) or set(self.words) & set(SPECIAL_TOKENS):
            raise ValueError("words must be distinct and must not include the special tokens "
                             f"{SPECIAL_TOKENS}")

    @property
    def vocab(self) -> tuple[str, ...]:
        """All prompt tokens: the specials, then `words`."""
        return SPECIAL_TOKENS + self.words

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.words)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def patch_dim(self) -> int:
        return self.num_channels * self.patch_size**2

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["words"] = list(self.words)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnifiedConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UnifiedConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)
