"""Known xgrammar defects that let a grammar accept invalid output, and their fixes.

Found by the random-walk fuzzer in tests/grammar (xgrammar 0.2.8); each fix tightens the grammar,
so it never admits anything the unpatched grammar rejects:

1. Strings with minLength / maxLength (xgrammar issue #800) compile to a bounded repeat of
   `[^"\\\\\\r\\n]`: raw control characters U+0000-U+001F (tab, \\x01, ...) are accepted, which
   JSON forbids, and escapes are not. `patch_json_ebnf` rewrites that production to one JSON
   character: an unescaped code point outside U+0000-U+001F, or a two-character escape.
2. Negated character classes (`[^...]`) and `.` accept UTF-8 encoded surrogates (bytes ED A0-BF
   xx), which are not valid UTF-8: the text decodes to U+FFFD characters and breaks lengths and
   patterns. `patch_json_ebnf` excludes U+D800-U+DFFF from every negated class of the EBNF, and
   `exclude_surrogates` does the same for regexes (`pattern`, `{"type": "regex"}`).
3. Keywords the JSON-schema converter ignores or approximates (uniqueItems, multipleOf on
   numbers, not, oneOf, allOf with several branches, contains, if/then/else,
   dependentRequired, propertyNames with lengths, pattern together with min/maxLength): see
   vibekit.grammar.schema, which tightens what it can and rejects the rest under strict.
4. Added special tokens (e.g. <|im_start|>) count as ordinary text inside strings, but decoding
   skips them: vibekit.grammar.compiler blanks them in the vocabulary xgrammar sees.
"""

from __future__ import annotations

import re

_SURROGATES = r"\uD800-\uDFFF"
# minLength / maxLength strings: `name ::= (([^\"\\\r\n]))`, repeated {min, max} by its user.
_LENGTH_CHAR = re.compile(r'::= \(\(\[\^\\"\\\\\\r\\n\]\)\)')
_JSON_CHAR = r'::= (([^\0-\x1f\"\\' + _SURROGATES + r']) | ("\\" [\"\\/bfnrt]))'


def patch_json_ebnf(ebnf: str) -> str:
    """Fix defects 1 and 2 in the EBNF text of a grammar xgrammar converted from a JSON schema."""
    ebnf = _LENGTH_CHAR.sub(lambda _: _JSON_CHAR, ebnf)
    return exclude_surrogates_ebnf(ebnf)


def exclude_surrogates_ebnf(ebnf: str) -> str:
    """Insert U+D800-U+DFFF into every negated class outside string literals."""
    out: list[str] = []
    i, n = 0, len(ebnf)
    while i < n:
        c = ebnf[i]
        if c == '"':  # a string literal (Regex("...") arguments included): copy as is
            j = i + 1
            while j < n and ebnf[j] != '"':
                j += 2 if ebnf[j] == "\\" else 1
            out.append(ebnf[i:j + 1])
            i = j + 1
        elif c == "[":
            j = i + 1
            while j < n and ebnf[j] != "]":
                j += 2 if ebnf[j] == "\\" else 1
            cls = ebnf[i:j + 1]
            if cls.startswith("[^") and _SURROGATES not in cls:
                cls = "[^" + _SURROGATES + cls[2:]
            out.append(cls)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def exclude_surrogates(regex: str) -> str:
    """Rewrite `.` and negated classes of a regex so they cannot match a surrogate code point.

    `.` becomes `[^\\n\\r\\u2028\\u2029\\uD800-\\uDFFF]` (ECMA-262 `.`, less surrogates).
    """
    out: list[str] = []
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\":
            out.append(regex[i:i + 2])
            i += 2
        elif c == "[":
            j = i + 1
            if j < n and regex[j] == "^":
                j += 1
            if j < n and regex[j] == "]":  # a leading ] is literal
                j += 1
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            cls = regex[i:j + 1]
            if cls.startswith("[^") and _SURROGATES not in cls:
                cls = "[^" + _SURROGATES + cls[2:]
            out.append(cls)
            i = j + 1
        elif c == ".":
            out.append(r"[^\n\r\u2028\u2029" + _SURROGATES + "]")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)
