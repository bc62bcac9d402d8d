"""A bound on a regex's DFA before the engine builds it: ``dfa_states``.

outlines-core determinizes a pattern in full before unmask can count its states, and some
short patterns have exponentially many (``.*a.{30}``: the DFA tracks which of the last 31
characters were ``a``, 2^31 sets). The engine is native code that no timeout interrupts, so
one such request held the server's worker for good (``[a-z]{1,60}x[a-z]{1,60}`` did not
finish in 10 minutes). ``dfa_states`` runs the same subset construction over the pattern's
position automaton (Glushkov's: one state per character or class of the expanded pattern)
and stops as soon as it passes a limit, so the cost of an answer is bounded by the limit.

The construction reads Python's parse of the pattern (``re._parser``, as
``automaton.pattern_size``), which agrees with the engine on the syntax it accepts; the
characters it tries are those the pattern names (literals, range ends and their
neighbours, case variants) and a few of each class (digits, letters, spaces, others of
several scripts), so it counts the states those characters reach. The engine's byte DFA
usually has more (a state inside each multi-byte character, ``START`` and ``SENTINEL``:
``.{1,50}`` 51 here, 509 there); where it merges sets of positions that lead alike the count
may pass it by a fifth (``[a-z]{1,8}x[a-z]{1,8}``: 639 here, 520 there), hence the margin of
``automaton.MAX_DFA_STATES``. A pattern Python cannot parse
(the engine's own syntax, ``\\p{L}``) is not counted (None): the engine judges it alone.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

_SAMPLES = "0a_Z \t\n!.\"\\\x00\x7f\u00a0\u00e9\u0663\u2028\u4e00\U0001f600\U0010fffd"
"""Characters tried besides those the pattern names: digits, word characters, spaces and
others (ASCII, Latin-1, Arabic-Indic, CJK, emoji, private use), so each class is tried on
members and non-members."""

_CATEGORY = {
    "CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W",
}


class _Unknown(Exception):
    """A construct the count does not model (the engine judges the pattern alone)."""


class _Positions:
    """The Glushkov automaton of a parsed pattern: a predicate per position and the
    positions that may follow each (bit masks), counted repetitions written out."""

    def __init__(self, most: int) -> None:
        self.tests: list[Callable[[str], bool]] = []
        self.follow: list[int] = []
        self.chars: set[str] = set()
        self.most = most
        self.made: dict[Any, Callable[[str], bool]] = {}

    def atom(self, test: Callable[[str], bool]) -> tuple[bool, int, int]:
        """A new position that takes the characters ``test`` accepts."""
        if len(self.tests) >= self.most:
            raise _Unknown("too many positions")
        self.tests.append(test)
        self.follow.append(0)
        bit = 1 << (len(self.tests) - 1)
        return False, bit, bit

    def link(self, last: int, first: int) -> None:
        while last:
            low = last & -last
            self.follow[low.bit_length() - 1] |= first
            last ^= low

    def concat(self, a: tuple[bool, int, int], b: tuple[bool, int, int]) -> tuple[bool, int, int]:
        self.link(a[2], b[1])
        return (a[0] and b[0], a[1] | (b[1] if a[0] else 0), b[2] | (a[2] if b[0] else 0))

    def sequence(self, items: Any, flags: int) -> tuple[bool, int, int]:
        out = (True, 0, 0)
        for op, av in items:
            out = self.concat(out, self.node(str(op), av, flags))
        return out

    def node(self, op: str, av: Any, flags: int) -> tuple[bool, int, int]:
        if op in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):  # one test for every copy
            key = (op, av if op != "IN" else id(av), flags)
            if key not in self.made:
                self.made[key] = self._test(op, av, flags)
            return self.atom(self.made[key])
        if op == "BRANCH":
            parts = [self.sequence(b, flags) for b in av[1]]
            return (any(p[0] for p in parts), _union(p[1] for p in parts),
                    _union(p[2] for p in parts))
        if op == "SUBPATTERN":
            _, add, drop, sub = av
            return self.sequence(sub, (flags | add) & ~drop)
        if op == "ATOMIC_GROUP":
            return self.sequence(av, flags)
        if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            return self._repeat(av, flags)
        if op == "AT":
            return True, 0, 0
        raise _Unknown(op)

    def _test(self, op: str, av: Any, flags: int) -> Callable[[str], bool]:
        ignore = bool(flags & re.IGNORECASE)
        if op in ("LITERAL", "NOT_LITERAL"):
            char, keep = chr(av), op == "LITERAL"
            self._name(char)
            same = _folded(char) if ignore else {char}
            return lambda c: (c in same or (ignore and c.lower() in same)) == keep
        if op == "ANY":
            dotall = bool(flags & re.DOTALL)
            return lambda c: dotall or c != "\n"
        return self._class(av, ignore)

    def _repeat(self, av: Any, flags: int) -> tuple[bool, int, int]:
        import re._constants as c

        lo, hi, sub = av
        out = (True, 0, 0)
        for _ in range(lo):
            out = self.concat(out, self.sequence(sub, flags))
        if hi == c.MAXREPEAT:
            star = self.sequence(sub, flags)
            self.link(star[2], star[1])
            return self.concat(out, (True, star[1], star[2]))
        tail = (True, 0, 0)  # the optional copies, nested from the right: x(x(x)?)?
        for _ in range(hi - lo):
            tail = self.concat(self.sequence(sub, flags), tail)
            tail = (True, tail[1], tail[2])
        return self.concat(out, tail)

    def _class(self, items: Any, ignore: bool) -> Callable[[str], bool]:
        negate, singles, ranges, classes = False, set(), [], []
        for op, av in items:
            op = str(op)
            if op == "NEGATE":
                negate = True
            elif op == "LITERAL":
                singles |= _folded(chr(av)) if ignore else {chr(av)}
                self._name(chr(av))
            elif op == "RANGE":
                lo, hi = av
                ranges.append((lo, hi))
                for n in (lo - 1, lo, hi, hi + 1):
                    if 0 <= n <= 0x10FFFF:
                        self._name(chr(n))
            elif op == "CATEGORY" and str(av) in _CATEGORY:
                classes.append(re.compile(_CATEGORY[str(av)]))
            else:
                raise _Unknown(op)

        def test(c: str) -> bool:
            forms = _folded(c) if ignore else {c}
            hit = any(f in singles or any(lo <= ord(f) <= hi for lo, hi in ranges)
                      or any(k.match(f) for k in classes) for f in forms)
            return hit != negate

        return test

    def _name(self, char: str) -> None:
        self.chars |= _folded(char)


def _folded(char: str) -> set[str]:
    """``char`` and its one-character case variants."""
    return {f for f in (char, char.lower(), char.upper(), char.swapcase()) if len(f) == 1}


def _union(masks: Any) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def dfa_states(pattern: str, limit: int, *, most_positions: int = 50_000) -> int | None:
    """The states of ``pattern``'s DFA (anchored at both ends, the characters that tell its
    classes apart tried), counted up to ``limit + 1`` at most: a result over ``limit``
    means "more than ``limit``". None for a pattern this count does not model (Python
    cannot parse it, a construct the engine refuses anyway, or over ``most_positions``
    positions once its counted repetitions are written out)."""
    import re._parser as parser

    try:
        with warnings.catch_warnings():  # Python's notes on the engine's syntax (``[a&&b]``)
            warnings.simplefilter("ignore")
            parsed = parser.parse(pattern)
        auto = _Positions(most_positions)
        _, first, _ = auto.sequence(parsed, parsed.state.flags)
    except (_Unknown, re.error, RecursionError, OverflowError, ValueError, TypeError):
        return None
    alphabet = sorted(auto.chars | set(_SAMPLES))
    kinds: dict[Callable[[str], bool], int] = {}  # a copy of a repetition shares its test
    kind = [kinds.setdefault(t, len(kinds)) for t in auto.tests][::-1]  # highest bit first
    matching = set()  # per character tried: the positions it may take
    for ch in alphabet:
        hits = ["1" if t(ch) else "0" for t in kinds]
        matching.add(int("".join([hits[k] for k in kind]) or "0", 2))
    matching.discard(0)
    follow = auto.follow
    seen = {-1}  # the start: a mark of its own (before any position)
    todo = [first]
    seen_sets: set[int] = set()
    while todo:
        nexts = todo.pop()  # the positions the next character may take
        for mask in matching:
            state = nexts & mask
            if not state or state in seen_sets:
                continue
            seen_sets.add(state)
            if len(seen_sets) + len(seen) > limit:
                return limit + 1
            out, rest = 0, state
            while rest:
                low = rest & -rest
                out |= follow[low.bit_length() - 1]
                rest ^= low
            todo.append(out)
    return len(seen_sets) + len(seen)


__all__ = ["dfa_states"]
