"""A small regular-expression subset, compiled to DFAs over UTF-8 bytes (for constraints).

Inside:

- ``parse_regex(pattern)``: the documented subset (below) → an AST (``unmask.infill.dfa``).
  Anything else raises ``UserError`` naming the unsupported construct and its column.
- ``compile_regex(pattern)``: → a byte-level ``DFA`` (``unmask.infill.dfa.to_dfa``).

The subset (a regex always matches the *whole* gap):

- literals, escaped metacharacters (``\\.`` ``\\[`` ...), ``\\n \\t \\r \\f \\v``, ``\\xNN``,
  ``\\uNNNN``;
- ``.`` (any character but newline), ``\\d \\w \\s`` and their negations ``\\D \\W \\S``
  (ASCII: ``\\d`` = ``[0-9]``, ``\\w`` = ``[A-Za-z0-9_]``, ``\\s`` = ``[ \\t\\n\\r\\f\\v]``);
- classes ``[a-z0-9_]``, negated ``[^"\\\\]`` (the excluded characters must be ASCII);
- groups ``( )`` and alternation ``|``;
- quantifiers ``? * + {m} {m,} {,n} {m,n}`` (greedy; bounds up to 1000);
- ``^`` at the very start and ``$`` at the very end are accepted and mean nothing.

Characters are matched as their UTF-8 bytes, so one character may span several tokens (or
share a token with others); ``.``, negated classes and ``\\D \\W \\S`` accept any well-formed
UTF-8 character outside the excluded ASCII set.
"""

from __future__ import annotations

from unmask.errors import UserError
from unmask.infill.dfa import (
    DFA,
    DIGIT,
    DOT,
    SPACE,
    WORD,
    CharSet,
    Node,
    alt,
    any_char,
    cat,
    class_set,
    rep,
    to_dfa,
)

MAX_REPEAT = 1000
"""Largest bound of a ``{m,n}`` quantifier."""

