"""Form filling: a JSON template whose values are typed holes, filled in one diffusion pass.

Inside:

- ``parse_form(template)``: JSON text (or parsed JSON) → skeleton text pieces and
  ``FormHole`` s. A string value of the form ``"<type>"`` or ``"<type:args>"`` is a hole:

  ==============================  =============================================  =======
  hole                            value                                          default
  ==============================  =============================================  =======
  ``<text>`` ``<text:a-b>``       a JSON string of a to b characters (``:n``),   1-16
                                  a letter or digit first, no space last
  ``<digits>`` ``<digits:a-b>``   an integer of a to b digits, optional ``-``    1-6
  ``<int>``                       an integer of 1 to 6 digits, optional ``-``
  ``<int:LO..HI>``                an integer from LO to HI (exactly)
  ``<float>``                     ``-?digits.digits``, 2 to 8 digits in all
  ``<float:LO..HI>``              a decimal from LO to HI (``0.25..0.5`` too)
  ``<bool>``                      ``true`` or ``false``
  ``<choice:A|B|C>``              one of the strings (``\\|`` for a literal ``|``)
  ``<regex:R>``                   a JSON string whose text matches ``R``         16 chars
  ==============================  =============================================  =======

  Counts (``a-b``) are characters or digits, ``LO..HI`` a range of values; the old
  ``<int:a-b>`` (a digit count that read as a range) is refused with both new spellings.
  ``"\\\\<int>"`` (a backslash first) is the literal string ``"<int>"``.
- ``fill_form``: all holes masked at once in one canvas with the skeleton locked, and
  filled by the one sampler loop; returns a ``FormResult`` whose ``text`` always parses.

How the guarantee holds for any model: each hole is a fixed number of canvas positions
governed by one automaton over its whole span: an optional space (a number or ``true``
after ``": "`` takes the skeleton's space in, as template gaps do, so a byte-level BPE may
write ``" 42"``), the value (string characters without ``"``, ``\\`` or control
characters, closing quote included; a ``<text>`` value may start with a space-led word
whose space the output drops), then spaces, which JSON allows after a value. The
automaton is applied to the logits at every step and spans it rejects are refilled
(``unmask.infill.fill_canvas``), so every span is a valid value.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import json.scanner
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import torch

from unmask.config import SampleConfig
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.infill.automaton import (
    SENTINEL,
    START,
    TokenAutomaton,
    Vocab,
    cached_automaton,
    check_size,
    check_syntax,
    check_total,
    quote_pattern,
    vocab_of,
    whole_pattern,
)
from unmask.infill.fill import _max_seq_len, fill_canvas, skipping
from unmask.infill.ordered import form_span
from unmask.infill.template import (
    is_count,
    joins_spaces,
    layouts_canvas,
    segment_ids,
    split_choices,
)
from unmask.messages import plural
from unmask.sampling.loop import MaskPredictor, StepCallback

HOLE_TYPES = ("text", "digits", "int", "float", "bool", "choice", "regex")
QUOTED = ("text", "choice", "regex")
"""Hole types whose value is a JSON string (the skeleton opens its quote)."""
_HOLE = re.compile(r"<([A-Za-z_]+)(?::(.*))?>", re.DOTALL)
MAX_REGEX_CHARS = 16
"""Longest text, in characters, a ``<regex:...>`` hole with an unbounded pattern may hold
(or its shortest match, when that is longer), whatever the tokenizer."""

JSON_CHAR = r'[^"\\\x00-\x1f\x7f' + START + SENTINEL + "]"
"""A character a JSON string may hold unescaped: no '"', no '\\', no control character, and
not the two noncharacters ``_index`` brackets every pattern with. Were ``START`` a text
character, the engine's unanchored DFA (built in full, never read) would track a possible
match start at every character of a counted run: ``<text:1-14>`` took 2.4 s to compile,
each further character doubling it (``<text:1-20>``: minutes); without it, milliseconds.
(``automaton.guard_pattern`` now leaves them out of every pattern's classes; naming them
here keeps this class's meaning explicit.)"""
DIGIT = "[0-9]"
NONZERO = "[1-9]"
TEXT_FIRST = (r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\xbf\x{2000}-\x{206f}\x{3000}-\x{303f}"
              + START + SENTINEL + "]")
"""What a ``<text>`` value starts with: an ASCII letter or digit, or a non-ASCII character
outside Latin-1's symbols, General Punctuation (``’ “ — …``, the wide spaces) and CJK
punctuation. (Byte ranges only: Unicode's word class split the byte classes of every state
of a counted run, and a 500-character string took four times as long to compile.)"""
TEXT_LAST = r'[^"\\\x00-\x20\x7f\xa0\x{2000}-\x{200b}\x{3000}' + START + SENTINEL + "]"
"""What a ``<text>`` value ends with: a JSON string character that is not a space."""


def text_value(lo: int, hi: int | None) -> str:
    """The text of a ``<text:lo-hi>`` hole or a plain schema string, without the quotes:
    ``lo`` to ``hi`` (None: any number of) JSON string characters that start with a letter
    or digit (``TEXT_FIRST``) and do not end with a space (``TEXT_LAST``); or nothing when
    ``lo`` is 0. Any JSON string text let the demo fill ``<text:5>`` with ``" John"`` (a
    byte-level BPE writes a word as a space-led token) and others with ``":"`` or ``" 1"``;
    that leading space is now dropped (``FormHole.inner_space``). (One chain of states:
    "some letter or digit anywhere", intersected with a counted run, multiplied its states:
    200 characters went over the automaton limit.)"""
    parts = [""] if lo == 0 else []
    if lo <= 1 and (hi is None or hi >= 1):
        parts.append(TEXT_FIRST)
    if hi is None or hi >= 2:
        rest = _rep(JSON_CHAR, max(lo - 2, 0), None if hi is None else hi - 2)
        parts.append(TEXT_FIRST + rest + TEXT_LAST)
    return _alt(*parts)


@dataclass
class FormHole:
    """One typed hole of a form template, and (after filling) its value."""

    path: str
    """Where it sits, e.g. ``$.person.name`` or ``$.tags[0]``."""
    spec: str
    """The hole as written, e.g. ``<int:1-3>``."""
    kind: str
    """``text``, ``int``, ``float``, ``bool``, ``choice`` or ``regex``."""
    width: int
    """Canvas positions (tokens) it gets: the longest value in bytes, plus the closing quote,
    plus one for a space taken in."""
    quoted: bool = False
    """A JSON string: its opening quote is part of the skeleton, the closing one of the hole."""
    space: bool = False
    """The hole took in the space before it (``": "``), so a byte-level BPE may write the value
    as it writes a word after a space (``" 42"``); the text keeps the space either way."""
    inner_space: bool = False
    """A string whose text may start with a space the output drops (``<text>``, a plain
    schema string): a byte-level BPE writes a word as a space-led token (``" John"``), and
    the value is ``"John"``, as a gap at the start of a text drops its virtual space."""
    text: str = ""
    """The filled JSON text of the value (after filling)."""
    value: Any = None
    """The parsed value (after filling)."""
    composite: bool = False
    """An array or object (or a value that may be one) as one hole (a schema's list of any
    length): its punctuation is part of its tokens, so a bound on each value
    (``max_tokens``) is not held to its shortest answer."""
    regex: str = ""
    """The language of the value's JSON text (outlines-core syntax; for a quoted value the
    text after the opening quote, closing quote included)."""
    value_automaton: TokenAutomaton | None = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)

    def written(self, raw: str) -> str:
        """The hole's text in the output for the text ``raw`` of its tokens: the skeleton's
        space put back (``space``), a string's leading space dropped (``inner_space``)."""
        if self.space and not raw.startswith(" "):
            raw = " " + raw
        cut = int(self.space) + int(not self.quoted)  # where the string's text starts
        if self.inner_space and raw[cut : cut + 1] == " ":
            raw = raw[:cut] + raw[cut + 1 :]
        return raw

    def matches(self, text: str) -> bool:
        """Whether ``text`` is a value this hole may hold (its JSON text, as ``regex``)."""
        assert self.value_automaton is not None
        return self.value_automaton.accepts_text(text, self.tokenizer)


