"""Structured output over xgrammar: JSON schema, JSON object, regex and EBNF grammars.

A request asks for it with `SamplingParams(response_format=...)`; the shapes are listed in
`parse_response_format` (OpenAI's json_schema / json_object, plus regex and grammar). The engine
compiles the grammar once per (grammar, tokenizer) in a GrammarCache, gives the request a
RequestGrammar (its matcher), and each step the GrammarMasker fills the batch's token bitmasks on a
worker thread while the forward runs. Jump-forward and predicted outputs become drafts checked
against the matcher and verified under the masks, so neither changes the output.

Importing this package does not import xgrammar (from the checkout: pip install -e ".[grammar]").
"""

from vibekit.grammar.backend import GrammarBackend
from vibekit.grammar.compiler import GrammarCache, GrammarTokenizer
from vibekit.grammar.masker import GrammarMasker, PendingMasks
from vibekit.grammar.matcher import RequestGrammar
from vibekit.grammar.response_format import GrammarSpec, parse_response_format
from vibekit.grammar.schema import prepare_json_schema

__all__ = [
    "GrammarBackend", "GrammarCache", "GrammarMasker", "GrammarSpec", "GrammarTokenizer",
    "PendingMasks", "RequestGrammar", "parse_response_format", "prepare_json_schema",
]