# -- parsing --------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.end = len(pattern)

    def error(self, msg: str, at: int | None = None) -> UserError:
        col = (self.i if at is None else at) + 1
        return UserError(f"regex {self.p!r} column {col}: {msg}")

    def unsupported(self, what: str, at: int) -> UserError:
        return self.error(f"{what} is not supported (see docs/infill.md for the regex subset)", at)

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < self.end else None

    def parse(self) -> Node:
        if self.p.startswith("^"):
            self.i = 1
        if self.p.endswith("$") and not self.p.endswith("\\$") and len(self.p) > self.i:
            self.end = len(self.p) - 1
        node = self.alternation()
        if self.i < self.end:
            c = self.p[self.i]
            if c == ")":
                raise self.error("unbalanced ')'")
            raise self.error(f"unexpected {c!r}")
        return node

    def alternation(self) -> Node:
        branches = [self.concat()]
        while self.i < self.end and self.p[self.i] == "|":
            self.i += 1
            branches.append(self.concat())
        return alt(*branches)

    def concat(self) -> Node:
        items: list[Node] = []
        while self.i < self.end and self.p[self.i] not in "|)":
            items.append(self.repeat())
        return cat(*items) if items else Node("cat")

    def repeat(self) -> Node:
        atom = self.atom()
        q = self.quantifier()
        if q is None:
            return atom
        if self.i < self.end and self.p[self.i] == "?":
            raise self.unsupported("lazy quantifier '?' after a quantifier", self.i)
        if self.i < self.end and self.p[self.i] == "+":
            raise self.unsupported("possessive quantifier '+' after a quantifier", self.i)
        if self.i < self.end and self.quantifier_ahead():
            raise self.error("multiple repeat (a quantifier after a quantifier)")
        lo, hi = q
        return rep(atom, lo, hi)

    def quantifier_ahead(self) -> bool:
        c = self.p[self.i]
        return c in "*+?" or (c == "{" and self.braces_at())

    def quantifier(self) -> tuple[int, int | None] | None:
        if self.i >= self.end:
            return None
        c = self.p[self.i]
        if c == "*":
            self.i += 1
            return 0, None
        if c == "+":
            self.i += 1
            return 1, None
        if c == "?":
            self.i += 1
            return 0, 1
        if c == "{":
            return self.braces()
        return None

    def braces(self) -> tuple[int, int | None] | None:
        """``{m}``, ``{m,}``, ``{,n}``, ``{m,n}``; anything else is a literal '{' (as in Python)."""
        start = self.i
        close = self.p.find("}", start)
        if close < 0 or close >= self.end:
            return None
        body = self.p[start + 1 : close]
        lo_s, comma, hi_s = body.partition(",")
        if not (lo_s.isdigit() or (comma and lo_s == "")) or not (hi_s.isdigit() or hi_s == ""):
            return None
        if not comma and not lo_s:
            return None
        lo = int(lo_s) if lo_s else 0
        hi: int | None = (int(hi_s) if hi_s else None) if comma else lo
        if hi is not None and hi < lo:
            raise self.error(f"bad repeat bounds {{{body}}}: max < min", start)
        if max(lo, hi or 0) > MAX_REPEAT:
            raise self.error(f"repeat bound over {MAX_REPEAT}", start)
        self.i = close + 1
        return lo, hi

    def atom(self) -> Node:
        at = self.i
        c = self.p[self.i]
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c == "{" and self.braces_at():
            raise self.error("nothing to repeat before '{'")
        if c == "(":
            if self.p.startswith("(?", self.i):
                raise self.unsupported("group extension '(?...)'", at)
            self.i += 1
            node = self.alternation()
            if self.i >= self.end or self.p[self.i] != ")":
                raise self.error("unclosed '('", at)
            self.i += 1
            return node
        if c == "[":
            return any_char(self.char_class())
        if c == ".":
            self.i += 1
            return any_char(DOT)
        if c == "^" or c == "$":
            raise self.unsupported(f"anchor {c!r} (a regex always matches the whole gap)", at)
        if c == "\\":
            return any_char(self.escape(in_class=False))
        self.i += 1
        return any_char(class_set(c))

    def braces_at(self) -> bool:
        save = self.i
        try:
            return self.braces() is not None
        finally:
            self.i = save

    def escape(self, *, in_class: bool) -> CharSet:
        at = self.i
        if self.i + 1 >= self.end:
            raise self.error("trailing backslash", at)
        c = self.p[self.i + 1]
        self.i += 2
        if c in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c]
        if c.lower() in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c.lower()].negate()
        if c in _SIMPLE_ESCAPES:
            return class_set(_SIMPLE_ESCAPES[c])
        if c in "xu":
            n = 2 if c == "x" else 4
            digits = self.p[self.i : self.i + n]
            if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(f"bad escape \\{c}{digits}", at)
            self.i += n
            return class_set(chr(int(digits, 16)))
        if c.isdigit():
            raise self.unsupported(f"backreference '\\{c}'", at)
        if c in "bBAZzG" and not in_class:
            raise self.unsupported(f"anchor '\\{c}'", at)
        if c.isalnum():
            raise self.unsupported(f"escape '\\{c}'", at)
        return class_set(c)

    def char_class(self) -> CharSet:
        at = self.i
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        members = CharSet()
        first = True
        while True:
            if self.i >= self.end:
                raise self.error("unclosed '['", at)
            c = self.p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if self.p.startswith("[:", self.i):
                raise self.unsupported("POSIX class '[:...:]'", self.i)
            lo_at = self.i
            if c == "\\":
                item = self.escape(in_class=True)
            else:
                self.i += 1
                item = class_set(c)
            # A range a-b (a '-' first, last or after a class escape is literal).
            if (
                self.peek() == "-"
                and self.i + 1 < self.end
                and self.p[self.i + 1] != "]"
                and _single(item) is not None
            ):
                self.i += 1
                hi_at = self.i
                if self.p[self.i] == "\\":
                    hi_item = self.escape(in_class=True)
                else:
                    hi_item = class_set(self.p[self.i])
                    self.i += 1
                a, b = _single(item), _single(hi_item)
                if b is None:
                    raise self.error("bad character range (a class escape as its end)", hi_at)
                assert a is not None
                if b < a:
                    raise self.error(f"bad character range {chr(a)}-{chr(b)}", lo_at)
                if b >= 128 and b - max(a, 128) > 4096:
                    raise self.unsupported("non-ASCII range over 4096 characters", lo_at)
                cps = range(a, b + 1)
                item = CharSet(
                    frozenset(x for x in cps if x < 128), frozenset(x for x in cps if x >= 128)
                )
            members = members | item
        if negate:
            try:
                return members.negate()
            except ValueError:
                raise self.unsupported("negated class with non-ASCII characters", at) from None
        return members


def _single(cs: CharSet) -> int | None:
    """The code point of a one-character set, else None."""
    if cs.non_ascii or len(cs.ascii) + len(cs.extra) != 1:
        return None
    return next(iter(cs.ascii or cs.extra))


def parse_regex(pattern: str) -> Node:
    """The AST of ``pattern`` (the documented subset); ``UserError`` for anything else."""
    return _Parser(pattern).parse()



def compile_regex(pattern: str) -> DFA:
    """``pattern`` (the documented subset, matching the whole text) → a byte-level ``DFA``."""
    return to_dfa(parse_regex(pattern))