@dataclass
class FormResult:
    """What ``fill_form`` returns."""

    text: str
    """The filled JSON text: the template's text with each value written in (the spaces that
    padded a value to its hole's width on the canvas dropped)."""
    value: Any
    """``json.loads(text)``."""
    holes: list[FormHole]
    nfe: int
    """Model evaluations (repairs included)."""
    repaired: int = 0
    """Holes refilled because a first pass broke them."""
    tokens: list[int] = field(default_factory=list)
    """Token ids of ``text`` (``tokenizer.decode(tokens) == text``)."""

    def pretty(self, indent: int | None = 2) -> str:
        """``value`` as indented JSON."""
        return json.dumps(self.value, indent=indent, ensure_ascii=False)


# -- hole languages ---------------------------------------------------------------------------


def _bounds(args: str | None, default: tuple[int, int], where: str, unit: str,
            least: int = 0) -> tuple[int, int]:
    """``N`` or ``MIN-MAX``, a count of ``unit`` (characters, digits)."""
    if args is None or args == "":
        return default
    lo_s, dash, hi_s = args.partition("-")
    if not is_count(lo_s.strip()) or (dash and not is_count(hi_s.strip())):
        raise UserError(f"{where}: bad length {quote_pattern(args)}; use N or MIN-MAX {unit} "
                        "(ASCII digits)")
    lo = int(lo_s)
    hi = int(hi_s) if dash else lo
    if hi < lo:
        raise UserError(f"{where}: bounds inverted (min {lo} > max {hi} {unit})")
    if lo < least:
        one = unit.removesuffix("s") if least == 1 else unit  # "at least 1 digits"
        raise UserError(f"{where}: length must be at least {least} {one}, got {lo}")
    if hi > 1000:
        raise UserError(f"{where}: length over 1000 {unit}")
    return lo, hi


_RANGE = re.compile(r"\s*(-?[0-9]{1,18})\s*\.\.\s*(-?[0-9]{1,18})\s*")  # ASCII (is_count)
_DECIMAL = r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?"
_DECIMAL_RANGE = re.compile(rf"\s*({_DECIMAL})\s*\.\.\s*({_DECIMAL})\s*")


def _value_range(kind: str, args: str | None, where: str) -> tuple[Decimal, Decimal] | None:
    """``LO..HI`` of an ``int`` or ``float`` hole (None: no arguments); a ``float``'s bounds
    may have decimals (``<float:0.5..2.25>``). Counts (``1-3``, ``3``) are refused: users
    read ``<int:1-3>`` as a number from 1 to 3, it used to mean 1 to 3 digits; the message
    shows both unambiguous spellings."""
    if args is None or args == "":
        return None
    m = (_DECIMAL_RANGE if kind == "float" else _RANGE).fullmatch(args)
    if m is None:
        lo_s, dash, hi_s = args.partition("-")
        if is_count(lo_s.strip()) and (not dash or is_count(hi_s.strip())):
            lo, hi = lo_s.strip(), hi_s.strip()
            if kind == "float":
                new = (f"<float:{lo}..{hi}> for a number from {lo} to {hi}" if dash else
                       "<float:LO..HI> for a number from LO to HI")
                raise UserError(f"{where}: ambiguous (it counted digits); write {new}, or <float> "
                                f"for any number of at most {FLOAT_DIGITS} digits")
            digits = (f"<digits:{lo}-{hi}> for an integer of {lo} to {hi} digits" if dash else
                      f"<digits:{lo}> for an integer of {lo} digits")
            value = (f"<int:{lo}..{hi}> for a number from {lo} to {hi}" if dash else
                     "<int:LO..HI> for a number from LO to HI")
            raise UserError(f"{where}: ambiguous; write {digits}, or {value}")
        raise UserError(f"{where}: bad range {quote_pattern(args)}; use <{kind}:LO..HI>, e.g. "
                        f"<{kind}:1..12>")
    lo, hi = Decimal(m.group(1)), Decimal(m.group(2))
    if hi < lo:
        raise UserError(f"{where}: range inverted (from {lo} > to {hi})")
    return lo, hi


def _alt(*parts: str) -> str:
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _rep(node: str, lo: int, hi: int | None) -> str:
    return f"(?:{node}){{{lo},{'' if hi is None else hi}}}"


