"""Structured output over llguidance and xgrammar: JSON schema, JSON object, regex and EBNF.

A request asks for it with `SamplingParams(response_format=...)`; the shapes are listed in
`parse_response_format` (OpenAI's json_schema / json_object, plus regex and grammar). The
engine's GrammarBackend picks the grammar backend per schema ("auto": one that enforces every
keyword, else a 400 naming it; see backend.py), compiles the grammar once per (grammar,
tokenizer) in a GrammarCache, gives the request its matcher (RequestGrammar over xgrammar,
LLGuidanceGrammar over llguidance: one protocol), and each step the GrammarMasker fills the
batch's token bitmasks on a worker thread while the forward runs. Jump-forward and predicted
outputs become drafts checked against the matcher and verified under the masks, so neither
changes the output. The engine and its grammars share one stop set (stop_ids.py).

Importing this package imports neither library (from the checkout: pip install -e ".[grammar]").
"""

from vibekit.grammar.backend import GrammarBackend
from vibekit.grammar.compiler import GrammarCache, GrammarTokenizer
from vibekit.grammar.llg import LLGuidanceGrammar, LLGuidanceTokenizer
from vibekit.grammar.masker import GrammarMasker, PendingMasks
from vibekit.grammar.matcher import RequestGrammar
from vibekit.grammar.response_format import GrammarSpec, parse_response_format
from vibekit.grammar.schema import UnsupportedSchemaError, prepare_json_schema
from vibekit.grammar.stop_ids import resolve_stop_token_ids

__all__ = [
    "GrammarBackend", "GrammarCache", "GrammarMasker", "GrammarSpec", "GrammarTokenizer",
    "LLGuidanceGrammar", "LLGuidanceTokenizer", "PendingMasks", "RequestGrammar",
    "UnsupportedSchemaError", "parse_response_format", "prepare_json_schema",
    "resolve_stop_token_ids",
]
