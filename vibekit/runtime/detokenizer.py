"""Incremental detokenization and stop-string matching."""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text, decoding only a short window per step.

    Uses the prefix/read offset method: text is emitted once the newest tokens no longer decode
    to a partial UTF-8 character ("\\ufffd").
    """

    __slots__ = ("tokenizer", "prefix_offset", "read_offset", "text")

    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        # Start a few tokens back into the prompt so the first output token decodes with the
        # right leading space / merges.
        self.read_offset = len(prompt_ids)
        self.prefix_offset = max(len(prompt_ids) - 5, 0)
        self.text = ""

    def step(self, all_ids: list[int]) -> str:
        """Feed prompt + outputs so far; returns the newly decodable text."""
        decode = self.tokenizer.decode
        prefix = decode(all_ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        full = decode(all_ids[self.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(all_ids)
            self.text += new
            return new
        return ""


def find_stop(text: str, stop: tuple[str, ...], start: int) -> int:
    """Index in `text` of the earliest stop string that ends after `start`, or -1."""
    best = -1
    for s in stop:
        i = text.find(s, max(start - len(s) + 1, 0))
        if i != -1 and (best == -1 or i < best):
            best = i
    return best
