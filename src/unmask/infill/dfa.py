"""A bound on a regex's DFA before the engine builds it: ``dfa_states``.

outlines-core determinizes a pattern in full before unmask can count its states, and some
short patterns have exponentially many (``.*a.{30}``: the DFA tracks which of the last 31
characters were ``a``, 2^31 sets). The engine is native code that no timeout interrupts, so
one such request held the server's worker for good (``[a-z]{1,60}x[a-z]{1,60}`` did not
finish in 10 minutes). ``dfa_states`` runs a subset construction over the pattern's
Thompson automaton (one position per character or class of the expanded pattern), its sets
of positions kept in priority order as the engine keeps them (leftmost-first: the same
positions in another order are another state), and stops as soon as it passes a limit or a
budget of work, so its own cost is bounded too.

What it counts is the engine's unit, bytes: each class is a set of code points (Python's
reading of ``\\w``, ``\\d``, ``\\s``; a general category ``\\p{L}``, ``\\p{Letter}``,
``\\P{gc=Nd}`` and some binary properties as Python's ``unicodedata`` reads them
(``_property``), any other ``\\p{..}`` and ``\\P{..}`` as any character, ``\\u{..}`` and
``\\x{..}`` as their code points), the characters the pattern's classes tell
apart are all tried (one per interval between class ends), and to each set of positions it
adds the states inside a multi-byte character the engine may reach from it: one per distinct
way the UTF-8 prefixes read so far split the classes still possible
(``\\w{1,30}\\s\\w{1,30}`` is 62 sets of positions but 18,999 engine states, the ways a
partial character may still end as a word or a space character). That sum models the
engine's own determinization (its byte-level details aside), so it is an estimate of the
engine's count, not a proof: on 33 patterns tried (2026-12-07, the synthetic vocabulary of
``benchmarks/constraints.py`` at 8,000 tokens) 0.6-2.3x the engine's states and 1.0-136x
its moves, none under. Where a class is read as more characters than it holds, the count
is no bound: fewer, wider ranges split fewer UTF-8 prefixes, so a script read as any
character counts a fraction of the engine's states (``[\\p{Latin} '-]{1,20}`` 183 vs 649;
an array of ``^[\\p{Latin} '-]{1,50}$`` 1,367 vs 4,824); so may a class of characters
assigned after Python's Unicode version (``unicodedata.unidata_version``, older than the
engine's: ``[\\p{Nd} '-]{1,20}`` 483 vs 509 with 14.0), or Python's ``\\w`` (no marks)
in a set operation (``[\\w--\\p{L}]{1,20}`` 1,883 vs 3,930). ``automaton.check_built``
counts what the engine built. A pattern over
``most_positions`` positions, or whose count spends the work budget, is counted as over the
limit (refused). The engine's own syntax is read as far as the count needs (``_for_python``:
POSIX classes as any character, classes with set operations or nested classes as the code
points they hold (``_set_operation``) or as any character, ``\\z`` as
``$``, named groups ``(?<n>..)`` as groups, its ``u``, ``U``, ``R`` flags dropped, a flag
group past the pattern's start dropped); a pattern Python still cannot parse is not counted
(None), and ``automaton.check_size`` refuses it unless the engine rejects it anyway (it
counted as no states there, so a named group let any pattern through: ``(?<n>x).*a.{17}``
took 39 s of the engine). """

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
import warnings
from typing import Any

Ranges = tuple[tuple[int, int], ...]
"""A set of code points: sorted, disjoint, inclusive ``(lo, hi)`` ranges."""

_UNIVERSE: Ranges = ((0, 0xD7FF), (0xE000, 0x10FFFF))  # no surrogates: UTF-8 has none
_ANYTHING = "\ud800"
"""What an escape of the engine's own syntax becomes for Python's parser: any character. A
surrogate, which no class of code points written out (``_written``) names: as U+10FFFE,
``\\p{Cn}``'s last range ended there, and the whole class was read as any character."""
_ENGINE = re.compile(r"\\[pP](?:\{[^}]*\}|[A-Za-z])")
"""The engine's Unicode property escapes (``\\p{L}``, ``\\pN``, ``\\P{Greek}``)."""
_BRACED = re.compile(r"\\[uxU]\{([0-9A-Fa-f]{1,8})\}")
"""The engine's braced code point escapes (``\\x{10FFFF}``): written as Python's ``\\U``, so a
class's range stays exact (as one placeholder, ``[\\x{20}-\\x{10FFFF}]`` was read as one
character and its moves were estimated from the tokens of one first byte)."""


