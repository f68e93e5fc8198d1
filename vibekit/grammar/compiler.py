"""Compiling grammars: one tokenizer's xgrammar view, and a cache keyed by grammar and tokenizer."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vibekit.errors import InvalidRequestError
from vibekit.grammar.analysis import always_finishes
from vibekit.grammar.response_format import GrammarSpec
from vibekit.grammar.schema import prepare_json_schema
from vibekit.grammar.workarounds import (
    exclude_surrogates,
    exclude_surrogates_ebnf,
    patch_json_ebnf,
)

# xgrammar errors start with "[hh:mm:ss] /path/file.cc:123: " and sometimes a failed check.
_LOG_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (Check failed: .*? is false: )?")


@dataclass(frozen=True)
class CompiledGrammar:
    """xgrammar's compiled grammar (`grammar`), and whether every state of it has a finite
    completion (analysis.py): jump-forward is only safe then."""

    grammar: Any
    always_finishes: bool


def import_xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError:
        raise InvalidRequestError(
            "response_format needs xgrammar, which is not installed; from the vibekit checkout: "
            'pip install -e ".[grammar]"'
        ) from None
    return xgrammar


class GrammarTokenizer:
    """One HF tokenizer as xgrammar sees it, for a model with `vocab_size` logits.

    Added special tokens (those `decode(..., skip_special_tokens=True)` drops) are blanked, so a
    grammar never lets them stand for their text (workarounds.py, defect 4); `stop_token_ids` end
    the grammar. `fingerprint` identifies the vocabulary for the compiled-grammar cache.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        xgr = import_xgrammar()
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        stop = sorted(stop_token_ids) or None
        detected = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                      stop_token_ids=stop)
        special = set(getattr(tokenizer, "all_special_ids", ()))
        special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                    if getattr(t, "special", False)}
        vocab = [""] * vocab_size
        for token, i in tokenizer.get_vocab().items():
            if i < vocab_size and i not in special:
                vocab[i] = token
        self.stop_token_ids = tuple(detected.stop_token_ids)
        self.info = xgr.TokenizerInfo(vocab, detected.vocab_type, vocab_size=vocab_size,
                                      stop_token_ids=list(self.stop_token_ids),
                                      add_prefix_space=detected.add_prefix_space)
        digest = hashlib.sha256()
        digest.update(json.dumps([detected.vocab_type.name, vocab_size, self.stop_token_ids,
                                  detected.add_prefix_space]).encode())
        for token in vocab:
            digest.update(token.encode() + b"\0")
        self.fingerprint = digest.hexdigest()[:16]
        # Compiled grammars are cached by GrammarCache, across tokenizers; xgrammar's own cache
        # would only duplicate them.
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """Compile `spec` for this tokenizer (uncached); raises InvalidRequestError."""
        xgr = import_xgrammar()
        where = {"json_schema": "response_format.json_schema.schema",
                 "json_object": "response_format", "regex": "response_format.regex",
                 "grammar": "response_format.grammar"}[spec.kind]
        try:
            if spec.kind in ("json_schema", "json_object"):
                if spec.kind == "json_object":
                    schema, strict_mode = {"type": "object"}, False
                else:
                    schema = prepare_json_schema(json.loads(spec.source), spec.strict)
                    strict_mode = True  # no properties beyond the schema's: a subset, still valid
                if spec.whitespace == "compact":
                    ws = dict(any_whitespace=False, separators=(",", ":"))
                else:
                    ws = dict(any_whitespace=True)
                grammar = xgr.Grammar.from_json_schema(json.dumps(schema), strict_mode=strict_mode,
                                                       **ws)
                grammar = xgr.Grammar.from_ebnf(patch_json_ebnf(str(grammar)))
            elif spec.kind == "regex":
                grammar = xgr.Grammar.from_regex(exclude_surrogates(spec.source))
            else:
                grammar = xgr.Grammar.from_ebnf(exclude_surrogates_ebnf(spec.source))
            return CompiledGrammar(self.compiler.compile_grammar(grammar),
                                   always_finishes(str(grammar)))
        except InvalidRequestError:
            raise
        except Exception as e:  # xgrammar raises RuntimeError / ValueError with a log prefix
            message = _LOG_PREFIX.sub("", str(e).strip().splitlines()[0] if str(e) else repr(e))
            raise InvalidRequestError(f"{where} cannot be compiled: {message}") from None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_after(self, tail_ids: Sequence[int], text: str) -> list[int]:
        """Tokens for `text` following `tail_ids`, re-tokenizing the boundary: when the tokenizer
        encodes decode(tail) + text as tail + X, X (what a tokenizer-trained model writes there);
        otherwise the tokens of `text` alone."""
        if tail_ids:
            tail_text = self.tokenizer.decode(list(tail_ids))
            if "\ufffd" not in tail_text:
                ids = self.encode(tail_text + text)
                if ids[:len(tail_ids)] == list(tail_ids) and len(ids) > len(tail_ids):
                    return ids[len(tail_ids):]
        return self.encode(text)


class GrammarCache:
    """Compiled grammars keyed by (tokenizer fingerprint, GrammarSpec); least recently used
    entries beyond `max_entries` are dropped. Thread-safe; one cache may serve several engines.

    Example:
        cache = GrammarCache()
        compiled = cache.get(GrammarSpec("regex", "[0-9]+"), grammar_tokenizer)
        compiled.grammar  # the xgrammar CompiledGrammar
        cache.hits, cache.misses
    """

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, GrammarSpec], CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, spec: GrammarSpec, tokenizer: GrammarTokenizer) -> CompiledGrammar:
        key = (tokenizer.fingerprint, spec)
        with self._lock:
            compiled = self._entries.get(key)
            if compiled is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return compiled
        compiled = tokenizer.compile(spec)  # outside the lock: compiling may take milliseconds
        with self._lock:
            self.misses += 1
            self._entries[key] = compiled
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._entries)
