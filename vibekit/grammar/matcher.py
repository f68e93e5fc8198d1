"""RequestGrammar: one request's grammar state, and the hooks the runtime calls each step."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vibekit.grammar.compiler import CompiledGrammar, GrammarTokenizer, import_xgrammar

# Jump-forward text past this many characters per draft token is not tokenized (drafts are
# cut to the room left anyway).
_CHARS_PER_TOKEN = 8


class RequestGrammar:
    """An xgrammar matcher that has accepted the request's output so far.

    The runtime calls it at three points of a step:
      scheduler  `propose(prediction, output_ids, max_tokens)`: the draft of this step's verify
                 block: the prediction cut at its first token the grammar forbids, or, without
                 a prediction, jump-forward tokens (below)
      runner     `fill_bitmask(bitmask, row, draft)`: on the mask worker thread while the
                 forward runs, the allowed tokens of rows row .. row + len(draft) (after the
                 output, then after each draft prefix); the matcher is rolled back afterwards
      engine     `advance(token)` for every emitted token: True when the request must end (the
                 grammar accepted its stop token)

    Jump-forward: when the grammar admits a single continuation text (the keys and punctuation of
    a JSON object with fixed keys), its tokens (the boundary with the output re-tokenized) become
    the draft of the next verify block instead of being decoded one step each. Draft tokens
    are verified like predicted outputs, under the grammar's masks, so jump-forward never
    changes the output: greedy requests get exactly the tokens of plain constrained decoding
    (as exactly as predicted outputs do: a verify block computes the logits of its positions in
    one forward instead of one decode step each), sampled ones the same distribution (the
    random stream differs, as with predicted outputs). Turn it off with `"jump_forward": false`;
    it is off for grammars with states that have no finite completion (see analysis.py).
    """

    __slots__ = ("matcher", "tokenizer", "stop_token_ids", "jump_forward")

    def __init__(self, compiled: CompiledGrammar, tokenizer: GrammarTokenizer,
                 jump_forward: bool = True) -> None:
        xgr = import_xgrammar()
        # NOTE: the matcher keeps only emitted tokens: draft tokens are accepted while their
        # masks are filled and rolled back at once, so rollback never exceeds one draft. xgrammar
        # >= 0.2 keeps unlimited rollback history (max_rollback_tokens is deprecated there).
        self.matcher = xgr.GrammarMatcher(compiled.grammar)
        self.tokenizer = tokenizer
        self.stop_token_ids = frozenset(tokenizer.stop_token_ids)
        self.jump_forward = jump_forward and compiled.always_finishes

    @property
    def terminated(self) -> bool:
        return self.matcher.is_terminated()

    def propose(self, prediction: Sequence[int] | None, output_ids: Sequence[int],
                max_tokens: int) -> list[int]:
        """Draft tokens (at most `max_tokens`) to verify after `output_ids`.

        prediction: the predicted-output drafter's proposal, or None when the request has no
        prediction (then jump-forward proposes). Drafts never hold a stop token: the model's own
        token after the block decides whether to stop.
        """
        if max_tokens <= 0 or self.matcher.is_terminated():
            return []
        if prediction is not None:
            return self._allowed_prefix(prediction[:max_tokens])
        if not self.jump_forward:
            return []
        text = self.matcher.find_jump_forward_string()[:_CHARS_PER_TOKEN * max_tokens]
        if not text:
            return []
        return self._allowed_prefix(self.tokenizer.encode_after(output_ids[-1:], text)[:max_tokens])

    def _allowed_prefix(self, draft: Sequence[int]) -> list[int]:
        n = 0
        for token in draft:
            if token in self.stop_token_ids or not self.matcher.accept_token(token):
                break
            n += 1
        if n:
            self.matcher.rollback(n)
        return list(draft[:n])

    def fill_bitmask(self, bitmask: torch.Tensor, row: int, draft: Sequence[int]) -> None:
        """Write the allowed tokens of rows row .. row + len(draft) of `bitmask` [R, ceil(V/32)]
        int32 (CPU): after the output so far, then after each prefix of `draft` (a draft from
        `propose`, so every token is allowed)."""
        m = self.matcher
        m.fill_next_token_bitmask(bitmask, row)
        for i, token in enumerate(draft):
            accepted = m.accept_token(token)
            assert accepted, f"draft token {token} is not allowed; drafts come from propose()"
            m.fill_next_token_bitmask(bitmask, row + i + 1)
        if draft:
            m.rollback(len(draft))

    def advance(self, token: int) -> bool:
        """Accept one emitted token; True when generation must end: the grammar has terminated
        (it accepted a stop token), or it rejects the token, which masking only allows when the
        grammar has no continuation at all."""
        if self.matcher.is_terminated():
            return True
        return not self.matcher.accept_token(token) or self.matcher.is_terminated()