@functools.cache
def _general_categories() -> dict[str, Ranges]:
    """Per Unicode general category, lowercase (``lu``, ``l`` for all letters, ``lc`` for the
    cased ones), its code points (Python's Unicode tables)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    last, start = "", 0
    for c in range(0x110001):
        cat = unicodedata.category(chr(c)) if c <= 0x10FFFF else ""
        if cat != last:
            if last:
                spans.setdefault(last.lower(), []).append((start, c - 1))
            last, start = cat, c
    spans["lc"] = [r for k in ("lu", "ll", "lt") for r in spans[k]]
    for major in {k[0] for k in spans}:
        spans[major] = [r for k, v in spans.items() if k[0] == major and k != "lc" for r in v]
    return {k: _within(_merge(v), _UNIVERSE) for k, v in spans.items()}


_CATEGORY_NAMES = {
    "other": "c", "control": "cc", "cntrl": "cc", "format": "cf", "unassigned": "cn",
    "privateuse": "co", "surrogate": "cs", "letter": "l", "casedletter": "lc",
    "lowercaseletter": "ll", "modifierletter": "lm", "otherletter": "lo",
    "titlecaseletter": "lt", "uppercaseletter": "lu", "mark": "m", "combiningmark": "m",
    "spacingmark": "mc", "enclosingmark": "me", "nonspacingmark": "mn", "number": "n",
    "decimalnumber": "nd", "digit": "nd", "letternumber": "nl", "othernumber": "no",
    "punctuation": "p", "punct": "p", "connectorpunctuation": "pc", "dashpunctuation": "pd",
    "closepunctuation": "pe", "finalpunctuation": "pf", "initialpunctuation": "pi",
    "otherpunctuation": "po", "openpunctuation": "ps", "symbol": "s", "currencysymbol": "sc",
    "modifiersymbol": "sk", "mathsymbol": "sm", "othersymbol": "so", "separator": "z",
    "lineseparator": "zl", "paragraphseparator": "zp", "spaceseparator": "zs",
}
"""The general categories' long names and aliases (Unicode's PropertyValueAliases, loose:
lowercase, no ``_``, ``-`` or space), by their short codes."""
_BINARY = {"lower": "lowercase", "upper": "uppercase", "wspace": "whitespace",
           "space": "whitespace", "alpha": "alphabetic"}
"""The binary properties' aliases ``_binary`` reads, by their long names (loose)."""
_WHITE_SPACE: Ranges = ((0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0),
                        (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
                        (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))
"""Unicode's ``White_Space`` (PropList; Python's ``str.isspace`` differs: ``\\x1c``-``\\x1f``)."""


@functools.cache
def _binary(name: str) -> Ranges | None:
    """The code points of the binary property ``name`` (loose) that Python's tables give:
    ``Any``, ``ASCII``, ``Assigned``, ``White_Space``, ``Lowercase`` and ``Uppercase``
    (``str.islower``, ``str.isupper`` of one character read them), ``Cased`` (the two and
    the titlecase letters, Unicode's definition), and ``Alphabetic`` read
    as letters, letter numbers and marks (Python has no ``Other_Alphabetic``, the vowel
    signs among the marks); None for any other."""
    name = _BINARY.get(name, name)
    if name in ("lowercase", "uppercase"):
        test = str.islower if name == "lowercase" else str.isupper
        return _merge([(c, c) for lo, hi in _UNIVERSE for c in range(lo, hi + 1)
                       if test(chr(c))])
    table = _general_categories()
    if name == "cased":  # Unicode's definition
        return _merge([*_binary("lowercase"), *_binary("uppercase"), *table["lt"]])
    return {"any": _UNIVERSE, "ascii": ((0, 0x7F),), "whitespace": _WHITE_SPACE,
            "assigned": _complement(table["cn"]),
            "alphabetic": _merge([*table["l"], *table["nl"], *table["m"]])}.get(name)


def _loose(name: str) -> str:
    """``name`` as the engine matches a property's name or value (UAX44-LM3): lowercase,
    without spaces, ``_``, ``-`` and a leading ``is``."""
    name = re.sub(r"[\s_-]", "", name).lower()
    return name[2:] if name.startswith("is") else name


def _property(name: str) -> Ranges | None:
    """The code points of the engine's ``\\p{name}``: a general category by its code or long
    name, alone or as ``gc=``/``General_Category=`` (or ``:``, or ``!=``, which the engine
    reads as ``=``: its ``\\p{gc!=Nd}`` matches ``5`` and not ``a``), and the binary
    properties ``_binary`` reads; None for any other (a script, ``\\p{Greek}``: Python has no
    script table)."""
    key, value = re.fullmatch(r"(?:(.*?)!?[=:])?(.*)", name, re.DOTALL).groups()
    value = _loose(value)
    if key is None:  # the engine tries a binary property's name first, then a category's
        ranges = _binary(value) if value not in ("cf", "sc", "lc") else None
    elif _loose(key) in ("gc", "generalcategory"):  # the three it reads as categories too
        ranges = _binary(value) if value in ("any", "ascii", "assigned") else None
    else:
        return None
    return ranges or _general_categories().get(_CATEGORY_NAMES.get(value, value))


def _written(ranges: Ranges) -> str:
    """``ranges`` as a class's items Python reads."""
    return "".join(f"\\U{lo:08X}-\\U{hi:08X}" for lo, hi in ranges)


def _properties(pattern: str) -> str:
    """``pattern`` with each of the engine's property escapes that ``_property`` reads
    (``\\p{L}``, ``\\pN``, ``\\P{Lu}``, ``\\p{Letter}``, ``\\p{gc=Nd}``) as its code points, a
    class (its items inside brackets), and every other one (``\\p{Greek}``) as any character:
    as any character, ``\\p{L}``'s many ranges were one, and the states inside a multi-byte
    character they split were not counted (an array of ``^[\\p{L} '-]{1,50}$`` was estimated
    at 1,367 states, the engine built 44,796 in two minutes at a 126,000-token vocabulary;
    ``\\p{Letter}``, until its long name was read, likewise)."""
    out: list[str] = []
    i, n, depth = 0, len(pattern), 0
    while i < n:
        m = _ENGINE.match(pattern, i)
        if m:
            ranges = _property(m.group(0)[3:-1] if m.group(0)[2] == "{" else m.group(0)[2])
            if ranges is not None and m.group(0)[1] == "P":
                ranges = _complement(ranges)
            body = _written(ranges) if ranges else ""
            out.append(_ANYTHING if not body else body if depth else f"[{body}]")
            i = m.end()
        elif pattern[i] == "\\":
            out.append(pattern[i:i + 2])
            i += 2
        elif pattern[i] == "[":
            j = _opened(pattern, i + 1)
            out.append(pattern[i:j])
            depth, i = depth + 1, j
        else:
            depth -= pattern[i] == "]" and depth > 0
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _code_point(m: re.Match[str]) -> str:
    value = int(m.group(1), 16)
    return f"\\U{value:08X}" if value <= 0x10FFFF else _ANYTHING


_POSIX = re.compile(r"\[:\^?[a-z]+:\]")
"""A POSIX class inside brackets (``[[:alpha:]]``), which Python reads as characters."""
_ANCHORS = re.compile(r"\\z|\\b\{[a-z-]+\}|\\[<>]")
"""The engine's anchors Python does not know (``\\z``, ``\\b{start}``, ``\\<``): ``$``, ``\\b``."""
_FLAG_GROUP = re.compile(r"\\.|\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", re.DOTALL)
"""An inline flag group (``(?i)``, ``(?s-U:``): the engine's own flags (``u``, ``U``, ``R``)
are dropped, ``U`` (lazy by default) as the count does not tell greedy from lazy."""
_NAMED = re.compile(r"\\.|\(\?P?<(?![=!])[^>]*>", re.DOTALL)
"""A named group, the engine's ``(?<name>`` and ``(?P<name>``: counted as ``(?:``."""


def _flag_group(m: re.Match[str], start: bool) -> str:
    """``m`` (an inline flag group, or an escape: kept) as Python reads it: without the
    engine's own flags, and a group that sets flags for what follows (``(?i)``) kept only at
    the pattern's start, where Python allows it, without clearing flags there (none is set
    yet)."""
    if m.group(3) is None:
        return m.group(0)
    on = re.sub("[uUR]", "", m.group(1))
    off = re.sub("[uUR]", "", m.group(2) or "")
    if m.group(3) == ":":
        return f"(?{on}-{off}:" if off else f"(?{on}:"
    return f"(?{on})" if on and start else ""


def _opened(pattern: str, j: int) -> int:
    """Where a class's items begin, ``j`` just after its ``[``: past a ``^`` and a leading
    ``]`` (a literal there)."""
    if pattern[j:j + 1] == "^":
        j += 1
    return j + 1 if pattern[j:j + 1] == "]" else j


_SET_OPS = ("--", "&&", "~~")
_ITEM = re.compile(r"\\(?:U[0-9A-Fa-f]{8}|u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|.)|.", re.DOTALL)
"""One character of a class's items, an escape (as ``_for_python`` writes code points) or not."""


def _operands(body: str) -> list[tuple[str, list[str]]] | None:
    """A class's items (``body``, after its ``[`` and ``^``) split at its set operations, as
    the engine reads them (one precedence, left to right): per operand, the operation before
    it (``""`` for the first) and its pieces, the items outside nested classes (one piece) and
    each nested class. None where a nested class nests a class or holds an operation."""
    out: list[tuple[str, list[str]]] = [("", [])]
    flat, i, n = "", 0, len(body)
    while i < n:
        if body[i:i + 2] in _SET_OPS:
            out[-1][1].append(flat)
            out.append((body[i:i + 2], []))
            flat, i = "", i + 2
        elif body[i] == "[":
            j = _opened(body, i + 1)
            while j < n and body[j] != "]":
                if body[j] == "[" or body[j:j + 2] in _SET_OPS:
                    return None
                j += 2 if body[j] == "\\" else 1
            if j >= n:
                return None
            out[-1][1].append(body[i:j + 1])
            i = j + 1
        else:  # a character, and the end of a range it starts, before any operation after
            j = _ITEM.match(body, i).end()  # (``[ -~~~a]`` is `` -~``, ``~~``, ``a``)
            if body[j:j + 1] == "-" and body[j + 1:j + 2] not in ("", "]", "-", "["):
                j = _ITEM.match(body, j + 1).end()
            flat, i = flat + body[i:j], j
    out[-1][1].append(flat)
    return out


def _class_ranges(text: str) -> Ranges | None:
    """The code points of a class Python reads (``[a-z\\s]``), as ``_Positions`` counts
    them (the engine's escapes in it as any character). None where Python cannot read it."""
    import re._parser as parser

    try:
        parsed = list(parser.parse(text))
        if len(parsed) != 1 or str(parsed[0][0]) not in ("LITERAL", "NOT_LITERAL", "IN"):
            return None
        return _Positions._class(str(parsed[0][0]), parsed[0][1], 0)
    except (_Unknown, re.error, RecursionError, OverflowError, ValueError, TypeError):
        return None


def _set_operation(text: str) -> str | None:
    """A bracketed class with nested classes or set operations (``[\\s--[\\x00-\\x1f]]``,
    ``[\\w&&[^\\d]]``) as a class of code point ranges Python reads, or None where its parts
    are not classes Python reads. An operand that holds the engine's escapes is read as any
    character, more than it is, so the result is kept a superset of the characters (not a
    bound on the states: fewer, wider ranges split fewer UTF-8 prefixes, the module's doc
    says how the count may fall under; so may ``\\w``, Python's, no marks, in a difference
    or a symmetric difference): a difference from it
    subtracts nothing, a symmetric difference with it is the union (``[\\p{Greek}--\\d]`` is
    counted as any character but a digit, ``[a-z--\\p{Greek}]`` as ``[a-z]``), and a negated
    class of such a superset is any character. Case-insensitive, the ranges are folded
    afterwards: a superset of the engine's operation on folded operands."""
    negate = text[1:2] == "^"
    parts = _operands(text[2 if negate else 1:-1])
    if parts is None:
        return None
    ranges: Ranges = ()
    exact = True  # ``ranges`` are the engine's code points, not a superset
    for op, pieces in parts:
        read = [_class_ranges(p if p[:1] == "[" else f"[\\{p}]" if p[:1] == "^" else f"[{p}]")
                for p in pieces if p]  # a ``^`` after an operation is a character
        if not read or None in read:
            return None
        have = _merge([r for one in read for r in one or ()])
        known = not any(_ANYTHING in p for p in pieces)
        if op == "":
            ranges, exact = have, known
        elif op == "&&":
            ranges, exact = _within(ranges, have), exact and known
        elif op == "--" and known:
            ranges = _within(ranges, _complement(have))
        elif op == "--":
            exact = False
        else:  # ``~~``
            both = _within(ranges, have) if exact and known else ()
            ranges = _within(_merge([*ranges, *have]), _complement(both))
            exact = exact and known
    if negate and not exact:
        return None
    ranges = _complement(ranges) if negate else ranges
    return f"[{_written(ranges)}]" if ranges else "[^\\x00-\\U0010FFFF]"


def _classes(pattern: str) -> str:
    """``pattern`` with each bracketed class the engine reads and Python does not (one that
    nests a class, ``[a[bc]]``, or holds a set operation, ``[a--b]``, ``[a&&b]``,
    ``[a~~b]``) as its code points (``_set_operation``), or as any character where its parts
    are not classes Python reads. ``schema._json_plain`` writes ``[\\s--[\\x00-\\x1f"\\\\]]``
    for a JSON string's ``\\s``: read as any character, an array of ``^[A-Za-z\\s]{1,40}$``
    was estimated at over a million states (the engine built 1,631)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c != "[":
            out.append(c)
            i += 1
            continue
        j, depth, odd = _opened(pattern, i + 1), 1, False
        while j < n and depth:
            if pattern[j] == "\\":
                j += 2
                continue
            if pattern[j] == "[":
                depth, odd = depth + 1, True
                j = _opened(pattern, j + 1)
                continue
            if pattern[j] == "]":
                depth -= 1
            elif pattern[j:j + 2] in _SET_OPS:
                odd = True
            j += 1
        out.append((_set_operation(pattern[i:j]) or _ANYTHING) if odd and not depth
                   else pattern[i:j])
        i = j
    return "".join(out)


def _for_python(pattern: str) -> str:
    """``pattern`` in Python's syntax, as far as the count goes: the engine's escapes and
    POSIX classes as any character, classes with set operations as ``_classes`` writes them,
    its anchors as Python's, its named groups as groups, its own flags dropped."""
    out = _BRACED.sub(_code_point, _properties(pattern))
    out = _classes(_POSIX.sub(_ANYTHING, out))
    out = _ANCHORS.sub(lambda m: "$" if m.group(0) == "\\z" else "\\b", out)
    out = _NAMED.sub(lambda m: m.group(0) if m.group(0)[0] == "\\" else "(?:", out)
    return _FLAG_GROUP.sub(lambda m: _flag_group(m, m.start() == 0), out)


_CATEGORY = {
    "CATEGORY_DIGIT": (r"\d", False), "CATEGORY_NOT_DIGIT": (r"\d", True),
    "CATEGORY_SPACE": (r"\s", False), "CATEGORY_NOT_SPACE": (r"\s", True),
    "CATEGORY_WORD": (r"\w", False), "CATEGORY_NOT_WORD": (r"\w", True),
}
_LENGTHS = ((2, 0x80, 0x7FF), (3, 0x800, 0xFFFF), (4, 0x10000, 0x10FFFF))
"""UTF-8's multi-byte lengths and the code points each writes."""
WORK_BUDGET = 100_000_000
"""Units of work ``dfa_states`` may spend before it calls a pattern too large, about a second
of it: a set of positions intersected, followed or linked costs ``_OP`` plus one per 64
positions it holds, a UTF-8 prefix tried ``_PREFIX`` per class. ``(?:[a-z]{0,100}){100}``
took 100 s of an unbounded count (and 19 s of the engine)."""
_OP = 20
_PREFIX = 500
_SLACK = 16
"""The states inside a character are counted a ``1/_SLACK`` over the fewest the pattern's
classes need: the engine keeps a few more (its moves 1.03x the estimate on
``(?:.|\\S+){0,4}`` at 256 tokens without it)."""


class _Unknown(Exception):
    """A construct the count does not model (the engine judges the pattern alone)."""


class _TooLarge(Exception):
    """Over the positions or the work the count may spend: counted as over the limit."""


def _merge(ranges: list[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    out, at = [], 0
    for lo, hi in ranges:
        if lo > at:
            out.append((at, lo - 1))
        at = hi + 1
    if at <= 0x10FFFF:
        out.append((at, 0x10FFFF))
    return _within(tuple(out), _UNIVERSE)


def _within(ranges: Ranges, outer: Ranges) -> Ranges:
    return tuple((max(lo, a), min(hi, b)) for lo, hi in ranges for a, b in outer
                 if max(lo, a) <= min(hi, b))


@functools.cache
def _category(name: str) -> Ranges:
    """The code points Python's ``name`` (``\\w``, ``\\d``, ``\\s``) matches."""
    text = "".join(chr(c) for lo, hi in _UNIVERSE for c in range(lo, hi + 1))
    return _merge([(ord(text[m.start()]), ord(text[m.end() - 1]))
                   for m in re.finditer(f"{name}+", text)])


def _folded(char: str) -> set[str]:
    """``char`` and its one-character case variants."""
    return {f for f in (char, char.lower(), char.upper(), char.swapcase()) if len(f) == 1}


def _fold_ranges(ranges: Ranges) -> Ranges:
    """``ranges`` with the case variants of their characters (where few enough to list)."""
    extra = [(ord(f), ord(f)) for lo, hi in ranges if hi - lo < 0x3000
             for c in range(lo, hi + 1) for f in _folded(chr(c))]
    return _merge([*ranges, *extra])


class _Work:
    """The units of work spent, and ``_TooLarge`` past the budget."""

    def __init__(self, budget: int) -> None:
        self.left = budget

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise _TooLarge


Ordered = tuple[int, ...]
"""A set of positions in priority order: its parts (bit masks), each in the order of the
positions' indices, a part's lowest index above the one before's highest (``_runs``)."""


def _runs(parts: Any) -> Ordered:
    """``parts`` (disjoint position masks, in priority order) as an ``Ordered``: the empty
    ones dropped, consecutive ones whose indices rise from one to the next merged, so an
    order has one form."""
    out: list[int] = []
    for part in parts:
        if not part:
            continue
        if out and (part & -part).bit_length() > out[-1].bit_length():
            out[-1] |= part
        else:
            out.append(part)
    return tuple(out)


class _Positions:
    """The Thompson automaton of a parsed pattern, as the engine builds it: nodes with
    moves on nothing (``eps``, by priority: a greedy repetition tries one more copy first)
    and nodes that read one character (``reads``: a position, with its class, and the node
    after it), counted repetitions written out. The engine's DFA keeps the positions a state
    may take next in priority order (leftmost-first), so two states with the same positions
    in another order are two states: ``(?:x|[a-z]{0,4}|[a-c]{0,6}){8}`` has 252 sets of
    positions and 23,418 engine states (``follow``: the positions after a position, by
    priority)."""

    def __init__(self, most: int, work: _Work) -> None:
        self.work = work
        self.kinds: list[int] = []  # per position: its class's index in ``classes``
        self.classes: dict[Ranges, int] = {}
        self.most = most
        self.made: dict[Any, int] = {}
        self.eps: list[list[int]] = []
        self.reads: dict[int, int] = {}  # node -> the position it reads
        self.after: list[int] = []  # per position: the node after it
        self.end = -1
        self.follows: dict[int, tuple[Ordered, bool]] = {}  # ``after_position``'s

    def _node(self) -> int:
        if len(self.eps) >= 8 * self.most:
            raise _TooLarge
        self.eps.append([])
        return len(self.eps) - 1

    def atom(self, kind: int) -> tuple[int, int]:
        """A new position of class ``kind``: (the node reading it, the node after)."""
        if len(self.kinds) >= self.most:
            raise _TooLarge
        self.kinds.append(kind)
        at, after = self._node(), self._node()
        self.reads[at] = len(self.kinds) - 1
        self.after.append(after)
        return at, after

    def sequence(self, items: Any, flags: int) -> tuple[int, int]:
        entry = out = self._node()
        for op, av in items:
            a, b = self.node(str(op), av, flags)
            self.eps[out].append(a)
            out = b
        return entry, out

    def node(self, op: str, av: Any, flags: int) -> tuple[int, int]:
        if op in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):  # one class for every copy
            key = (op, av if op != "IN" else id(av), flags)
            if key not in self.made:
                self.made[key] = self.classes.setdefault(self._class(op, av, flags),
                                                         len(self.classes))
            return self.atom(self.made[key])
        if op == "BRANCH":
            entry, out = self._node(), self._node()
            for branch in av[1]:
                a, b = self.sequence(branch, flags)
                self.eps[entry].append(a)
                self.eps[b].append(out)
            return entry, out
        if op == "SUBPATTERN":
            _, add, drop, sub = av
            return self.sequence(sub, (flags | add) & ~drop)
        if op == "ATOMIC_GROUP":
            return self.sequence(av, flags)
        if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            return self._repeat(av, flags, op != "MIN_REPEAT")
        if op == "AT":
            return self.sequence((), flags)
        raise _Unknown(op)

    def follow(self, node: int) -> tuple[Ordered, bool]:
        """The positions read next from ``node``, by priority (the engine's ordered
        closure: depth first, each node once), and whether the pattern may end there."""
        positions: list[int] = []
        seen: set[int] = set()
        stack, final = [node], False
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n == self.end:
                final = True
            elif n in self.reads:
                positions.append(self.reads[n])
            else:
                stack.extend(reversed(self.eps[n]))
        self.work.spend(2 * _OP * (1 + len(seen)))  # some Python steps a node
        return _runs(1 << q for q in positions), final

    def after_position(self, p: int) -> tuple[Ordered, bool]:
        """``follow`` of the node after position ``p``, once per position."""
        if p not in self.follows:
            self.follows[p] = self.follow(self.after[p])
        return self.follows[p]

    @staticmethod
    def _class(op: str, av: Any, flags: int) -> Ranges:
        ignore = bool(flags & re.IGNORECASE)
        if op in ("LITERAL", "NOT_LITERAL"):
            if chr(av) == _ANYTHING:
                return _UNIVERSE
            one = _merge([(ord(f), ord(f)) for f in (_folded(chr(av)) if ignore
                                                     else {chr(av)})])
            return _within(one, _UNIVERSE) if op == "LITERAL" else _complement(one)
        if op == "ANY":
            return _UNIVERSE if flags & re.DOTALL else _complement(((10, 10),))
        negate, parts = False, []
        for item, arg in av:
            item = str(item)
            if item == "NEGATE":
                negate = True
            elif item == "LITERAL" and chr(arg) == _ANYTHING:
                return _UNIVERSE  # ``[^\p{Greek}]`` too: any character, as the engine's escape
            elif item == "LITERAL":
                parts.append((arg, arg))
            elif item == "RANGE" and _ANYTHING in (chr(arg[0]), chr(arg[1])):
                return _UNIVERSE  # a range from or to the engine's escape: at least that
            elif item == "RANGE":
                parts.append(tuple(arg))
            elif item == "CATEGORY" and str(arg) in _CATEGORY:
                name, out = _CATEGORY[str(arg)]
                cat = _category(name)
                parts.extend(_complement(cat) if out else cat)
            else:
                raise _Unknown(item)
        ranges = _merge(parts)
        if ignore:
            ranges = _fold_ranges(ranges)
        return _complement(ranges) if negate else _within(ranges, _UNIVERSE)

    def _repeat(self, av: Any, flags: int, greedy: bool) -> tuple[int, int]:
        import re._constants as c

        lo, hi, sub = av
        entry = at = self._node()
        for _ in range(lo):
            a, b = self.sequence(sub, flags)
            self.eps[at].append(a)
            at = b
        out = self._node()
        if hi == c.MAXREPEAT:  # a loop: one more copy, or out
            loop = self._node()
            self.eps[at].append(loop)
            a, b = self.sequence(sub, flags)
            self.eps[loop].extend([a, out] if greedy else [out, a])
            self.eps[b].append(loop)
            return entry, out
        for _ in range(hi - lo):  # the optional copies: each may go out instead
            a, b = self.sequence(sub, flags)
            self.eps[at].extend([a, out] if greedy else [out, a])
            at = b
        self.eps[at].append(out)
        return entry, out


def _union(masks: Any) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def _part(ranges: Ranges, lo: int, hi: int) -> Ranges:
    """``ranges`` within ``lo..hi``, from ``lo`` (as offsets)."""
    i = max(0, bisect.bisect_right(ranges, (lo, 0x110000)) - 1)
    out = []
    for a, b in ranges[i:]:
        if a > hi:
            break
        if b >= lo:
            out.append((max(a, lo) - lo, min(b, hi) - lo))
    return tuple(out)


def _inside(classes: tuple[Ranges, ...], work: _Work) -> int:
    """The states the engine's byte DFA may have inside a multi-byte character after a state
    whose next positions have ``classes``: the distinct ways a proper UTF-8 prefix splits them
    (per class, the code points it may still end as). A prefix under which each class holds
    all or none of its characters splits its longer prefixes alike, so those are not read."""
    seen: set[Any] = set()

    def walk(base: int, lo: int, hi: int, rest: int) -> None:
        """The prefix whose characters are ``lo..hi`` (``base``: the first it could write),
        ``rest`` continuation bytes to go."""
        work.spend(_PREFIX * len(classes))
        parts = tuple(_part(r, lo, hi) for r in classes)
        if not any(parts):
            return  # no class takes it: the engine's dead state
        seen.add((rest, base - lo, parts))
        if rest == 1:
            return
        size = 64 ** (rest - 1)
        whole = ((0, hi - lo),)
        if all(p in ((), whole) for p in parts) and lo == base and hi - lo + 1 == 64 * size:
            for r in range(rest - 1, 0, -1):  # each longer prefix: all or none, as here
                seen.add((r, 0, tuple(((0, 64 ** r - 1),) if p else () for p in parts)))
            return
        for c in range(64):
            a = base + c * size
            if a + size - 1 >= lo and a <= hi:
                walk(a, max(a, lo), min(a + size - 1, hi), rest - 1)

    for n, first, last in _LENGTHS:
        size = 64 ** (n - 1)
        for base in range(first - first % size, last + 1, size):
            walk(base, max(base, first), min(base + size - 1, last), n - 1)
    return len(seen)


def dfa_states(pattern: str, limit: int, *, most_positions: int = 50_000,
               budget: int = WORK_BUDGET) -> int | None:
    """The states of ``pattern``'s byte DFA (anchored at both ends; the module's doc says
    what is counted), counted up to ``limit + 1`` at most: a result over ``limit`` means
    "more than ``limit``", as it does for a pattern over ``most_positions`` positions once
    its counted repetitions are written out, or whose count spends ``budget`` units of work.
    None for a pattern this count does not model (Python cannot parse it, or a construct the
    engine refuses anyway: lookaround, backreferences)."""
    sizes = dfa_sizes(pattern, limit, most_positions=most_positions, budget=budget)
    return None if sizes is None else sizes[0]


Leads = dict[int, int]
"""Per mask of first bytes (bit b: a token's first byte may be b), how many states have it:
the states between characters by the bytes the next character may start with, and under
``CONTINUATION`` the states inside a character."""
_MARK_LEAD = 1 << 0xF4
"""The first byte of the mark after the pattern (``automaton.SENTINEL``, U+10FFFF), which a
final state also moves on."""
CONTINUATION = ((1 << 0x40) - 1) << 0x80
"""The first bytes from a state inside a character: UTF-8's continuation bytes, none of
which starts a character (so no state between characters has this mask)."""


def dfa_sizes(pattern: str, limit: int, *, most_positions: int = 50_000,
              budget: int = WORK_BUDGET) -> tuple[int, Leads] | None:
    """``dfa_states`` and, second, the states that lie between characters (the sets of
    positions, not the states inside a multi-byte character) by the first bytes the next
    character may have: from such a state, a token moves the automaton on only if its first
    byte is one of them, so the moves a token automaton has over a vocabulary are about
    the sum, over these states, of the tokens starting with one of its bytes (``.{200}``:
    201 of about 1,600 states, each open to nearly every token; ``a{1000}``: 1,001, each to
    the tokens starting with ``a``). Both counted as ``dfa_states`` counts, the second only
    as far as the first stays within ``limit``; the states inside a character under
    ``CONTINUATION``, and a final state's mask holds the first byte of the end mark it also
    moves on. An estimate (``estimated_moves``): over the library's moves on every pattern
    tried (JSON strings in arrays or unions about 2-4x; overlapping alternations inside
    counted repetitions, ``(?:x|[a-z]{0,4}|[a-c]{0,6}){8}``, 1.3x: 0.01x before the sets of
    positions were kept in the engine's priority order)."""
    import re._parser as parser

    work = _Work(budget)
    try:
        with warnings.catch_warnings():  # Python's notes on the engine's syntax (``[a&&b]``)
            warnings.simplefilter("ignore")
            parsed = parser.parse(_for_python(pattern))
        auto = _Positions(most_positions, work)
        entry, auto.end = auto.sequence(parsed, parsed.state.flags)
        return _count(auto, auto.follow(entry), limit, work)
    except _TooLarge:
        return limit + 1, {}
    except (_Unknown, re.error, RecursionError, OverflowError, ValueError, TypeError):
        return None


def _lead_bytes(ranges: Ranges) -> int:
    """The bytes a character of ``ranges`` (code points) may start with, as a 256-bit mask."""
    mask = 0
    for lo, hi in ranges:
        for bottom, top, shift, lead in ((0, 0x7F, 0, 0), (0x80, 0x7FF, 6, 0xC0),
                                         (0x800, 0xFFFF, 12, 0xE0),
                                         (0x10000, 0x10FFFF, 18, 0xF0)):
            a, b = max(lo, bottom), min(hi, top)
            if a <= b:
                first, last = lead | (a >> shift), lead | (b >> shift)
                mask |= ((1 << (last - first + 1)) - 1) << first
    return mask


def _count(auto: _Positions, start: tuple[Ordered, bool], limit: int, work: _Work
           ) -> tuple[int, Leads]:
    """``dfa_sizes`` of ``auto`` from ``start`` (the positions read first, by priority, and
    whether the pattern may be empty): a subset construction over ordered sets of
    positions."""
    first, empty = start
    classes = list(auto.classes)  # by index
    words = len(auto.kinds) // 64 + 1
    of_class = [0] * len(classes)  # per class: its positions
    for i, k in enumerate(auto.kinds):
        of_class[k] |= 1 << i
    ends = sorted({x for r in classes for lo, hi in r for x in (lo, hi + 1)} | {0})
    work.spend(len(ends) * len(classes) * _OP)
    matching = set()  # per interval between class ends: the positions its characters take
    for at in ends:
        mask = 0
        for k, r in enumerate(classes):
            i = bisect.bisect_right(r, (at, 0x110000)) - 1
            if i >= 0 and r[i][0] <= at <= r[i][1]:
                mask |= of_class[k]
        matching.add(mask)
    matching.discard(0)
    wide = [k for k, r in enumerate(classes) if r and r[-1][1] >= 0x80]
    inside: dict[tuple[int, ...], int] = {}

    def after(nexts: int) -> int:
        """The states inside a character after one whose next positions are ``nexts``."""
        key = tuple(k for k in wide if nexts & of_class[k])
        if key not in inside:  # a sixteenth more: the engine's UTF-8 states are not minimal
            least = _inside(tuple(classes[k] for k in key), work) if key else 0
            inside[key] = least + -(-least // _SLACK)  # (``(?:.|\\S+){0,4}``: 3% more)
        return inside[key]

    leads_of: dict[int, int] = {}
    leads: Leads = {}
    kinds = auto.kinds

    wide_mask = _union(of_class[k] for k in wide)
    wide_seen: set[Ordered] = set()

    def between(nexts: int, final: bool, wide_order: Ordered) -> int:
        """One more state between characters, whose next positions are ``nexts``: counted
        once per set of positions taken, as the engine keeps apart states whose next
        positions are the same (``(?:[^\\s]*){0,4}``'s start and loop; merging them gave
        0.5x the engine's moves), though for a JSON string's plain or escaped character it
        reaches one state (there, twice the moves)."""
        work.spend(_OP + nexts.bit_count())  # the classes of its positions, read below
        key, rest = 0, nexts  # the classes of those positions, as bits
        while rest:
            low = rest & -rest
            key |= 1 << kinds[low.bit_length() - 1]
            rest ^= low
        if key not in leads_of:
            ranges = tuple(r for k in range(key.bit_length()) if key >> k & 1
                           for r in classes[k])
            work.spend(_OP + len(ranges))
            leads_of[key] = _lead_bytes(ranges)
        lead = leads_of[key] | (_MARK_LEAD if final else 0)
        leads[lead] = leads.get(lead, 0) + 1
        if wide_order in wide_seen:
            return 0
        wide_seen.add(wide_order)
        within = after(nexts)  # the states inside a character after it
        if within:
            leads[CONTINUATION] = leads.get(CONTINUATION, 0) + within
        return within

    total = 3  # the start, ``START`` and ``SENTINEL`` (automaton._index)
    leads[CONTINUATION] = 3  # inside the end mark, after its first byte
    total += between(_union(first), empty, _runs(part & wide_mask for part in first))
    todo = [first]
    seen: set[Ordered] = set()
    follows = auto.follows
    while todo:
        nexts = todo.pop()  # the positions the next character may take, by priority
        if not nexts:
            continue
        work.spend(len(matching) * (_OP + words * len(nexts)))
        for mask in matching:
            state = _runs(part & mask for part in nexts) if len(nexts) > 1 else \
                tuple(part for part in (nexts[0] & mask,) if part)
            if not state or state in seen:
                continue
            seen.add(state)
            parts: list[int] = []  # the positions that may follow, by priority
            out, final, cost = 0, False, 0
            for part in state:
                while part:
                    low = part & -part
                    p = low.bit_length() - 1
                    then, ends = follows[p] if p in follows else auto.after_position(p)
                    cost += len(then) + 1
                    final |= ends
                    for more in then:
                        if more & ~out:
                            parts.append(more & ~out)
                            out |= more
                    part ^= low
            work.spend(cost * (2 * _OP + words))
            total += 1 + between(out, final, _runs(part & wide_mask for part in parts))
            if total > limit:
                return limit + 1, leads
            todo.append(_runs(parts))
    return total, leads


__all__ = ["CONTINUATION", "WORK_BUDGET", "Leads", "dfa_sizes", "dfa_states"]
