"""Drafts from a predicted output: walk the prediction with a pointer, re-anchor after edits."""

from __future__ import annotations

from collections.abc import Sequence


class PredictionDrafter:
    """Proposes the next tokens of a user-supplied prediction (OpenAI "predicted outputs").

    A pointer `pos` marks where the prediction is expected to continue. While the model's output
    agrees with the prediction, each step proposes `prediction[pos:pos + k]`. After a divergence
    (the model inserted, deleted or changed something), the drafter re-anchors: it looks for the
    most recent output tokens (an n-gram of `min_match..max_match` tokens) in the prediction,
    preferring the first occurrence at or after the old pointer, and resumes right after it, so an
    edit in the middle of a file does not lose everything after it.

    k is fixed (`adaptive=False`) or adapts: doubled after a fully accepted draft (up to
    `max_draft_tokens`), cut to just past the accepted length after a rejection.
    """

    def __init__(self, prediction: Sequence[int], num_draft_tokens: int = 16,
                 adaptive: bool = True, max_draft_tokens: int = 64, min_match: int = 3,
                 max_match: int = 8) -> None:
        if num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
        if not 1 <= min_match <= max_match:
            raise ValueError(f"need 1 <= min_match <= max_match, got {min_match}, {max_match}")
        self.prediction = list(prediction)
        self.k = num_draft_tokens
        self.min_k = min(4, num_draft_tokens)
        self.max_k = max(max_draft_tokens, num_draft_tokens) if adaptive else num_draft_tokens
        self.adaptive = adaptive
        self.min_match = min_match
        self.max_match = max_match
        self.pos = 0
        self.aligned = True
        self._index: dict[tuple[int, ...], list[int]] | None = None

    def propose(self, output_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Up to min(k, max_tokens) draft tokens to follow `output_ids` (the output so far)."""
        if max_tokens <= 0:
            return []
        if not self.aligned:
            self._reanchor(output_ids)
            if not self.aligned:
                return []
        return self.prediction[self.pos:self.pos + min(self.k, max_tokens)]

    def update(self, draft: Sequence[int], num_accepted: int, emitted: Sequence[int]) -> None:
        """Record a verify step: `num_accepted` draft tokens were accepted and `emitted` (the
        accepted tokens plus the model's own next token) appended to the output."""
        if not self.aligned:
            return
        self.pos += num_accepted
        if len(emitted) > num_accepted:
            bonus = emitted[num_accepted]
            if self.pos < len(self.prediction) and self.prediction[self.pos] == bonus:
                self.pos += 1
            else:
                self.aligned = False
        if self.adaptive and draft:
            if num_accepted == len(draft):
                self.k = min(self.k * 2, self.max_k)
            else:
                self.k = max(self.min_k, num_accepted + 1)

    def _reanchor(self, output_ids: Sequence[int]) -> None:
        m0 = self.min_match
        if len(output_ids) < m0:
            return
        if self._index is None:
            index: dict[tuple[int, ...], list[int]] = {}
            pred = self.prediction
            for j in range(len(pred) - m0 + 1):
                index.setdefault(tuple(pred[j:j + m0]), []).append(j)
            self._index = index
        starts = self._index.get(tuple(output_ids[-m0:]))
        if not starts:
            return
        # Among occurrences of the last min_match tokens, take the longest agreement with the
        # output's tail (up to max_match); ties go to the first at/after the old pointer.
        best, best_len, best_key = -1, 0, None
        pred, n_out = self.prediction, len(output_ids)
        for j in starts:
            length = m0
            while (length < self.max_match and length < n_out and j + m0 - 1 - length >= 0
                   and pred[j + m0 - 1 - length] == output_ids[n_out - 1 - length]):
                length += 1
            key = (length, j + m0 >= self.pos, -abs(j + m0 - self.pos))
            if best_key is None or key > best_key:
                best, best_len, best_key = j, length, key
        del best_len
        self.pos = best + m0
        self.aligned = True