def _int_node(lo: int, hi: int) -> str:
    """An integer with ``lo``..``hi`` digits and no leading zero."""
    branches = []
    if lo <= 1:
        branches.append("0")
    if hi >= 1:
        branches.append(NONZERO + _rep(DIGIT, max(lo, 1) - 1, hi - 1))
    return _alt(*branches)


def _same_length(lo: str, hi: str) -> str:
    """Digit strings s of ``len(lo) == len(hi)`` with ``lo <= s <= hi`` (numerically).

    A first digit whose rest may be anything (``lo``'s rest all zeros, ``hi``'s all nines)
    joins the middle class, so only one branch recurses on each side: O(digits) branches.
    Recursing into both (``0..9`` then ``00..99``...) doubled them per digit, and a range
    up to 10^11 took a minute to compile."""
    if not lo:
        return ""
    if lo[0] == hi[0]:
        return lo[0] + _same_length(lo[1:], hi[1:])
    k = len(lo) - 1
    low_free, high_free = lo[1:] == "0" * k, hi[1:] == "9" * k
    first, last = int(lo[0]) + (not low_free), int(hi[0]) - (not high_free)
    parts = [] if low_free else [lo[0] + _same_length(lo[1:], "9" * k)]
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        parts.append(digit + (_rep(DIGIT, k, k) if k else ""))
    if not high_free:
        parts.append(hi[0] + _same_length("0" * k, hi[1:]))
    return _alt(*parts)


def _naturals(a: int, b: int) -> dict[int, str]:
    """The naturals from ``a`` to ``b`` (0 <= a <= b) without leading zeros, by digit count."""
    out: dict[int, str] = {}
    for n in range(len(str(a)), len(str(b)) + 1):
        lo, hi = max(a, 10 ** (n - 1) if n > 1 else 0), min(b, 10**n - 1)
        if lo <= hi:
            out[n] = _same_length(str(lo), str(hi))
    return out


def int_range(lo: int, hi: int) -> str:
    """The integers from ``lo`` to ``hi`` as JSON writes them, exactly, as a regex (no leading
    zeros, no ``-0``). The regex engine has no numeric ranges (nor has outlines-core's JSON
    Schema compiler: it ignores ``minimum``/``maximum``), so they are spelt digit by digit."""
    parts = []
    if hi >= 0:
        parts.extend(_naturals(max(lo, 0), hi).values())
    if lo < 0:
        parts.append("-" + _alt(*_naturals(max(-hi, 1), -lo).values()))
    return _alt(*parts)


FLOAT_DIGITS = 8
"""Digits in all (integer part and decimals) of a ``<float>`` or ``<float:LO..HI>`` value."""
FREE_DECIMALS = 2
"""Decimals a value may have beyond the most its range's bounds have (a range with a bound of
2 decimals, ``0.25``, admits values of up to 4 decimals, more where ``FLOAT_DIGITS`` allows),
so a range as narrow as its bounds' last digit still has values inside it."""


def decimal_digits(d: Decimal) -> str:
    """The decimals of ``d`` without trailing zeros, exactly (no arithmetic: the decimal
    context would round a bound of 29+ digits)."""
    return format(d, "f").partition(".")[2].rstrip("0")


def _decimal_text(d: Decimal) -> tuple[int, str]:
    """(integer part, decimals without trailing zeros) of a non-negative decimal."""
    return int(d), decimal_digits(d)


def decimal_places(*bounds: Decimal | int) -> int:
    """Most decimals a value of a range with these bounds may need beyond ``FLOAT_DIGITS``'s
    rule: none for integer bounds, else the bounds' decimals and ``FREE_DECIMALS``."""
    most = max(len(decimal_digits(Decimal(b))) for b in bounds)
    return most + FREE_DECIMALS if most else 0


def _fraction(lo: str | None, lo_open: bool, hi: str | None, hi_open: bool,
              least: int, most: int) -> str | None:
    """Digit strings F of ``least``..``most`` digits with ``0.lo <= 0.F <= 0.hi`` (``<``
    where open); ``lo``/``hi`` are digits without trailing zeros (``""``: 0), None: that
    side unbounded. None: no such F. One branch recurses per side, so O(``most``) branches."""
    least = max(least, 0)
    empty_ok = (lo is None or (lo == "" and not lo_open)) and not (hi == "" and hi_open)
    if most == 0:
        return "" if empty_ok and least == 0 else None
    if hi == "":  # at most 0: zeros
        return _rep("0", least, most) if empty_ok else None
    if lo == "" and not lo_open:
        lo = None
    if lo is None and hi is None:
        return _rep(DIGIT, least, most)
    low = int(lo[0]) if lo else 0
    high = (int(hi[0]) if hi else 0) if hi is not None else 9
    rest_lo = None if lo is None else lo[1:]
    rest_hi = None if hi is None else hi[1:]
    parts = []
    if lo is not None and hi is not None and low == high:
        sub = _fraction(rest_lo, lo_open, rest_hi, hi_open, least - 1, most - 1)
        parts += [] if sub is None else [str(low) + sub]
    else:
        first, last = low, high
        if lo is not None and (rest_lo or lo_open):  # else its rest is free: the middle class
            first += 1
            sub = _fraction(rest_lo, lo_open, None, False, least - 1, most - 1)
            parts += [] if sub is None else [str(low) + sub]
        if hi is not None:
            last -= 1
        if first <= last:
            digit = str(first) if first == last else f"[{first}-{last}]"
            parts.append(digit + _rep(DIGIT, max(least - 1, 0), most - 1))
        if hi is not None:
            sub = _fraction(None, False, rest_hi, hi_open, least - 1, most - 1)
            parts += [] if sub is None else [str(high) + sub]
    if not parts:
        return "" if empty_ok and least == 0 else None
    body = _alt(*parts)
    return f"(?:{body})?" if empty_ok and least == 0 else body


