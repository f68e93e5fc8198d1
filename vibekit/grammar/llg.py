"""The llguidance backend: one tokenizer's llguidance view, and a request's matcher over it.

llguidance (guidance-ai) compiles a JSON schema lazily into a lexer + Earley parser and refuses
keywords it cannot enforce (oneOf, not, if/then/else, dependencies, uniqueItems, unknown formats,
...), which is what "auto" relies on (select.py). Its masks are computed per step from a token
trie, so compiling is cheap and the mask costs tens of microseconds even at a 128k vocabulary.

Importing this module does not import llguidance (from the checkout: pip install -e ".[grammar]").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch

from vibekit.errors import InvalidRequestError
from vibekit.grammar.compiler import CompiledGrammar
from vibekit.grammar.response_format import GrammarSpec
from vibekit.grammar.schema import UnsupportedSchemaError, prepare_for_llguidance


def import_llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf  # noqa: F401
    except ImportError:
        raise InvalidRequestError(
            "grammar_backend 'llguidance' needs llguidance, which is not installed: "
            "from the checkout: pip install -e '.[grammar]'"
        ) from None
    return llguidance


class LLGuidanceTokenizer:
    """One HF fast tokenizer as llguidance sees it, for a model with `vocab_size` logits.

    `stop_token_ids` are the only tokens that end the grammar (llguidance's EOS set); special
    tokens never stand for text. `fingerprint` identifies it for the compiled-grammar cache.
    """

    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        llg = import_llguidance()
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = tuple(sorted(stop_token_ids))
        if not self.stop_token_ids:
            raise InvalidRequestError("structured output needs a stop token, and this model's "
                                      "config and tokenizer name none (eos_token_id)")
        try:
            self.info = llg.hf.from_tokenizer(tokenizer, n_vocab=vocab_size,
                                              eos_token=list(self.stop_token_ids))
        except ValueError as e:  # a slow (Python) tokenizer
            raise InvalidRequestError(f"grammar_backend 'llguidance' needs a fast tokenizer: "
                                      f"{e}") from None
        digest = hashlib.sha256(json.dumps([vocab_size, self.stop_token_ids]).encode())
        digest.update(tokenizer.backend_tokenizer.to_str().encode())
        self.fingerprint = "llg:" + digest.hexdigest()[:16]

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """Compile `spec` (uncached) into a matcher in its start state, which requests copy.
        Raises UnsupportedSchemaError for a keyword llguidance cannot enforce (unless the spec
        is lenient) and InvalidRequestError for anything else it cannot compile."""
        llg = import_llguidance()
        where = {"json_schema": "response_format.json_schema.schema",
                 "json_object": "response_format", "regex": "response_format.regex",
                 "grammar": "response_format.grammar"}[spec.kind]
        if spec.kind == "grammar":
            raise UnsupportedSchemaError(
                "grammar_backend 'llguidance' does not take xgrammar EBNF "
                "(response_format.type 'grammar'); use grammar_backend 'xgrammar' or 'auto'")
        if spec.kind == "regex":
            grammar = llg.LLMatcher.grammar_from_regex(spec.source)
        else:
            schema = ({"type": "object"} if spec.kind == "json_object"
                      else prepare_for_llguidance(json.loads(spec.source)))
            options: dict[str, Any] = {"lenient": not spec.strict, "coerce_one_of": not spec.strict}
            if spec.whitespace == "compact":
                options.update(whitespace_flexible=False, item_separator=",", key_separator=":")
            else:
                options.update(whitespace_flexible=True)
            try:
                grammar = llg.LLMatcher.grammar_from_json_schema(schema, overrides=options)
            except ValueError as e:
                raise InvalidRequestError(f"{where} cannot be compiled: {e}") from None
        matcher = llg.LLMatcher(self.info, grammar, log_level=0)
        if matcher.is_error():
            message = matcher.get_error().strip().splitlines()[0]
            message = message.split("  while processing")[0]
            if _is_unsupported(message):
                raise UnsupportedSchemaError(f"{where} uses what llguidance cannot enforce: "
                                             f"{message}")
            raise InvalidRequestError(f"{where} cannot be compiled: {message}")
        probe = matcher.deep_copy()  # forced text without end: no finite instance from the start
        forced = probe.compute_ff_tokens()
        if probe.is_error() or len(forced) >= _ENDLESS_FF_TOKENS:
            raise InvalidRequestError(f"{where} has no finite instance for llguidance to "
                                      "complete (it forces endless text, e.g. an object that "
                                      "requires itself)")
        return CompiledGrammar(matcher, always_finishes=True)


_ENDLESS_FF_TOKENS = 4096
_UNSUPPORTED = ("Unimplemented keys", "Unknown format", "not supported", "only supported",
                "unsupported", "Unsupported")


def _is_unsupported(message: str) -> bool:
    return any(s in message for s in _UNSUPPORTED)


class LLGuidanceGrammar:
    """An llguidance matcher that has accepted the request's output so far: the RequestGrammar
    protocol of matcher.py (propose / fill_bitmask / advance / terminated), over llguidance.

    Jump-forward drafts are llguidance's forced tokens (`compute_ff_tokens`): the text every
    continuation starts with, tokenized by llguidance; like all drafts they are verified under
    the masks, so they never change the output. It turns itself off for a request whose forced
    text has no end.
    """

    __slots__ = ("matcher", "stop_token_ids", "jump_forward", "terminated")

    def __init__(self, compiled: CompiledGrammar, tokenizer: LLGuidanceTokenizer,
                 jump_forward: bool = True) -> None:
        self.matcher = compiled.grammar.deep_copy()
        self.stop_token_ids = frozenset(tokenizer.stop_token_ids)
        self.jump_forward = jump_forward
        self.terminated = False  # accepted a stop token, or rejected an emitted token

    def propose(self, prediction: Sequence[int] | None, output_ids: Sequence[int],
                max_tokens: int) -> list[int]:
        """Draft tokens (at most `max_tokens`, never a stop token) to verify after the output."""
        m = self.matcher
        if max_tokens <= 0 or self.terminated or m.is_stopped():
            return []
        if prediction is not None:
            draft = list(prediction[:max_tokens])
        elif self.jump_forward:
            # NOTE: on a copy: where the forced text never ends (a schema that requires itself)
            # llguidance runs out of parser items and leaves the matcher in its error state.
            # Forced text that long means it has no end (it costs ~0.1 s to compute): stop asking.
            probe = m.deep_copy()
            draft = probe.compute_ff_tokens()
            if probe.is_error() or len(draft) >= _ENDLESS_FF_TOKENS:
                self.jump_forward = False
                return []
            draft = draft[:max_tokens]
        else:
            return []
        for i, token in enumerate(draft):
            if token in self.stop_token_ids:
                draft = draft[:i]
                break
        # NOTE: try_consume_tokens, not validate_tokens: the latter may pass a token that
        # consume_token then rejects (seen on recursive schemas).
        n = m.try_consume_tokens(draft) if draft else 0
        if n:
            m.rollback(n)
        return draft[:n]

    def fill_bitmask(self, bitmask: torch.Tensor, row: int, draft: Sequence[int]) -> None:
        """Write the allowed tokens of rows row .. row + len(draft) of `bitmask` [R, ceil(V/32)]
        int32 (CPU): after the output so far, then after each prefix of `draft`."""
        m = self.matcher
        nbytes = bitmask.shape[1] * 4
        m.unsafe_compute_mask_ptr(bitmask[row].data_ptr(), nbytes)
        for i, token in enumerate(draft):
            accepted = m.consume_token(token)
            assert accepted, f"draft token {token} is not allowed; drafts come from propose()"
            m.unsafe_compute_mask_ptr(bitmask[row + i + 1].data_ptr(), nbytes)
        if draft:
            m.rollback(len(draft))

    def advance(self, token: int) -> bool:
        """Accept one emitted token; True when generation must end: the grammar accepted a stop
        token, or it rejects the token (masking only allows that when it has no continuation)."""
        if not self.terminated:
            self.terminated = (not self.matcher.consume_token(token)
                               or token in self.stop_token_ids)
        return self.terminated
