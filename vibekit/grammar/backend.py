"""GrammarBackend: what the engine holds for structured output; the per-schema backend choice."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from vibekit.errors import InvalidRequestError
from vibekit.grammar.compiler import CompiledGrammar, GrammarCache, GrammarTokenizer
from vibekit.grammar.llg import LLGuidanceGrammar, LLGuidanceTokenizer
from vibekit.grammar.matcher import RequestGrammar
from vibekit.grammar.response_format import (
    GRAMMAR_BACKENDS,
    WHITESPACE,
    GrammarSpec,
    parse_response_format,
)
from vibekit.grammar.schema import InvalidSchemaError, UnsupportedSchemaError

_TOKENIZERS = {"xgrammar": GrammarTokenizer, "llguidance": LLGuidanceTokenizer}
_MATCHERS = {"xgrammar": RequestGrammar, "llguidance": LLGuidanceGrammar}
# "auto" tries these in order and takes the first that enforces every keyword (strict) or
# compiles at all (strict false). llguidance refuses what it cannot enforce and has no known
# defect that admits invalid JSON; xgrammar keeps regexes and EBNF in its own dialects.
_AUTO_ORDER = {"json_schema": ("llguidance", "xgrammar"), "json_object": ("llguidance", "xgrammar"),
               "regex": ("xgrammar", "llguidance"), "grammar": ("xgrammar",)}


class GrammarBackend:
    """Turns a request's `response_format` into its RequestGrammar: parse, pick the grammar
    backend, compile through the cache (keyed by grammar and tokenizer), make a matcher. Neither
    library is imported, nor the tokenizer's vocabulary read, before the first request with a
    response_format.

    backend: "auto" (default), "llguidance" or "xgrammar"; a request may override it with
    `response_format["grammar_backend"]`. "auto" takes, per schema, the first backend of
    llguidance, xgrammar (regex and EBNF: xgrammar first) that enforces every keyword the schema
    uses, and refuses the request with an InvalidRequestError naming the keywords when none
    does, unless the schema is marked `"strict": false` (then the first that compiles it).
    whitespace, jump_forward: defaults for formats that do not set them (see
    parse_response_format). cache: share one GrammarCache between engines, or leave None for a
    private one.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int],
                 cache: GrammarCache | None = None, backend: str = "auto",
                 whitespace: str = "compact", jump_forward: bool = True) -> None:
        if backend not in GRAMMAR_BACKENDS:
            raise ValueError(f"grammar_backend {backend!r} is not one of "
                             f"{', '.join(GRAMMAR_BACKENDS)}")
        if whitespace not in WHITESPACE:
            raise ValueError(f"grammar_whitespace {whitespace!r} is not one of "
                             f"{', '.join(WHITESPACE)}")
        self.whitespace = whitespace
        self.jump_forward = jump_forward
        self.hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = tuple(stop_token_ids)
        self.cache = cache if cache is not None else GrammarCache()
        self.backend = backend
        self._tokenizers: dict[str, Any] = {}
        self._choices: OrderedDict[GrammarSpec, str] = OrderedDict()  # auto's pick per spec

    @property
    def tokenizer(self) -> GrammarTokenizer:
        """The xgrammar view of the tokenizer."""
        return self.tokenizer_for("xgrammar")

    def tokenizer_for(self, backend: str) -> Any:
        """The tokenizer view of `backend` ("xgrammar" or "llguidance"), built once."""
        if backend not in self._tokenizers:
            if self.hf_tokenizer is None:
                raise InvalidRequestError(
                    "response_format needs the model's tokenizer, and this model has none"
                )
            self._tokenizers[backend] = _TOKENIZERS[backend](self.hf_tokenizer, self.vocab_size,
                                                             self.stop_token_ids)
        return self._tokenizers[backend]

    def request_grammar(self, response_format: dict[str, Any] | None) -> Any:
        """The grammar state (a RequestGrammar) for a new request, None for plain text; raises
        InvalidRequestError for a malformed format, a schema / regex / grammar that does not
        compile, or a keyword no backend enforces, before any model compute."""
        spec = parse_response_format(response_format, self.whitespace, self.jump_forward)
        if spec is None:
            return None
        name, compiled = self.compile(spec)
        return _MATCHERS[name](compiled, self.tokenizer_for(name), spec.jump_forward)

    def compile(self, spec: GrammarSpec) -> tuple[str, CompiledGrammar]:
        """(backend name, compiled grammar) for `spec`, through the cache."""
        backend = spec.backend or self.backend
        if backend != "auto":
            return backend, self.cache.get(spec, self.tokenizer_for(backend))
        chosen = self._choices.get(spec)
        if chosen is not None:
            self._choices.move_to_end(spec)
            return chosen, self.cache.get(spec, self.tokenizer_for(chosen))
        errors: list[tuple[str, InvalidRequestError]] = []
        for name in _AUTO_ORDER[spec.kind]:
            try:
                compiled = self.cache.get(spec, self.tokenizer_for(name))
            except InvalidSchemaError:  # a bad schema is no backend's fault
                raise
            except InvalidRequestError as e:
                errors.append((name, e))
                continue
            self._choices[spec] = name
            while len(self._choices) > 4 * self.cache.max_entries:
                self._choices.popitem(last=False)
            return name, compiled
        reasons = "; ".join(f"{name}: {e}" for name, e in errors)
        if all(isinstance(e, UnsupportedSchemaError) for _, e in errors):
            raise UnsupportedSchemaError(
                f"no grammar backend can enforce this response_format ({reasons}); remove those "
                'keywords, or set "strict": false in response_format.json_schema to accept a '
                "looser grammar that ignores or approximates them"
            )
        raise InvalidRequestError(f"no grammar backend can compile this response_format "
                                  f"({reasons})")
