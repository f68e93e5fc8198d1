"""PromptTokenizer: a closed word-level vocabulary; unknown words are an error, not <unk>."""

from __future__ import annotations

import re

import torch

from vibekit.models.unified.config import BOS_TOKEN, PAD_TOKEN, UnifiedConfig

_SPLIT = re.compile(r"[a-z0-9]+")


class PromptTokenizer:
    """Lower-cases a prompt, splits it into words (punctuation is dropped) and maps each word to
    its id; every prompt starts with BOS, so "" is the unconditional (empty) prompt.

    Example::

        tok = PromptTokenizer(config)
        ids, mask = tok.batch(["a handwritten 7", ""])   # [2, max_prompt_len] int64 / bool
    """

    def __init__(self, config: UnifiedConfig) -> None:
        self.vocab = config.vocab
        self.max_prompt_len = config.max_prompt_len
        self.word_to_id = {w: i for i, w in enumerate(self.vocab)}
        self.bos_id = self.word_to_id[BOS_TOKEN]
        self.pad_id = self.word_to_id[PAD_TOKEN]

    def encode(self, prompt: str) -> list[int]:
        """Token ids of `prompt` (BOS first). Raises ValueError naming unknown words or the
        length limit."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a str, got {type(prompt).__name__}")
        words = _SPLIT.findall(prompt.lower())
        unknown = [w for w in words if w not in self.word_to_id or w in (BOS_TOKEN, PAD_TOKEN)]
        if unknown:
            raise ValueError(
                f"prompt {prompt!r} has unknown word(s) {unknown}; the model knows only: "
                f"{' '.join(self.vocab[2:])}"
            )
        if len(words) + 1 > self.max_prompt_len:
            raise ValueError(f"prompt {prompt!r} has {len(words)} words; the limit is "
                             f"{self.max_prompt_len - 1} (max_prompt_len {self.max_prompt_len} "
                             f"includes BOS)")
        return [self.bos_id] + [self.word_to_id[w] for w in words]

    def batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, max_prompt_len] int64 padded with PAD, mask [B, max_prompt_len] bool)."""
        ids = torch.full((len(prompts), self.max_prompt_len), self.pad_id, dtype=torch.int64)
        mask = torch.zeros(len(prompts), self.max_prompt_len, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            tokens = self.encode(prompt)
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = True
        return ids, mask

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i not in (self.bos_id, self.pad_id))
