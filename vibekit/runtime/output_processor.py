"""OutputProcessor: what happens to each emitted token after the forward (stop conditions,
incremental detokenization, stop strings) and the RequestOutput a step returns (with stream
holdback)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from vibekit.core.outputs import RequestOutput
from vibekit.core.request import Request
from vibekit.core.tokenize import text_decoder


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text, decoding only a short window per step.

    Uses the prefix/read offset method: text is emitted once the newest tokens no longer decode
    to a partial UTF-8 character ("\\ufffd"). `decode`: the tokenizer's
    `ids -> text` (text_decoder(tokenizer) unless given).
    """

    __slots__ = ("decode", "prefix_offset", "read_offset", "text")

    def __init__(self, tokenizer: Any, prompt_ids: list[int],
                 decode: Callable[[list[int]], str] | None = None) -> None:
        self.decode = decode if decode is not None else text_decoder(tokenizer)
        # Start a few tokens back into the prompt so the first output token decodes with the
        # right leading space / merges.
        self.read_offset = len(prompt_ids)
        self.prefix_offset = max(len(prompt_ids) - 5, 0)
        self.text = ""

    def step(self, all_ids: list[int]) -> str:
        """Feed prompt + outputs so far; returns the newly decodable text."""
        decode = self.decode
        prefix = decode(all_ids[self.prefix_offset:self.read_offset])
        full = decode(all_ids[self.prefix_offset:])
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


class OutputProcessor:
    """Finish conditions and text of every request, in the order the engine checks them: the
    model's EOS ids (unless ignore_eos) and the request's stop_token_ids; the grammar's own
    stop token (ends even with ignore_eos); stop strings in the detokenized text (cut from it);
    max_tokens and the context length.

    Example::

        outputs = OutputProcessor(tokenizer, eos_token_ids={2})
        outputs.add(req)
        reason = outputs.append_token(req, token)   # "stop", "length" or None
        out = outputs.make_output(req, final=reason is not None)
    """

    def __init__(self, tokenizer: Any, eos_token_ids: Iterable[int]) -> None:
        self.tokenizer = tokenizer
        self._decode = None if tokenizer is None else text_decoder(tokenizer)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.num_generated_tokens = 0
        self._detokenizers: dict[str, IncrementalDetokenizer] = {}

    def add(self, req: Request) -> None:
        if self.tokenizer is not None:
            self._detokenizers[req.request_id] = IncrementalDetokenizer(
                self.tokenizer, req.prompt_token_ids, self._decode)

    def remove(self, req: Request) -> None:
        self._detokenizers.pop(req.request_id, None)

    def append_token(self, req: Request, token: int) -> str | None:
        """Append one emitted token; returns the finish reason it causes, if any."""
        req.token_ids.append(token)
        self.num_generated_tokens += 1
        params = req.params
        reason = None
        if (token in self.eos_token_ids and not params.ignore_eos) or token in req.stop_ids:
            reason = "stop"
        elif req.grammar is not None and req.grammar.advance(token):
            reason = "stop"  # the grammar accepted its stop token (ends even with ignore_eos)
        detok = self._detokenizers.get(req.request_id)
        if detok is not None:
            start = len(req.text)
            req.text += detok.step(req.token_ids)
            if params.stop_strings and reason is None:
                cut = find_stop(req.text, params.stop_strings, start)
                if cut != -1:
                    req.text = req.text[:cut]
                    reason = "stop"
        if reason is None and (req.num_output_tokens >= params.max_tokens
                               or len(req.token_ids) >= req.max_len):
            reason = "length"
        return reason

    def make_output(self, req: Request, final: bool) -> RequestOutput:
        """The cumulative output with this step's deltas. Until the request ends, text that may
        still become the start of a stop string is held back."""
        ids, start = req.token_ids, req.num_prompt_tokens
        delta_ids = ids[start + req.num_emitted_tokens:]
        req.num_emitted_tokens = len(ids) - start
        visible = len(req.text)
        if not final and req.params.stop_strings:
            visible -= max(len(s) for s in req.params.stop_strings) - 1
        visible = max(visible, req.num_emitted_chars)
        delta_text = req.text[req.num_emitted_chars:visible]
        req.num_emitted_chars = visible
        if final:
            self.remove(req)
        # token_ids is copied only if read (Request.token_ids is only ever appended to)
        return RequestOutput.snapshot(
            req.request_id, req.prompt_token_ids, ids, start, len(ids), req.text,
            req.finish_reason, req.usage(), delta_ids, delta_text)
