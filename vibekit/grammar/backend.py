"""GrammarBackend: what the engine holds for structured output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vibekit.errors import InvalidRequestError
from vibekit.grammar.compiler import GrammarCache, GrammarTokenizer
from vibekit.grammar.matcher import RequestGrammar
from vibekit.grammar.response_format import parse_response_format


class GrammarBackend:
    """Turns a request's `response_format` into its RequestGrammar: parse, compile through the
    cache (keyed by grammar and tokenizer), make a matcher. xgrammar is imported, and the
    tokenizer's vocabulary read, only when the first request with a response_format arrives.

    cache: share one GrammarCache between engines, or leave None for a private one.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int],
                 cache: GrammarCache | None = None) -> None:
        self.hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = tuple(stop_token_ids)
        self.cache = cache if cache is not None else GrammarCache()
        self._tokenizer: GrammarTokenizer | None = None

    @property
    def tokenizer(self) -> GrammarTokenizer:
        if self._tokenizer is None:
            self._tokenizer = GrammarTokenizer(self.hf_tokenizer, self.vocab_size,
                                               self.stop_token_ids)
        return self._tokenizer

    def request_grammar(self, response_format: dict[str, Any] | None) -> RequestGrammar | None:
        """The grammar state for a new request (None for plain text); raises
        InvalidRequestError for a malformed format or a schema / regex / grammar that does not
        compile, before any model compute."""
        spec = parse_response_format(response_format)
        if spec is None:
            return None
        if self.hf_tokenizer is None:
            raise InvalidRequestError(
                "response_format needs the model's tokenizer, and this model has none"
            )
        compiled = self.cache.get(spec, self.tokenizer)
        return RequestGrammar(compiled, self.tokenizer, spec.jump_forward)