def _magnitudes(a: Decimal, a_open: bool, b: Decimal, b_open: bool, places: int) -> list[str]:
    """Decimals ``I.F`` from ``a`` to ``b`` (0 <= a <= b; ``<`` where open) with at least one
    decimal and at most ``max(FLOAT_DIGITS - len(I), places)``: ``I`` is ``a``'s integer
    part with ``F`` above its decimals, any ``I`` between with any ``F``, or ``b``'s integer
    part with ``F`` below its decimals."""

    def most(whole: int) -> int:  # decimals after this integer part
        return max(1, FLOAT_DIGITS - len(str(whole)), places)

    (low, low_frac), (high, high_frac) = _decimal_text(a), _decimal_text(b)
    if low == high:
        sides = [(low, _fraction(low_frac, a_open, high_frac, b_open, 1, most(low)))]
    else:
        sides = [(low, _fraction(low_frac, a_open, None, False, 1, most(low))),
                 (high, _fraction(None, False, high_frac, b_open, 1, most(high)))]
    parts = [f"{whole}\\.{frac}" for whole, frac in sides[:1] if frac is not None]
    if high - low > 1:
        for n, whole in _naturals(low + 1, high - 1).items():
            parts.append(whole + r"\." + _rep(DIGIT, 1, most(10 ** (n - 1))))
    parts += [f"{whole}\\.{frac}" for whole, frac in sides[1:] if frac is not None]
    return parts


def float_range(lo: Decimal | int, hi: Decimal | int, *, lo_open: bool = False,
                hi_open: bool = False) -> str:
    """Decimals (at least one decimal digit) with a value from ``lo`` to ``hi``, exactly, as a
    regex; ``lo_open``/``hi_open``: the bound itself excluded. At most ``FLOAT_DIGITS``
    digits in all, or the bounds' decimals and ``FREE_DECIMALS`` more (``decimal_places``);
    no ``-0.0``. ``ValueError`` when no decimal lies in the range."""
    lo, hi = Decimal(lo), Decimal(hi)
    places = decimal_places(lo, hi)
    parts = []
    if hi > 0 or (hi == 0 and not hi_open):
        a, a_open = (lo, lo_open) if lo >= 0 else (Decimal(0), False)
        if a < hi or (a == hi and not (a_open or hi_open)):
            parts += _magnitudes(a, a_open, hi, hi_open, places)
    if lo < 0:  # magnitudes above 0, no -0.0
        a, a_open = (hi.copy_negate(), hi_open) if hi < 0 else (Decimal(0), True)
        b = lo.copy_negate()
        if a < b or (a == b and not (a_open or lo_open)):
            parts += ["-" + _alt(*_magnitudes(a, a_open, b, lo_open, places))]
    if not parts:
        raise ValueError(f"no decimal lies between {lo} and {hi}")
    return _alt(*parts)


def _automaton(pattern: str, tokenizer: Any, where: str) -> TokenAutomaton:
    return value_automaton(pattern, None, tokenizer, where)


def value_automaton(regex: str, bound: str | None, tokenizer: Any, where: str
                    ) -> TokenAutomaton:
    """The automaton of a value's text: ``regex``, intersected with ``bound`` when given;
    once per (tokenizer, regex, bound), shared by ``unmask.infill.schema`` (which sizes a
    value's hole with it) and the form's hole (``_hole``), which compiled it each again."""

    def build() -> TokenAutomaton:
        out = TokenAutomaton.from_regex(regex, vocab_of(tokenizer), what=where)
        if bound is not None:
            out = out.intersect(value_automaton(bound, None, tokenizer, where), what=where)
        return out

    return cached_automaton(tokenizer, ("value", regex, bound), build)


Lang = tuple[str, int, bool, "str | None"]
"""(regex of the value text, longest value in tokens, whether the skeleton opens a quote,
a second regex the value text must match too, or None)."""


def _hole_regex(kind: str, args: str | None, where: str, tokenizer: Any) -> Lang:
    """The language of a hole's value (``Lang``)."""
    if kind == "text":
        lo, hi = _bounds(args, (1, 16), where, "characters")
        return text_value(lo, hi) + '"', hi + 1, True, None
    if kind == "digits":
        lo, hi = _bounds(args, (1, 6), where, "digits", least=1)
        return "-?" + _int_node(lo, hi), hi + 1, False, None
    if kind in ("int", "float"):
        bounds = _value_range(kind, args, where)
        if bounds is None and kind == "int":
            node = "-?" + _int_node(1, 6)
        elif bounds is None:
            node = "-?" + _alt(*(
                _int_node(i, i) + r"\." + _rep(DIGIT, f, f)
                for i in range(1, FLOAT_DIGITS) for f in range(1, FLOAT_DIGITS - i + 1)))
        else:
            node = int_range(*map(int, bounds)) if kind == "int" else float_range(*bounds)
        return node, int(_automaton(node, tokenizer, where).max_tokens() or 1), False, None
    if kind == "bool":
        if args:
            raise UserError(f"{where}: <bool> takes no arguments")
        return "true|false", 5, False, None
    if kind == "choice":
        if not args:
            raise UserError(f"{where}: <choice:...> needs choices, e.g. <choice:red|green|blue>")
        choices = split_choices(args)
        if not any(choices):  # <choice:|>: nothing to choose from (a gap refuses it too)
            raise UserError(f"{where}: <choice:...> lists no choice, only empty ones; write "
                            "e.g. <choice:red|green|blue>")
        # content + '"'
        encoded = [json.dumps(c, ensure_ascii=False)[1:] for c in choices]
        width = max(len(e.encode("utf-8")) for e in encoded)
        return _alt(*(re.escape(e) for e in encoded)), width, True, None
    if kind == "regex":
        return _regex_hole(args, where, tokenizer)
    raise UserError(f"{where}: unknown hole type {quote_pattern(kind)}; choose one of "
                    f"{', '.join(HOLE_TYPES)}")


def _regex_hole(args: str | None, where: str, tokenizer: Any) -> Lang:
    """A JSON string matching the user's regex: its text must also be JSON-safe (no quote,
    backslash or control character), and at most ``MAX_REGEX_CHARS`` characters when the
    regex is unbounded (or its shortest match, when that is longer)."""
    if not args:
        raise UserError(f"{where}: <regex:...> needs a pattern")
    # as written, its syntax alone (an error's column points into it) and its size: compiled
    # in full over bytes here, it cost as much as its automaton below, once more
    check_syntax(args, f"{where}: regex")
    check_size(args, f"{where}: regex")
    args = whole_pattern(args)
    user = _automaton(args, tokenizer, f"{where}: regex")
    safe = user.intersect(_automaton(JSON_CHAR + "*", tokenizer, where), what=where)
    shortest = safe.min_tokens()
    if shortest is None:
        raise UserError(f"{where}: no text matching the regex can stand in a JSON string")
    longest = safe.max_tokens()
    bound = JSON_CHAR + "*"
    if longest is None:  # unbounded: at most MAX_REGEX_CHARS characters (or its shortest)
        longest = max(MAX_REGEX_CHARS, shortest)
        bound = _rep(JSON_CHAR, 0, longest)
    return f'(?:{args})"', longest + 1, True, bound + '"'


