"""Can a grammar always finish? A productivity check on xgrammar's normalized EBNF.

xgrammar's `find_jump_forward_string` (0.2.8) never returns when the grammar forces an infinite
continuation (`root ::= "ab" root`, or a JSON schema whose object requires itself): it allocates
until the process is killed. That can only happen when some rule reachable from `root` derives no
finite string; if every reachable rule does, every parser state has a finite completion, which
bounds the forced text. `always_finishes` checks exactly that, and jump-forward is only used for
grammars that pass (the others are still decoded, ending with "length").
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REPEAT = re.compile(r"\{\s*(\d+)\s*,\s*-?\d+\s*\}|\{\s*(\d+)\s*\}|[*+?]")

# An expression: ("alt", [seq, ...]) | ("seq", [item, ...]) | ("term",) | ("ref", name)
# | ("opt", expr) (an item that may be repeated zero times).


def always_finishes(ebnf: str, root: str = "root") -> bool:
    """True when every rule reachable from `root` can derive a finite string. Syntax this parser
    does not know makes it answer False (the safe side: no jump-forward)."""
    try:
        rules = {name: _Parser(body).parse() for name, body in _rules(ebnf)}
    except ValueError:
        return False
    if root not in rules:
        return False
    productive: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, expr in rules.items():
            if name not in productive and _productive(expr, productive):
                productive.add(name)
                changed = True
    reachable, todo = {root}, [root]
    while todo:
        for ref in _refs(rules.get(todo.pop()), set()):
            if ref not in rules:
                return False
            if ref not in reachable:
                reachable.add(ref)
                todo.append(ref)
    return reachable <= productive


def _rules(ebnf: str) -> list[tuple[str, str]]:
    out = []
    for line in ebnf.splitlines():
        if not line.strip():
            continue
        name, sep, body = line.partition(" ::= ")
        if not sep or not _NAME.fullmatch(name.strip()):
            raise ValueError(f"not a rule: {line[:60]!r}")
        out.append((name.strip(), body))
    return out


def _productive(expr, productive: set[str]) -> bool:
    kind = expr[0]
    if kind in ("term", "opt"):
        return True
    if kind == "ref":
        return expr[1] in productive
    if kind == "seq":
        return all(_productive(e, productive) for e in expr[1])
    return any(_productive(e, productive) for e in expr[1])


def _refs(expr, out: set[str]) -> set[str]:
    if expr is None:
        return out
    kind = expr[0]
    if kind == "ref":
        out.add(expr[1])
    elif kind == "opt":
        _refs(expr[1], out)
    elif kind in ("seq", "alt"):
        for e in expr[1]:
            _refs(e, out)
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def parse(self):
        expr = self._alt()
        self._space()
        if self.i != len(self.s):
            raise ValueError(f"unexpected {self.s[self.i:self.i + 20]!r}")
        return expr

    def _space(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def _alt(self):
        seqs = [self._seq()]
        while self._peek() == "|":
            self.i += 1
            seqs.append(self._seq())
        return ("alt", seqs)

    def _peek(self) -> str:
        self._space()
        return self.s[self.i] if self.i < len(self.s) else ""

    def _seq(self):
        items = []
        while self._peek() not in ("", "|", ")"):
            item = self._item()
            if item is not None:
                items.append(item)
        return ("seq", items)

    def _item(self):
        s, c = self.s, self._peek()
        if c == '"':
            self._skip_quoted('"')
            item = ("term",)
        elif c == "[":
            self._skip_quoted("]", start="[")
            item = ("term",)
        elif s.startswith("(=", self.i):  # a lookahead consumes nothing
            self._skip_group()
            return None
        elif c == "(":
            self.i += 1
            item = self._alt()
            if self._peek() != ")":
                raise ValueError("unclosed group")
            self.i += 1
        else:
            m = _NAME.match(s, self.i)
            if m is None:
                raise ValueError(f"unexpected {s[self.i:self.i + 20]!r}")
            self.i = m.end()
            if self.i < len(s) and s[self.i] == "(":  # Regex("...") and other built-ins
                self._skip_group()
                return ("term",)
            item = ("ref", m.group())
        m = _REPEAT.match(s, self.i)
        if m is not None:
            self.i = m.end()
            low = m.group(1) or m.group(2)
            if (low is not None and int(low) == 0) or m.group() in ("*", "?"):
                return ("opt", item)
        return item

    def _skip_quoted(self, end: str, start: str = '"') -> None:
        s, i = self.s, self.i + 1
        while i < len(s) and s[i] != end:
            i += 2 if s[i] == "\\" else 1
        if i >= len(s):
            raise ValueError(f"unclosed {start}")
        self.i = i + 1

    def _skip_group(self) -> None:
        depth, s = 0, self.s
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self._skip_quoted('"')
                continue
            if c == "[":
                self._skip_quoted("]", start="[")
                continue
            self.i += 1
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return
        raise ValueError("unclosed group")