@dataclass(frozen=True)
class ValueHole:
    """A hole given as a language rather than a ``"<type>"`` string: any JSON value text that
    ``regex`` matches, in ``width`` tokens at most (``unmask.infill.schema`` builds these from
    JSON Schema)."""

    regex: str
    width: int
    spec: str = "<json>"
    """How messages and results name it (``<schema:...>``)."""
    bound: str | None = None
    """A second language the value must also be in (the automata are intersected): a
    string's length where ``regex`` is its pattern."""
    inner_space: bool = False
    """``regex`` (and ``bound``) are of a JSON string (starting with ``"``) whose text may
    start with a space that the output drops (``FormHole.inner_space``)."""
    composite: bool = False
    """An array or object (or a value that may be one): ``FormHole.composite``."""


def _hole(
    spec: str | ValueHole, path: str, tokenizer: Any, *, space: bool = False
) -> tuple[FormHole, TokenAutomaton]:
    """The hole ``spec`` at ``path`` and its automaton: the value, then spaces; with ``space``
    (the hole took in the skeleton's space before it) an optional space first."""
    if isinstance(spec, ValueHole):
        kind, where = "json", f"hole {path} {spec.spec}"
        regex, width, quoted, bound = spec.regex, spec.width, False, spec.bound
        name, inner = spec.spec, spec.inner_space and joins_spaces(tokenizer)
    else:
        m = _HOLE.fullmatch(spec)
        assert m is not None
        kind, args = m.group(1), m.group(2)
        # a long spec cut (a <choice:...> of 5,000 words was quoted whole: 40,000 characters)
        shown = quote_pattern(spec)
        where = f"hole {path} {shown}"
        regex, width, quoted, bound = _hole_regex(kind, args, where, tokenizer)
        assert quoted == (kind in QUOTED)
        name, inner = spec, kind == "text" and joins_spaces(tokenizer)
    width += int(space) + int(inner)
    lead = " ?" if space else ""

    def spaced(r: str) -> str:
        """``r`` with an optional space where the string's text starts (``inner``)."""
        if not inner:
            return r
        if quoted:  # the opening quote is skeleton
            return f" ?(?:{r})"
        assert r.startswith('"'), r
        return f'" ?(?:{r[1:]})'

    def build() -> TokenAutomaton:
        out = TokenAutomaton.from_regex(f"{lead}(?:{spaced(regex)}) *", vocab_of(tokenizer),
                                        what=where)
        if bound is not None:  # value, then spaces: both languages
            other = TokenAutomaton.from_regex(f"(?:{spaced(bound)}) *", vocab_of(tokenizer),
                                              what=where)
            out = out.intersect(other, what=where)
        return out

    automaton = cached_automaton(tokenizer, ("form", regex, bound, space, inner), build)
    if not automaton.feasible_lengths(width)[width]:
        raise UserError(f"{where}: no sequence of {plural(width, 'token')} satisfies it "
                        "with this tokenizer")
    value = value_automaton(regex, bound, tokenizer, where)
    hole = FormHole(path=path, spec=name, kind=kind, width=width, quoted=quoted, space=space,
                    inner_space=inner, regex=regex, value_automaton=value, tokenizer=tokenizer,
                    composite=isinstance(spec, ValueHole) and spec.composite)
    return hole, automaton


# -- templates --------------------------------------------------------------------------------


class _Repeated(dict[str, Any]):
    """An object ``load_json`` read with a key given twice: its members as JSON keeps them
    (a repeated key's last value), ``key`` the first key repeated and ``nth`` the object's
    number in the order the parser ends objects."""

    key: str
    nth: int


def _objects(doc: Any) -> Iterator[Any]:
    """Every object (dict) of parsed JSON, at any depth."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _repeat_at(text: str, repeats: list[_Repeated]) -> tuple[int, str] | None:
    """Index in ``text`` and name of the first key (in the text's order) that an object of
    ``repeats`` gives a second time, read again with the pure-Python parser, whose object
    reader knows where each object starts (an error path only: the C parser gives no
    positions); ``None`` where that parser cannot follow the nesting."""
    wanted = {r.nth for r in repeats}
    order = itertools.count()
    found: list[tuple[int, str]] = []
    skip = json.JSONDecoder()  # the values between keys: read fast, no hook
    space = json.decoder.WHITESPACE.match

    def second_key(s: str, pos: int) -> tuple[int, str]:
        seen = set()
        while True:  # a well-formed object: the first parse read it
            pos = space(s, pos).end()
            key, pos_after = json.decoder.scanstring(s, pos + 1)
            if key in seen:
                return pos, key
            seen.add(key)
            pos = space(s, space(s, pos_after).end() + 1).end()  # past the ':'
            pos = space(s, skip.raw_decode(s, pos)[1]).end() + 1  # past the value and ','

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        nth, end = json.decoder.JSONObject(s_and_end, *args)  # type: ignore[attr-defined]
        if nth in wanted:
            found.append(second_key(*s_and_end))
        return nth, end

    reader = json.JSONDecoder(object_pairs_hook=lambda pairs: next(order))
    reader.parse_object = parse_object  # type: ignore[attr-defined]
    reader.scan_once = json.scanner.py_make_scanner(reader)  # type: ignore[attr-defined]
    try:
        reader.decode(text)
    except RecursionError:
        return None
    return min(found)


def load_json(text: str, source: str,
              read: Callable[[Any], Iterable[Any]] = _objects, *, within: str = "") -> Any:
    """``json.loads(text)`` for text a user gave (a form, a schema): a ``UserError`` naming
    ``source`` for broken JSON, nesting too deep to parse, numbers too long to convert, or
    an object with a key twice, with the line and column of its second (JSON keeps the last:
    a template's first hole of that name vanished from the output, a schema's first
    ``properties`` went unenforced, silently). ``read``: the objects of the parsed document
    whose keys mean something (all of them by default; a schema's annotations, which nothing
    reads, are left out by ``unmask.infill.schema``): a key repeated in another is let
    through, its last value kept. ``within``: what the line and column count in, said after
    them where ``text`` is more than the document (`` of the request body``)."""
    order = itertools.count()
    repeats: list[_Repeated] = []

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nth = next(order)
        out = dict(pairs)
        if len(out) == len(pairs):  # the fast path: one C call per object
            return out
        repeated, seen = _Repeated(out), set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        repeated.key, repeated.nth = key, nth
        repeats.append(repeated)
        return repeated

    if not text.strip():  # an empty file: "invalid JSON at line 1 column 1: Expecting value"
        raise UserError(f"{source}: empty; it holds no JSON")
    try:
        doc = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as e:
        # a regex written as is ("<regex:\d+>", "pattern": "\w"): JSON says only "Invalid
        # \escape", and the user who meant the regex's backslash is left to guess
        hint = (r' (a backslash inside a JSON string is written \\: "\\d" for the regex \d)'
                if e.msg.startswith("Invalid \\escape") else "")
        raise UserError(
            f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}{hint}"
        ) from None
    except RecursionError:
        raise UserError(f"{source}: JSON nested too deep") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise UserError(f"{source}: invalid JSON ({e})") from None
    meant = {id(node) for node in read(doc)} if repeats else set()
    live = [r for r in repeats if id(r) in meant]
    if not live:
        return doc
    at = _repeat_at(text, live)
    key, where = live[0].key, ""
    if at is not None:
        spot = json.JSONDecodeError("", text, at[0])  # its line and column
        key, where = at[1], (f", the second time at line {spot.lineno} column {spot.colno}"
                             f"{within}")
    raise UserError(f"{source}: the key {quote_pattern(key)} is given twice in one object"
                    f"{where} (JSON would keep only the last)")


MAX_DEPTH = 128
"""Deepest nesting of objects and arrays in a form or schema (``check_unicode``): the walks
that lay out a form and read a schema recurse, and a document nested a few hundred deep
overflowed Python's stack (a RecursionError: a traceback from ``unmask fill-form``, a 500
from ``/v1/forms`` and ``guided_json``)."""


def check_unicode(doc: Any, source: str) -> None:
    """A ``UserError`` naming ``source`` when a string of ``doc`` (parsed JSON: keys and values,
    at any depth) holds an unpaired surrogate such as ``\\ud800``: valid JSON, but no text a
    tokenizer can encode; or when ``doc`` nests deeper than ``MAX_DEPTH``."""
    stack = [(doc, 0)]
    while stack:  # iterative: a form may nest thousands deep
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)) and depth == MAX_DEPTH:
            raise UserError(f"{source}: nested deeper than {MAX_DEPTH} levels of objects and "
                            "arrays")
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(
                    f"{source}: the string {node[:40]!r} holds an unpaired surrogate (not "
                    "valid UTF-8)"
                ) from None
        elif isinstance(node, dict):
            stack.extend((k, depth) for k in node)  # a key is a string: no level of its own
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _load(template: str | Any, source: str) -> Any:
    doc = load_json(template, source) if isinstance(template, str) else template
    check_unicode(doc, source)
    return doc


def parse_form(
    template: str | Any, tokenizer: Any, *, source: str = "form template",
    max_seq_len: int | None = None,
) -> tuple[list[tuple[str, Any]], list[FormHole], list[TokenAutomaton]]:
    """Skeleton and holes of a form template (JSON text, or already parsed JSON).

    Returns layout items (``("text", str)`` skeleton pieces or ``("hole", k)``), the holes
    and their automata. ``UserError`` for invalid JSON (with line and column), an unknown
    hole type, bad bounds or a hole no token sequence can fill. ``max_seq_len``: a form
    whose ``<text>`` and ``<digits>`` holes alone, at their widest, exceed it is refused
    before any hole compiles (``_widest``).
    """
    value = _load(template, source)
    if max_seq_len is not None:
        _check_widest(value, source, max_seq_len)
    items: list[tuple[str, Any]] = []
    holes: list[FormHole] = []
    automata: list[TokenAutomaton] = []
    buf: list[str] = []

    def text(s: str) -> None:
        buf.append(s)

    def emit(v: Any, path: str) -> None:
        if isinstance(v, dict):
            text("{")
            for i, (k, sub) in enumerate(v.items()):
                text((", " if i else "") + json.dumps(k, ensure_ascii=False) + ": ")
                plain = re.fullmatch(r"[A-Za-z_]\w*", k)
                emit(sub, f"{path}.{k}" if plain else f"{path}[{json.dumps(k)}]")
            text("}")
        elif isinstance(v, list):
            text("[")
            for i, sub in enumerate(v):
                if i:
                    text(", ")
                emit(sub, f"{path}[{i}]")
            text("]")
        elif isinstance(v, ValueHole) or (isinstance(v, str) and (m := _HOLE.fullmatch(v))):
            # A value after ": " or ", " takes that space in, as template gaps do (BPE spacing).
            skeleton = "".join(buf)
            unquoted = isinstance(v, ValueHole) or m.group(1) not in QUOTED
            space = unquoted and skeleton.endswith(" ") and joins_spaces(tokenizer)
            try:
                hole, automaton = _hole(v, path, tokenizer, space=space)
            except UserError as e:  # named like the form's other errors
                raise UserError(f"{source}: {e}") from None
            buf.clear()
            skeleton = (skeleton[:-1] if space else skeleton) + ('"' if hole.quoted else "")
            if skeleton:
                items.append(("text", skeleton))
            holes.append(hole)
            automata.append(automaton)
            items.append(("hole", len(holes) - 1))
        elif isinstance(v, str) and v.startswith("\\<"):
            text(json.dumps(v[1:], ensure_ascii=False))  # an escaped literal "<...>"
        else:
            try:
                text(json.dumps(v, ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError):
                raise UserError(f"{source}: value at {path} is not JSON ({v!r})") from None

    check_total(_languages(value, "$"), source)  # before any of them compiles
    emit(value, "$")
    if buf:
        items.append(("text", "".join(buf)))
    if not holes:
        key = _hole_key(value)
        raise UserError(
            f'{source}: no holes; write values such as "<text:2-8>", "<int>" or "<choice:a|b>"'
            + (f" (a key is never a hole: {quote_pattern(key)} is a key)" if key else "")
        )
    return items, holes, automata


def _hole_key(v: Any) -> str | None:
    """The first key of ``v`` (parsed JSON) written as a hole (``{"<text>": 1}``), which
    ``parse_form`` reads as text: a form of such keys only was refused as having "no holes"
    without saying why."""
    return next((k for node in _objects(v) for k in node if _HOLE.fullmatch(k)), None)


def _widest(v: Any) -> int:
    """Canvas positions the ``<text:a-b>`` and ``<digits:a-b>`` holes of a form take at their
    widest (a value's characters or digits, and its closing quote or sign), read from their
    specs, without compiling them: a lower bound on what ``fill_form`` lays out. Those holes
    take up to 1,000 characters, and compile in about 20 ms a character, so a form far over
    the model's context (``<text:800>`` at 256) was refused only after 15 s of compiling."""
    total, stack = 0, [v]
    while stack:  # iterative: a form may nest thousands deep
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and (m := _HOLE.fullmatch(node)) and m.group(1) in (
                "text", "digits"):
            try:
                default = (1, 16) if m.group(1) == "text" else (1, 6)
                total += _bounds(m.group(2), default, "", "")[1] + 1
            except UserError:  # parse_form says what is wrong where
                pass
    return total


def _check_widest(value: Any, source: str, max_seq_len: int) -> None:
    """``UserError`` when a form's ``_widest`` holes alone cannot fit ``max_seq_len``."""
    widest = _widest(value)
    if widest > max_seq_len:
        raise UserError(
            f"{source}: the form needs {widest} tokens or more (its <text> and <digits> holes at "
            f"their widest), more than {CONTEXT_WORDS} {max_seq_len}); use fewer or shorter "
            "holes"
        )


def _languages(v: Any, path: str) -> list[tuple[str, str]]:
    """(where, pattern) of each language a form's holes compile that a request chooses freely:
    a ``ValueHole``'s regex and bound, a ``<regex:R>`` hole's R (``check_total``)."""
    if isinstance(v, dict):
        return [x for k, sub in v.items() for x in _languages(
            sub, f"{path}.{k}" if re.fullmatch(r"[A-Za-z_]\w*", k) else f"{path}[{json.dumps(k)}]")]
    if isinstance(v, list):
        return [x for i, sub in enumerate(v) for x in _languages(sub, f"{path}[{i}]")]
    if isinstance(v, ValueHole):
        return [(f"hole {path}", r) for r in (v.regex, v.bound) if r]
    m = _HOLE.fullmatch(v) if isinstance(v, str) else None
    if m is not None and m.group(1) == "regex" and m.group(2):
        return [(f"hole {path}", whole_pattern(m.group(2)))]
    return []


def fill_form(
    model: MaskPredictor,
    tokenizer: Any,
    template: str | Any,
    config: SampleConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    source: str = "form template",
    prefix_ids: Sequence[int] = (),
    suffix_ids: Sequence[int] = (),
    parse: bool = True,
    max_repair_calls: int | None = None,
    start_ids: Sequence[int] = (),
) -> FormResult:
    """Fill every hole of a JSON form template at once; the result always parses as JSON.
    ``max_repair_calls``: the most model calls a refill of holes that broke their
    constraint may make (``fill_canvas``; None: no limit).

    All holes are masked together in one canvas with the skeleton locked and denoised in
    one pass of ``unmask.sampling.sample`` (``config``; ``steps`` is capped at the number of
    masked positions, ``gen_length`` is ignored). Each hole's value satisfies its type.
    ``prefix_ids`` / ``suffix_ids``: locked context before / after the form (a prompt, the
    rest of a template), not part of the result; the form's first text continues the prefix.
    ``start_ids``: what the whole text begins with (a published model's BOS,
    ``unmask.facts.ModelFacts.prompt_ids``), locked, before ``prefix_ids``, hidden from the
    result and from ``step_callback``; the form's first text, with no prefix, is then laid
    out as the start of a text, as a tokenizer that adds the BOS itself encodes it.
    A causal (``ar``) model fills the same holes left to right under the same automata
    (``unmask.infill.ordered``); ``step_callback`` then sees the same canvas.
    ``parse=False``: the template is one bare ``ValueHole`` whose text need not be JSON
    (``value`` is then the text, trailing padding spaces dropped where its language allows).
    """
    config = config or SampleConfig()
    items, holes, automata = parse_form(template, tokenizer, source=source,
                                        max_seq_len=_max_seq_len(model))
    lead = [*map(int, start_ids), *map(int, prefix_ids)]  # locked, not part of the result
    layout: list[tuple[str, Any]] = [("text", (lead, ""))] if lead else []
    started = bool(prefix_ids)  # a BOS alone starts no text: what follows it is a text's start
    for kind, v in items:
        if kind == "text":  # a text after a prefix or a hole continues one (segment_ids)
            ids = segment_ids(tokenizer, v, first=not started)
            layout.append(("text", (ids, v)))
        else:
            layout.append(("hole", (v, holes[v].width)))
        started = True
    if suffix_ids:
        layout.append(("text", (list(suffix_ids), "")))
    causal = is_causal(model)
    around = len(lead) + len(suffix_ids or ())  # the locked text around the form
    whole = sum(len(v[0]) if k == "text" else v[1] for k, v in layout)
    total = form_span(around, whole - around, causal=causal, fim=causal and bool(suffix_ids))
    max_seq_len = _max_seq_len(model)
    if max_seq_len is not None and total > max_seq_len:
        raise UserError(
            f"{source}: the form needs {total} tokens (holes at their widest), more "
            f"than {CONTEXT_WORDS} {max_seq_len}); use fewer or shorter holes"
        )
    canvas, spans = layouts_canvas([layout], automata, [f"hole {h.path}" for h in holes],
                                   mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id)
    canvas = _text_locked(canvas, spans)
    step_callback = skipping(step_callback, len(start_ids))
    if causal:
        hole_ids, nfe, repaired = _fill_causal(
            model, tokenizer, layout, holes, automata, config, canvas, spans,
            start_ids=start_ids, prefix_ids=prefix_ids, suffix_ids=suffix_ids,
            generator=generator, step_callback=step_callback,
        )
    else:
        filled = fill_canvas(
            model,
            canvas,
            config,
            eos_id=getattr(tokenizer, "eos_id", None),
            generator=generator,
            step_callback=step_callback,
            max_repair_calls=max_repair_calls,
        )
        row = filled.tokens[0].tolist()
        hole_ids = [row[s:e] for s, e in spans.holes[0]]
        nfe, repaired = filled.nfe, filled.repaired
    vocab = vocab_of(tokenizer)
    parts: list[str] = []
    tokens: list[int] = []
    for kind, v in layout[1 if lead else 0 : len(layout) - (1 if suffix_ids else 0)]:
        if kind == "text":
            parts.append(v[1])
            tokens.extend(v[0])
            continue
        hole = holes[v[0]]
        ids = hole_ids[v[0]]
        sampled = vocab.decode(ids)
        raw = hole.written(sampled)
        back = hole.space and not sampled.startswith(" ")  # the skeleton's space put back
        if back:
            tokens.extend(segment_ids(tokenizer, " ", first=False))
        # re-encoded where its text is not its sampled tokens' text: it continues the form's
        # text (``segment_ids``), or a SentencePiece-style tokenizer gave it a word start of
        # its own (``" dog"`` for the value ``"dog"``, whose space the output dropped)
        first = not tokens
        if raw != (" " if back else "") + sampled:  # a string's leading space dropped
            ids = segment_ids(tokenizer, raw[1:] if back else raw, first=first)
        if parse:  # the spaces that pad a value to its hole's width are not the form's text
            raw, ids = raw.rstrip(" "), _unpadded(ids, raw.rstrip(" ")[1 if back else 0 :],
                                                  vocab, tokenizer, first=first)
        tokens.extend(ids)
        parts.append(raw)
        body = raw.rstrip(" ")[1:] if hole.space else raw.rstrip(" ")
        hole.text = ('"' if hole.quoted else "") + body
        if not parse:
            hole.text = body if hole.matches(body) else raw
            hole.value = hole.text
            if hole.text != raw:  # the padding spaces dropped: not in its tokens either
                ids = _unpadded(ids, hole.text, vocab, tokenizer, first=first)
            return FormResult(text=hole.text, value=hole.text, holes=holes, nfe=nfe,
                              repaired=repaired, tokens=list(ids))
        hole.value = json.loads(hole.text)
    text = "".join(parts)
    return FormResult(text=text, value=json.loads(text), holes=holes, nfe=nfe,
                      repaired=repaired, tokens=tokens)


def _text_locked(canvas: Any, spans: Any) -> Any:
    """``canvas`` with every text item of its layout locked, ``[MASK]`` tokens included: the
    prompt, skeleton and suffix are context, not part of the answer. A mask there was a
    position the sampler filled too, a dynamic policy's first block taking a forward per such
    mask on top of its steps (the server's ``--max-steps`` passed: 12 forwards at 8), and its
    fill thrown away (the answer writes the skeleton as given)."""
    locked = canvas.locked.clone()
    for r, texts in enumerate(spans.texts):
        for s, e in texts:
            locked[r, s:e] = True
    return dataclasses.replace(canvas, locked=locked)


def _unpadded(ids: list[int], text: str, vocab: Vocab, tokenizer: Any, *, first: bool
              ) -> list[int]:
    """The ids of a hole's ``text`` once the padding spaces after its value are dropped: its
    sampled ids less the trailing ones that spell only spaces, or, where a token joined the
    value to its padding, ``text`` encoded (``segment_ids``: ``first`` where nothing of the
    form's text comes before it)."""
    keep = list(ids)
    while keep and not vocab.decode(keep[-1:]).strip(" "):
        keep.pop()
    return keep if vocab.decode(keep) == text else segment_ids(tokenizer, text, first=first)


def is_causal(model: Any) -> bool:
    """Whether ``model`` is a causal (``ar``) model: its forms are filled left to right."""
    return getattr(getattr(model, "config", None), "attention", None) == "causal"


def _fill_causal(
    model: Any,
    tokenizer: Any,
    layout: list[tuple[str, Any]],
    holes: list[FormHole],
    automata: list[TokenAutomaton],
    config: SampleConfig,
    canvas: Any,
    spans: Any,
    *,
    start_ids: Sequence[int],
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    generator: torch.Generator | None,
    step_callback: StepCallback | None,
) -> tuple[list[list[int]], int, int]:
    """A form filled by a causal model left to right (``unmask.infill.ordered``): (tokens of
    each hole, NFE, 0 repairs). Locked text after the form (``suffix_ids``) is read through
    fill-in-the-middle (``[FIM_PREFIX] prefix [FIM_SUFFIX] suffix [FIM_MIDDLE] form``) when
    the model was trained for it, else refused: a causal model cannot read ahead."""
    from unmask.infill.fim import check_sentinels, fim_prompt
    from unmask.infill.ordered import fill_left_to_right

    lead = [*start_ids, *prefix_ids]
    body = layout[1 if lead else 0 : len(layout) - (1 if suffix_ids else 0)]
    pieces = [("text", v[0]) if kind == "text" else ("hole", v[0]) for kind, v in body]
    prompt = lead
    if suffix_ids:
        if getattr(model.config, "fim_prefix_id", None) is None:
            raise UserError("a causal model fills text after a hole only when trained for "
                            "fill-in-the-middle (--objective ar --fim-rate 0.5); use a "
                            "diffusion model")
        check_sentinels(model.config, tokenizer)
        prompt = [*start_ids, *fim_prompt(model.config, prefix_ids, suffix_ids)]
    space = segment_ids(tokenizer, " ", first=False)
    got = fill_left_to_right(
        model, [prompt], [pieces], automata, [h.width for h in holes], config,
        eos_id=tokenizer.eos_id, canvas=canvas.tokens, spans=spans.holes,
        mask_id=tokenizer.mask_id, space_id=space[0] if len(space) == 1 else None,
        generator=generator, step_callback=step_callback,
    )
    return got.holes[0], got.nfe, 0
