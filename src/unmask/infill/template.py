"""Templates with gaps: parsing, gap constraints, and the canvas a template becomes.

Inside:

- ``Gap``: a run of masked tokens: fixed length or a [min, max] range, with optional
  constraints (named character class or token ids, banned tokens, regex, choices).
- ``parse_template(text)``: ``"The [MASK:6] sat on the [MASK]."`` → text segments and gaps;
  ``[MASK]`` = one token, ``[MASK:n]`` = n tokens, ``[MASK:a-b]`` = a to b tokens, and a
  name first (``[MASK:city]``, ``[MASK:city:2-5]``) names the gap; ``\\[`` is a literal
  ``[``, ``\\\\`` a literal backslash and ``\\ `` a space the next gap must not take in.
- ``find_gap(segments, key)`` / ``split_choices``: a gap by number or name, ``a|b|c`` lists.
- ``gap_automaton(gap, tokenizer)``: the ``TokenAutomaton`` a gap's text must be accepted by.
- ``Plan`` / ``plan_template``: encoded text, compiled gaps, candidate lengths and checks.
- ``template_canvas``: a template (with chosen lengths) as a one-row ``Canvas``.

Text segments are encoded separately and their ids concatenated. With a BPE tokenizer the
ids at a segment boundary may differ from how the whole text would be encoded (``" cat"``
is one token, ``" "`` + ``"cat"`` two). The worst case, a space locked right before a gap
that a byte-level BPE would have merged into the gap's first word, is avoided:
``plan_template`` moves that space into the gap (``takes_space``; docs/infill.md).
"""

from __future__ import annotations

import operator
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
import torch

from unmask.canvas import Canvas
from unmask.config import DEFAULT_MAX_LEN_TOKENS, InfillOptions
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.infill.automaton import (
    QUOTE_CHARS,
    GapConstraint,
    TokenAutomaton,
    cached_automaton,
    check_regex,
    quote_pattern,
    segment_ids,
    vocab_of,
    whole_pattern,
)
from unmask.messages import plural

NAMED_CLASSES: dict[str, str] = {
    "digits": "[0-9]",
    "lowercase": "[a-z]",
    "uppercase": "[A-Z]",
    "alpha": "[A-Za-z]",
    "alnum": "[A-Za-z0-9]",
    "word": "[A-Za-z0-9_]",
}
"""Character classes a gap's ``allowed`` may name (ASCII), as regex classes."""

ANY_TEXT = "(?s:.*)"
"""Any well-formed UTF-8 text (the regex engine matches characters as their UTF-8 bytes)."""
NOT_A_SPACE = "(?s:(?:[^ ]|..).*)?"
"""Every text but the one space ``" "``."""
LEAD_TEXT = r"(?s: ?\S.*)"
"""The fill of an unconstrained gap that starts the text (``leads``): an optional space (the
virtual one, dropped from the output), then no more whitespace."""
CLOSING = ",.;:!?)]}'’”"
"""Characters that close a phrase: no word starts with them, so no space goes before them (the
fill after a taken space, ``AFTER_SPACE_TEXT``; an empty fill's space, ``fill._render``)."""
AFTER_SPACE_TEXT = r"(?s: ?[^\s,.;:!?)\]}'’”].*)"
"""The fill of an unconstrained gap that took in the space before it (``takes_space``): an
optional space (the template's), then neither whitespace nor ``CLOSING``. The user
wrote a space, so a word follows it; the model, which sees the word before the gap glued to
the masks, often wrote ``"’s"`` or ``","`` there, and the space put back gave
``"king ’s army"``."""
START_CONTEXT = "\n"
"""Locked context before a gap that starts the text, not part of the output: a line break,
as most texts start in training corpora. The demo model, trained on chunks cut from running
text, wrote a space-led word fragment there (``"ian king of Babylon."``); after a line break it
starts a sentence (``"Pharaoh king of Babylon."``)."""

MAX_GAP_TOKENS = InfillOptions.MAX_LEN_TOKENS
"""Longest gap (tokens) a template may ask for: longer than any model's context, so one past
it is refused by the context check anyway; bounded so that no automaton is sized for it."""

DEFAULT_MAX_LEN = DEFAULT_MAX_LEN_TOKENS
"""Upper length bound (tokens) of a gap whose constraint allows unbounded text (``\\d+``)."""


@dataclass
class Gap:
    """A gap of masked tokens in a template, and what it may hold.

    ``Gap(6)`` is six tokens, ``Gap(min_len=2, max_len=12)`` two to twelve (chosen by the
    model's likelihood, see ``unmask.infill.infill``), ``Gap()`` one token, unless a
    ``regex`` or ``choices`` sets the possible lengths. Constraints combine (all must hold):

    - ``allowed``: a character class name (``digits``, ``lowercase``, ``uppercase``,
      ``alpha``, ``alnum``, ``word``: every character of the gap is in it) or token ids;
    - ``banned``: token ids, or strings (every token whose bytes contain the string);
    - ``regex``: the gap's text matches it in full (outlines-core's syntax, docs/infill.md);
    - ``choices``: the gap's text is one of these strings.

    Special tokens (mask, pad, EOS, BOS) never fill a gap, and a gap's text is always
    well-formed UTF-8.
    """

    length: int | None = None
    """Exact length in tokens; None = ``min_len``..``max_len`` (or one token). Lengths of gaps
    always count tokens; to bound characters, use a ``regex`` such as ``\\d{1,3}``."""
    _: KW_ONLY
    min_len: int | None = None
    """Shortest length in tokens of a variable gap (default 1, or the constraint's shortest)."""
    max_len: int | None = None
    """Longest length in tokens of a variable gap (default ``min_len`` + what the constraint
    allows, at most 16)."""
    name: str | None = None
    """Name used in results and error messages (default ``gap N``)."""
    allowed: str | Sequence[int] | None = None
    """Character class name or token ids the gap may hold."""
    banned: Sequence[int | str] = ()
    """Token ids, or strings whose tokens are banned (any token containing the string)."""
    regex: str | None = None
    """The gap's text must match this regex in full."""
    choices: Sequence[str] | None = None
    """The gap's text must be one of these strings."""
    take_space: bool = True
    """With a tokenizer that joins a space to the next word (byte-level BPE), an unconstrained
    gap takes in the one space right before it (``plan_template``); False keeps that space in
    the given text (template: ``\\ [MASK]``)."""
    source: str | None = field(default=None, repr=False, compare=False)
    """The template text this gap came from (``[MASK:2-12]``), for messages."""

    def __post_init__(self) -> None:
        if self.name is not None and not isinstance(self.name, str):  # was a TypeError in a
            raise UserError(f"a gap: name must be a str, not {type(self.name).__name__} "
                            f"({self.name!r})")  # message that joined it to text
        what = source_line(self) or self.name or "a gap"
        what = what if len(what) <= QUOTE_CHARS else quote_pattern(what)  # [MASK:<3,000 1s>]
        if self.regex is not None and not isinstance(self.regex, str):  # len(5) inside
            raise UserError(f"{what}: regex must be a str, not {type(self.regex).__name__}")
        if self.allowed is not None and not isinstance(self.allowed, str):
            _token_ids(self.allowed, what, "allowed", "a character class name or token ids")
        if isinstance(self.banned, (str, bytes)):  # "the" banned every t, h and e
            raise UserError(f"{what}: banned is a list of strings or token ids, not one "
                            f"string ({self.banned!r})")
        _token_ids(self.banned, what, "banned", "strings or token ids", texts=True)
        if not isinstance(self.take_space, bool):
            raise UserError(f"{what}: take_space must be True or False, not {self.take_space!r}")
        for key in ("length", "min_len", "max_len"):
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UserError(f"{what}: {key} must be a whole number of tokens, not {v!r}")
            if v > MAX_GAP_TOKENS:
                many = f"{v:,}" if v < 10**24 else f"a {len(str(v))}-digit number of"
                raise UserError(f"{what}: {many} tokens is longer than any model's context "
                                f"(at most {MAX_GAP_TOKENS:,})")
        if isinstance(self.choices, str):
            raise UserError(f"{what}: choices is a list of strings, not one string "
                            f"({self.choices!r})")
        if self.choices is not None:  # refused here, in one line: [] was found only once a
            # model was loaded, and [1] was a TypeError inside the automaton's compiler
            if not self.choices:
                raise UserError(f"{what}: choices is empty; list at least one text")
            for c in self.choices:
                if not isinstance(c, str):
                    raise UserError(f"{what}: choices are texts, not {type(c).__name__} "
                                    f"({c!r})")

    @property
    def constrained(self) -> bool:
        """Whether the gap's language bounds its own length (regex or choices)."""
        return self.regex is not None or self.choices is not None

    @property
    def shapes_text(self) -> bool:
        """Whether a constraint shapes the gap's text (regex, choices, ``allowed``); ``banned``
        does not."""
        return self.constrained or self.allowed is not None


# -- parsing ----------------------------------------------------------------------------------


def _token_ids(items: Any, what: str, key: str, kinds: str, texts: bool = False) -> None:
    """A ``UserError`` unless ``items`` is a collection of token ids (whole numbers, not
    bools), or of non-empty strings too (``texts``); ``kinds`` names them for the message."""
    try:
        values = list(items)
    except TypeError:
        raise UserError(f"{what}: {key} must be {kinds}, not {type(items).__name__}") from None
    for v in values:
        if texts and isinstance(v, str):
            continue
        try:
            if isinstance(v, bool):
                raise TypeError
            operator.index(v)
        except TypeError:
            raise UserError(f"{what}: {key} must be {kinds}, not {type(v).__name__} "
                            f"({v!r})") from None


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"template column {col}" if "\n" not in text else f"template line {line} column {col}"


def parse_template(text: str) -> list[str | Gap]:
    """Split a template into text segments and ``Gap`` s.

    ``[MASK]`` is one token (or, once constrained, the lengths its regex or choices allow),
    ``[MASK:n]`` exactly n, ``[MASK:a-b]`` a to b tokens (the length is chosen when filling).
    A name may come first: ``[MASK:city]``, ``[MASK:city:3]``, ``[MASK:city:2-5]`` (letters,
    digits and ``_``, not starting with a digit). Whitespace inside the brackets around
    ``:``, ``-``, the name and the length is ignored (``[MASK : 3 ]`` is ``[MASK:3]``);
    lengths are ASCII digits. A backslash before ``[`` or ``\\`` makes it
    literal; ``\\ `` is a space that the next gap does not take in (``Gap.take_space``); any
    other backslash is kept as is. Malformed gaps raise ``UserError`` with the column.
    """
    out: list[str | Gap] = []
    buf: list[str] = []
    locked_space = False  # the last character of buf is an escaped space
    names: set[str | None] = set()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "[\\ ":
            buf.append(text[i + 1])
            locked_space = text[i + 1] == " "
            i += 2
            continue
        if c == "[" and text.startswith("[MASK", i):
            start = i
            gap, i = _parse_gap(text, i)
            if gap.name is not None and gap.name in names:  # where (check_names says only what)
                raise UserError(f"{_where(text, start)}: gap name {quote_pattern(gap.name)} is "
                                "used twice; give each gap its own name")
            names.add(gap.name)
            if locked_space:
                gap.take_space = False
            if buf:
                out.append("".join(buf))
                buf = []
            out.append(gap)
            locked_space = False
            continue
        buf.append(c)
        locked_space = False
        i += 1
    if buf:
        out.append("".join(buf))
    if not any(isinstance(p, Gap) for p in out):
        raise UserError("template has no gaps: mark them with [MASK], [MASK:n] or [MASK:min-max]")
    return out


def _parse_gap(text: str, i: int) -> tuple[Gap, int]:
    """Parse the ``[MASK...]`` starting at ``i``; returns the gap and the index after it."""
    j = i + len("[MASK")
    close = text.find("]", j)
    nxt_open = text.find("[", j)
    if close < 0 or (0 <= nxt_open < close):
        raise UserError(f"{_where(text, i)}: unclosed '[MASK' (write \\[ for a literal '[')")
    body = text[j:close].lstrip()  # spaces around the name and the length are insignificant
    source = text[i : close + 1]
    shown = quote_pattern(source)  # a long one by its ends
    if body == "":
        return Gap(source=source), close + 1
    if not body.startswith(":"):
        raise UserError(
            f"{_where(text, i)}: expected ']' or ':' after '[MASK', got {body[0]!r} "
            f"(write \\[ for a literal '[')"
        )
    spec = body[1:].strip()
    head, colon, rest = spec.partition(":")
    name = None
    if _NAME.fullmatch(head.strip()):
        name = head.strip()
        if not colon:
            return Gap(name=name, source=source), close + 1
        spec = rest.strip()
    head = head.strip()
    # in a name's place (a ':' after it) or looking like one; [MASK:+3], [MASK:~3]: a length
    named = bool(colon) or any(c.isalpha() or c == "_" for c in head)
    if name is None and named and not head[:1].isdigit() and head[:1] != "-":
        # [MASK:my-city:3], [MASK:é]: a name the syntax does not take ("bad gap length '3'")
        raise UserError(
            f"{_where(text, i)}: bad gap name {quote_pattern(head)} in {shown}; a name is ASCII "
            "letters, digits and _, not starting with a digit ([MASK:my_city:3])"
        )
    lo_s, dash, hi_s = spec.partition("-")
    if not _COUNT.fullmatch(lo_s.strip()) or (dash and not _COUNT.fullmatch(hi_s.strip())):
        raise UserError(
            f"{_where(text, i)}: bad gap length {quote_pattern(spec)} in {shown}; use [MASK:n] "
            "(n tokens), [MASK:min-max] or a name first ([MASK:name:n])"
        )
    lo = int(lo_s)
    hi = int(hi_s) if dash else lo
    if not dash and lo <= 0:
        raise UserError(
            f"{_where(text, i)}: gap length must be at least 1 token, got {lo} in {shown}"
        )
    if hi < lo:
        raise UserError(
            f"{_where(text, i)}: gap bounds inverted in {shown} (min {lo} > max {hi} tokens)"
        )
    if hi == 0:
        raise UserError(f"{_where(text, i)}: gap {shown} can hold no token (max 0)")
    try:  # a length past any context: its column, as every other gap error has
        gap = Gap(lo, name=name, source=source) if not dash else Gap(
            min_len=lo, max_len=hi, name=name, source=source)
    except UserError as e:
        raise UserError(f"{_where(text, i)}: {e}") from None
    return gap, close + 1


_NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)
_COUNT = re.compile(r"[0-9]+")
"""A gap length: ASCII digits (``str.isdigit`` let ``²`` through to a traceback)."""


def is_count(text: str) -> bool:
    """Whether ``text`` is a count as templates write one: ASCII digits only. ``str.isdigit``
    and ``int`` also take other scripts' digits (``"３"``, ``"٣"``; ``"²"`` passes ``isdigit``
    and fails ``int``), so a gap number or a form hole's length given so was read as a count
    in one place, refused in another and a traceback in a third."""
    return _COUNT.fullmatch(text) is not None


def split_choices(spec: str) -> list[str]:
    """``"a|b|c"`` → ``["a", "b", "c"]``; ``\\|`` is a literal bar and ``\\\\`` a backslash."""
    out, buf, i = [], [], 0
    while i < len(spec):
        if spec[i] == "\\" and i + 1 < len(spec) and spec[i + 1] in "|\\":
            buf.append(spec[i + 1])
            i += 2
        elif spec[i] == "|":
            out.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(spec[i])
            i += 1
    out.append("".join(buf))
    return out


def check_names(segments: Sequence[str | Gap]) -> None:
    """``UserError`` when two gaps share a name (a constraint by name would reach only the
    first, and results by name would be ambiguous)."""
    seen: set[str] = set()
    for p in segments:
        if isinstance(p, Gap) and p.name is not None:
            if p.name in seen:
                raise UserError(f"gap name {quote_pattern(p.name)} is used twice; give each "
                                "gap its own name")
            seen.add(p.name)


def find_gap(segments: Sequence[str | Gap], key: str) -> int:
    """Index in ``segments`` of the gap ``key`` names: its number (1-based, in template order)
    or its name. ``UserError`` listing the gaps when there is no such gap."""
    check_names(segments)
    gaps = [k for k, p in enumerate(segments) if isinstance(p, Gap)]
    key = key.strip()
    if is_count(key) and 1 <= int(key) <= len(gaps):
        return gaps[int(key) - 1]
    for k in gaps:
        if segments[k].name == key:  # type: ignore[union-attr]
            return k
    known = ", ".join(str(n) + (f" ({segments[k].name})" if segments[k].name else "")  # type: ignore[union-attr]
                      for n, k in enumerate(gaps, 1))
    raise UserError(
        f"no gap {key!r} in the template (its gaps: {known}); name a gap by number (ASCII "
        "digits) or [MASK:name]"
    )


# -- gap languages ---------------------------------------------------------------------------


def source_line(gap: Gap) -> str | None:
    """The template text ``gap`` came from (``Gap.source``) on one line, each run of
    whitespace one space (``"[MASK\\n:1-3]"`` is ``"[MASK :1-3]"``): whitespace inside the
    brackets, which the syntax allows, may be a line break, and the one-line errors that
    quote the gap took two lines. None for a gap built in Python."""
    return " ".join(gap.source.split()) if gap.source else None


def _named(gap: Gap, k: int) -> str:
    """``gap 2 [MASK:3]`` or ``'city' [MASK:city]``: the gap as its messages and results name
    it, on one line (``source_line``)."""
    label = repr(gap.name) if gap.name else f"gap {k}"
    source = source_line(gap)
    return f"{label} {source}" if source else label


def _token_mask(gap: Gap, tokenizer: Any, label: str) -> np.ndarray | None:
    """(V,) bool of the token ids the gap may use at all (None = every non-special id)."""
    vocab = vocab_of(tokenizer)
    V = vocab.size
    allowed: np.ndarray | None = None
    if gap.allowed is not None and not isinstance(gap.allowed, str):
        allowed = np.zeros(V, dtype=bool)
        for t in gap.allowed:
            if not 0 <= int(t) < V:
                raise UserError(
                    f"{label}: allowed token id {t} is outside the vocabulary (size {V})"
                )
            allowed[int(t)] = True
    if gap.banned:
        allowed = np.ones(V, dtype=bool) if allowed is None else allowed
        for b in gap.banned:
            if isinstance(b, str):
                needle = b.encode("utf-8")
                if not needle:
                    raise UserError(f"{label}: banned string is empty")
                for t in range(V):
                    if needle in vocab.token_bytes(t):
                        allowed[t] = False
            else:
                if 0 <= int(b) < V:
                    allowed[int(b)] = False
    return allowed


def _regex_automaton(pattern: str, tokenizer: Any, what: str) -> TokenAutomaton:
    """``TokenAutomaton.from_regex`` for the tokenizer (cached per (pattern, tokenizer))."""
    return cached_automaton(
        tokenizer, ("regex", pattern),
        lambda: TokenAutomaton.from_regex(pattern, vocab_of(tokenizer), what=what),
    )


def _own_regexes(gap: Gap, label: str) -> list[str]:
    """The regexes the gap's own text must match in full (all of them; empty = any text).
    The user's regex as written (``from_regex`` drops its anchors), so an error quotes it and
    its column points into it (``^ab(c$`` was quoted as ``'ab(c'``, its column one short)."""
    parts: list[str] = []
    if gap.regex is not None:
        parts.append(gap.regex)
    if gap.choices is not None:  # not empty, all texts: checked when the Gap was made
        parts.append("|".join(re.escape(c) for c in gap.choices))
    if isinstance(gap.allowed, str):
        if gap.allowed not in NAMED_CLASSES:
            raise UserError(
                f"{label}: unknown character class {gap.allowed!r}; choose one of "
                f"{', '.join(NAMED_CLASSES)}"
            )
        parts.append(NAMED_CLASSES[gap.allowed] + "*")
    return parts


def own_automaton(gap: Gap, tokenizer: Any, label: str = "gap") -> TokenAutomaton:
    """The automaton of the gap's own text (no taken-in space, no token masks): every
    constraint intersected."""
    parts = _own_regexes(gap, label)
    autos = [_regex_automaton(r, tokenizer, f"{label}: regex {quote_pattern(r)}")
             for r in parts or [ANY_TEXT]]
    out = autos[0]
    for other in autos[1:]:
        out = out.intersect(other, what=label)
    return out


def check_gap(gap: Gap, label: str = "gap") -> None:
    """``UserError`` for a gap's unknown character class or a regex the engine rejects,
    before any model or tokenizer work (the regex is compiled over single bytes, as the user
    wrote it: ``_own_regexes``)."""
    for r in _own_regexes(gap, label):
        check_regex(r, f"{label}: regex {quote_pattern(r)}")


def gap_automaton(
    gap: Gap, tokenizer: Any, label: str = "gap", *, space: bool = False, lead: bool = False
) -> TokenAutomaton:
    """The ``TokenAutomaton`` a gap's tokens must be accepted by (cached per tokenizer).

    With ``space`` (the gap took in the space before it, ``takes_space``) a gap whose
    constraint shapes its text accepts ``L | " " L``, its text with or without that space in
    front, so a byte-level BPE may spell it as it spells the word after a space
    (``" Rome"``, one token), while the gap never holds the space alone unless ``L`` does.
    ``lead`` (the gap starts the text, ``leads``): the same for a constrained gap; an
    unconstrained one holds ``LEAD_TEXT`` (an optional space, then no whitespace).
    """
    allowed = (
        gap.allowed if isinstance(gap.allowed, str) or gap.allowed is None else tuple(gap.allowed)
    )
    choices = None if gap.choices is None else tuple(gap.choices)
    shifted = space or lead
    free = (LEAD_TEXT if lead else AFTER_SPACE_TEXT) if shifted and not gap.shapes_text else None
    if free is not None and gap.min_len == 0:  # [MASK:0-n]: the gap may also stay empty
        free = f"(?:{free})?"
    key = ("gap", gap.regex, choices, allowed, tuple(gap.banned), shifted and gap.shapes_text,
           free)

    def build() -> TokenAutomaton:
        parts = _own_regexes(gap, label)
        if free is not None:
            parts = [free]
        if shifted and gap.shapes_text:
            own = own_automaton(gap, tokenizer, label)
            lone = not own.accepts_text(" ", tokenizer)
            parts = [f"(?:{w})| (?:{w})" for w in map(whole_pattern, parts)]  # anchors off
            parts += [NOT_A_SPACE] if lone else []
        mask = _token_mask(gap, tokenizer, label)
        out = None
        for r in parts or [ANY_TEXT]:
            auto = _regex_automaton(r, tokenizer, f"{label}: regex {quote_pattern(r)}")
            out = auto if out is None else out.intersect(auto, what=label)
        assert out is not None
        if mask is not None:
            out = out.intersect(_mask_automaton(mask), what=label)
        return out

    return cached_automaton(tokenizer, key, build)


def _mask_automaton(allowed: np.ndarray) -> TokenAutomaton:
    """One state, accepting: the allowed tokens loop on it, the others die."""
    return TokenAutomaton(
        table=np.array([[1, 0], [1, 1]], dtype=np.int32),
        token_class=allowed.astype(np.int32),
        accept=np.array([True, False]),
        dead_class=0,
    )


# -- planning ---------------------------------------------------------------------------------


@dataclass
class Hole:
    """A gap ready to fill: its automaton and the lengths (tokens) it may take."""

    label: str
    """Name for results and messages (``gap 2``, or the gap's own name)."""
    automaton: TokenAutomaton
    candidates: list[int]
    """Lengths to try, ascending (one for a fixed-length gap)."""
    feasible: list[int]
    """Every length in the gap's bounds some token sequence can take."""
    gap: Gap | None = None
    space: bool = False
    """The hole took in the space before it (``takes_space``): the text before it lost its last
    space, which the filled text gets back unless the fill starts with a space itself."""
    own: TokenAutomaton | None = field(default=None, repr=False)
    """For a constrained hole that took the space: the language of its own text, which tells
    whether a fill's leading space is the template's (``" Rome"``) or part of a choice."""
    tok: Any = field(default=None, repr=False)
    """The tokenizer ``own`` reads."""
    lead: bool = False
    """The hole starts the text or a line (nothing before it, or a line break) and takes a
    virtual space (``leads``):
    the fill may start with a space-led token (``" Nebuchadnezzar"``), as the model almost
    always writes one, and that space is dropped from the output; nothing is put back."""

    def space_is_taken(self, text: str) -> bool:
        """Whether the leading space of a fill ``text`` is the template's space, or the
        virtual one of a hole that starts the text (``lead``): then the gap's text is
        ``text[1:]``; False: the space is put back in front of ``text`` (``space``) or the
        fill is kept as it is (``lead``)."""
        if not ((self.space or self.lead) and text.startswith(" ")):
            return False
        return self.own is None or (len(text) > 1 and self.own.accepts_text(text[1:], self.tok))


@dataclass
class Plan:
    """A template ready to fill: encoded text pieces and holes, in order."""

    items: list[tuple[str, Any]]
    """``("text", (ids, text))`` or ``("hole", hole_index)`` in template order; first, maybe,
    ``("context", (ids, ""))``: locked for the model, not part of the output
    (``START_CONTEXT``)."""
    holes: list[Hole]

    def layout(self, lengths: Sequence[int]) -> list[tuple[str, Any]]:
        """Items with each hole's length: ``("text", (ids, text))``, ``("context", (ids, ""))``
        or ``("hole", (k, n))``."""
        return [(kind, (v, lengths[v]) if kind == "hole" else v) for kind, v in self.items]

    @property
    def fixed_tokens(self) -> int:
        return sum(len(v[0]) for kind, v in self.items if kind != "hole")

    @property
    def has_given_text(self) -> bool:
        """Whether the template gives text of its own, whitespace aside: not
        ``START_CONTEXT``'s locked line break (it let ``"[MASK:0-2]"`` be filled with
        nothing), nor spaces alone (a byte tokenizer's ``"[MASK:0-3] [MASK:0-3]"`` came back
        ``" "``). A template without is never filled with nothing at all, on every path
        (``fill._choices``, ``fim.infill_causal``)."""
        return any(v[1].strip() for kind, v in self.items if kind == "text")


def _infeasible(gap: Gap, label: str, automaton: TokenAutomaton, lo: int, hi: int,
                default_max: int) -> str:
    """The message for a gap whose constraint no sequence of ``lo``..``hi`` tokens satisfies,
    with the lengths it does allow: ``"[MASK]" --regex '1=a{100}'`` said only "no sequence
    of 0-16 tokens", though the user gave no length (16 is ``default_max_len``'s)."""
    what = plural(lo, "token") if lo == hi else f"{lo}-{hi} tokens"
    out = f"{label}: no sequence of {what} satisfies its constraint"
    fewest, most = automaton.min_tokens(), automaton.max_tokens()
    if fewest is None:  # e.g. allowed="digits" with regex="[a-z]"
        return out + " (no text satisfies all of it)"
    if fewest > hi:
        out += f" (its shortest answer takes {plural(fewest, 'token')}"
        if gap.length is None and gap.max_len is None:
            name = f"{gap.name}:" if gap.name else ""  # [MASK:word:100-200] stays "word"
            out += (f"; a gap without a maximum holds at most default_max_len ({default_max}):"
                    f" give it one, e.g. [MASK:{name}{fewest}-{2 * fewest}]")
        return out + ")"
    if most is not None and most < lo:
        return out + f" (its longest answer takes {plural(most, 'token')})"
    upto = most if most is not None else 2 * hi
    some = np.nonzero(automaton.feasible_lengths(upto))[0].tolist()
    shown = ", ".join(map(str, some[:6])) + (", ..." if len(some) > 6 else "")
    return out + f" (its answers take {shown} tokens)"


def _bounds(
    gap: Gap, label: str, automaton: TokenAutomaton, default_max: int, number: int | None = None
) -> tuple[int, int]:
    for name in ("length", "min_len", "max_len"):
        v = getattr(gap, name)
        if v is not None and (not isinstance(v, int) or v < 0):
            raise UserError(f"{label}: {name} must be a non-negative integer, got {v!r}")
    if gap.length is not None:
        if gap.min_len is not None or gap.max_len is not None:
            raise UserError(f"{label}: give either length or min_len/max_len, not both")
        if gap.length == 0:
            raise UserError(f"{label}: length must be at least 1 token")
        return gap.length, gap.length
    if gap.min_len is None and gap.max_len is None and not gap.constrained:
        return 1, 1
    lo = gap.min_len if gap.min_len is not None else (0 if gap.constrained else 1)
    if gap.max_len is not None:
        hi = gap.max_len
    else:
        hi = max(lo, default_max)
        if gap.constrained:  # the longest length the constraint allows, up to the default
            feas = np.nonzero(automaton.feasible_lengths(hi))[0]
            feas = feas[feas >= lo]
            if len(feas):
                hi = int(feas.max())
    if hi < lo:
        raise UserError(f"{label}: gap bounds inverted (min_len {lo} > max_len {hi} tokens)")
    if hi == 0:
        if gap.max_len is None:  # about the constraint: gap ``number``'s (``GapError``)
            raise GapError(f"{label}: its constraint allows only empty text", number)
        raise UserError(f"{label}: max_len must be at least 1 token")
    return lo, hi


def _subset(lengths: list[int], k: int) -> list[int]:
    """At most ``k`` of ``lengths``, evenly spaced, both ends kept."""
    if len(lengths) <= k:
        return lengths
    if k <= 1:
        return [lengths[len(lengths) // 2]]
    idx = np.unique(np.round(np.linspace(0, len(lengths) - 1, k)).astype(int))
    return [lengths[i] for i in idx]


_SPACE_JOINERS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def joins_spaces(tokenizer: Any) -> bool:
    """Whether the tokenizer has tokens made of a space and then a word character (``" cat"``),
    as byte-level BPE and SentencePiece vocabularies do (cached per tokenizer)."""
    try:
        return _SPACE_JOINERS[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab = vocab_of(tokenizer)
    second = (
        vocab.matrix[:, 1] if vocab.matrix.shape[1] > 1 else np.zeros(vocab.size, dtype=np.uint8)
    )
    wordish = np.isin(
        second,
        np.frombuffer(
            b"0123456789_" + bytes(range(65, 91)) + bytes(range(97, 123)), dtype=np.uint8
        ),
    ) | (second >= 0x80)
    found = bool(((vocab.lengths >= 2) & (vocab.matrix[:, 0] == 32) & wordish).any())
    try:
        _SPACE_JOINERS[tokenizer] = found
    except TypeError:
        pass
    return found


def takes_space(gap: Gap, before: str, tokenizer: Any) -> bool:
    """Whether ``gap`` takes in the last character of the text ``before`` it.

    The rule: the text right before the gap ends with a space (U+0020; only that one space
    moves), the gap allows it (``Gap.take_space``, False after ``\\ `` in a template) and the
    tokenizer joins spaces to the next word (``joins_spaces``). Then the fill may start with
    a space-led token such as ``" cat"``, as the model saw in training, where the locked
    space would have forced space-less tokens. A constrained gap (regex, choices, class)
    takes the space too: its language gains an optional leading space (``gap_automaton``), so
    ``choices=["Rome"]`` may be the one token ``" Rome"``.
    """
    return before.endswith(" ") and leads(gap, tokenizer)


def leads(gap: Gap, tokenizer: Any) -> bool:
    """Whether ``gap``, with no text before it (the start of the template), takes a virtual
    space: its fill may start with a space-led token, whose space is dropped from the output
    (``Hole.lead``). The model, trained on chunks cut from running text, nearly always writes
    one at the first position (``" Nebuchadnezzar"``); kept, the output began with a space.
    The same tokenizer rule as ``takes_space``; ``Gap(take_space=False)`` opts out."""
    return gap.take_space and joins_spaces(tokenizer)


def _choice_lengths(gap: Gap, tokenizer: Any, space: bool, feasible: list[int]) -> list[int]:
    """Lengths to try for a ``choices`` gap with no length given: the token counts the
    tokenizer gives each choice, and each choice after a space when the gap took one in
    (``" Rome"`` is one token where ``"Rome"`` is two). Each choice is then scored as the
    tokenizer spells it in running text, rather than at evenly spaced lengths most of which
    only odd spellings fill. Empty when the rule does not apply (lengths given, no choices)."""
    if gap.choices is None or gap.length is not None or gap.min_len is not None:
        return []
    if gap.max_len is not None:
        return []
    counts = {len(tokenizer.encode(c)) for c in gap.choices if c}
    if space:
        counts |= {len(segment_ids(tokenizer, " " + c, first=False)) for c in gap.choices if c}
    return sorted(n for n in counts if n in feasible)


def plan_template(
    template: str | Sequence[str | Gap],
    tokenizer: Any,
    *,
    max_seq_len: int | None = None,
    max_candidates: int = 6,
    default_max_len: int = DEFAULT_MAX_LEN,
    move_spaces: bool = True,
    start_ids: Sequence[int] = (),
) -> Plan:
    """Parse (if text), encode the text segments, compile every gap and check it can be filled.
    ``start_ids``: what the text begins with, locked and not part of the output (a published
    model's BOS, ``unmask.facts.ModelFacts.prompt_ids``; ``with_start_context``).

    With ``move_spaces`` a gap that ``takes_space`` gets the space before it: the text is
    encoded without it and the hole is marked (``Hole.space``); ``fill_plan`` puts the space
    back in the output when the fill does not start with one, so the output text is always
    the template with each gap replaced by its text.
    A gap with no text before it, or right after a line break, takes a virtual space
    (``leads``, ``Hole.lead``): its fill may start with a space, which ``fill_plan`` drops; at
    the start of the template it is filled after ``START_CONTEXT`` (locked, not part of the
    output; ``with_start_context``).

    Raises ``UserError`` for a malformed template, inverted bounds, a constraint no token
    sequence of an allowed length satisfies (naming the gap), or a template that cannot fit
    the model's context (``max_seq_len``).
    """
    # the limits of InfillOptions, one implementation (default_max_len 10**11 sized an array
    # per gap here: a MemoryError traceback)
    InfillOptions(max_candidates=max_candidates, default_max_len=default_max_len)
    segments = parse_template(template) if isinstance(template, str) else list(template)
    for p in segments:  # first: ["a", 5] said "template has no gaps"
        if not isinstance(p, (str, Gap)):
            raise UserError(f"template items must be text or Gap, got {type(p).__name__}")
    segments = _joined(segments)
    if not any(isinstance(p, Gap) for p in segments):
        raise UserError("template has no gaps")
    check_names(segments)
    items: list[tuple[str, Any]] = []
    holes: list[Hole] = []
    for k, p in enumerate(segments):
        if isinstance(p, Gap):
            label = _named(p, len(holes) + 1)
            before = segments[k - 1] if k and isinstance(segments[k - 1], str) else ""
            space = move_spaces and takes_space(p, before, tokenizer)  # type: ignore[arg-type]
            # nothing before it, or a line break: a virtual space, dropped from the output
            # (``leads``; a line starts without one: "Light\n Selah." was kept)
            lead = (move_spaces and not space and (not items or before.endswith("\n"))
                    and leads(p, tokenizer))
            automaton = gap_automaton(p, tokenizer, label, space=space, lead=lead)
            lo, hi = _bounds(p, label, automaton, default_max_len, len(holes) + 1)
            feas = automaton.feasible_lengths(hi)
            feasible = [n for n in range(lo, hi + 1) if feas[n]]
            if not feasible:
                raise GapError(_infeasible(p, label, automaton, lo, hi, default_max_len),
                               len(holes) + 1)
            shifted = space or lead
            own = own_automaton(p, tokenizer, label) if shifted and p.shapes_text else None
            natural = _choice_lengths(p, tokenizer, shifted, feasible)
            holes.append(
                Hole(
                    label=label,
                    automaton=automaton,
                    candidates=_subset(natural or feasible, max_candidates),
                    feasible=feasible,
                    gap=p,
                    space=space,
                    own=own,
                    tok=tokenizer,
                    lead=lead,
                )
            )
            items.append(("hole", len(holes) - 1))
        elif p:
            nxt = segments[k + 1] if k + 1 < len(segments) else None
            if move_spaces and isinstance(nxt, Gap) and takes_space(nxt, p, tokenizer):
                p = p[:-1]
            if p:
                items.append(("text", (segment_ids(tokenizer, p, first=not items), p)))
    plan = Plan(items=items, holes=holes)
    check_context(plan, max_seq_len)
    return with_start_context(plan, tokenizer, max_seq_len, start_ids=start_ids)


def _joined(segments: Sequence[str | Gap]) -> list[str | Gap]:
    """``segments`` with adjacent texts joined: the spacing rules read the text right before
    a gap (``["The ", "", Gap()]`` locked the space that ``["The ", Gap()]`` moves into the
    gap, and ``["The", " ", Gap()]`` encoded ``"The"`` and ``" "`` apart)."""
    out: list[str | Gap] = []
    for p in segments:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        else:
            out.append(p)
    return out


def start_context(tokenizer: Any) -> list[int]:
    """The ids of ``START_CONTEXT``: what a gap (or an edited token) at the start of a text is
    filled (or scored) after; ``[]`` (no context) when the tokenizer has no line break of its
    own: the ids must decode to exactly ``START_CONTEXT`` and, where the tokenizer knows its
    tokens' bytes, stand for exactly its bytes (a SentencePiece vocabulary without one gave
    the unknown token, or a stray ``"▁"`` piece before ``<0x0A>``)."""
    ids = list(tokenizer.encode(START_CONTEXT))
    if not ids or tokenizer.decode(ids) != START_CONTEXT:
        return []
    token_bytes = getattr(tokenizer, "token_bytes", None)
    if token_bytes is not None and b"".join(token_bytes(i) for i in ids) != START_CONTEXT.encode():
        return []
    return ids


def with_start_context(plan: Plan, tokenizer: Any, max_seq_len: int | None = None, *,
                       start_ids: Sequence[int] = ()) -> Plan:
    """``plan`` with ``("context", START_CONTEXT)`` first when its first item is a hole that
    starts the text (``Hole.lead``), the tokenizer has the context (``start_context``) and it
    fits ``max_seq_len``; else ``plan``. ``start_ids`` (a published model's BOS, which every
    text of its training began with) are that context instead, whatever the first item."""
    ids = list(start_ids)
    if not ids:
        if not plan.items or plan.items[0][0] != "hole" or not plan.holes[plan.items[0][1]].lead:
            return plan
        ids = start_context(tokenizer)
    if not ids:
        return plan
    out = Plan(items=[("context", (ids, "")), *plan.items], holes=plan.holes)
    try:
        check_context(out, max_seq_len)
    except UserError:
        return plan
    return out


def check_context(plan: Plan, max_seq_len: int | None) -> None:
    """``UserError`` when the template cannot fit ``max_seq_len`` tokens, naming the gap."""
    if max_seq_len is None:
        return
    fixed = plan.fixed_tokens
    mins = [h.candidates[0] for h in plan.holes]
    if fixed + sum(mins) > max_seq_len:
        raise UserError(
            f"template needs at least {fixed + sum(mins)} tokens ({fixed} of text), "
            f"more than {CONTEXT_WORDS} {max_seq_len})"
        )
    for k, h in enumerate(plan.holes):
        room = max_seq_len - fixed - (sum(mins) - mins[k])
        if h.candidates[-1] > room:
            g = h.gap
            # a constrained gap with no length: its maximum is default_max_len's
            default = g is not None and g.length is None and g.max_len is None and g.constrained
            raise GapRoomError(h.label, h.candidates[-1], room, max_seq_len, fixed, default)


class GapError(UserError):
    """A refusal about a gap of a template, typed so that a caller can say which input to
    change without reading the message (the server's ``param``): ``gap``, the gap's number
    (1-based, in template order), where the refusal is about that gap's constraint (no text
    of its lengths satisfies it, or the model takes no constraint); None where it is about the
    template itself (a gap's length: past the context, or a range the model cannot size)."""

    def __init__(self, message: str, gap: int | None = None) -> None:
        self.gap = gap
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:  # its gap too (a copy, pickle)
        return (type(self), (str(self), self.gap))


class GapRoomError(GapError):
    """A gap that may be longer than the room the model's context leaves it (``check_context``).
    ``str()`` ends with how to fix it; where the gap's maximum is ``default_max_len``'s (a
    constrained gap with no length) that is a maximum of its own or a lower
    ``default_max_len``: ``message(default_hint=False)`` leaves the second out, for a caller
    whose users do not set it (the server's clients: its infill request has no such field)."""

    def __init__(self, label: str, longest: int, room: int, max_seq_len: int, fixed: int,
                 default: bool) -> None:
        self.label, self.longest, self.room = label, longest, room
        self.max_seq_len, self.fixed, self.default = max_seq_len, fixed, default
        super().__init__(self.message())

    def __reduce__(self) -> tuple[Any, ...]:  # its arguments, not its message (a copy, pickle)
        return (type(self), (self.label, self.longest, self.room, self.max_seq_len, self.fixed,
                             self.default))

    def message(self, *, default_hint: bool = True,
                spell: Callable[[str], str] = lambda field: field) -> str:
        """The one-line refusal; ``default_hint``: suggesting a lower ``default_max_len``
        where it set the maximum; ``spell``: how the caller's users name that
        ``InfillOptions`` field (the CLI: its flag)."""
        if not self.default:
            fix = "lower its maximum"
        else:
            fix = "give it a maximum ([MASK:1-n])" + (
                f" or lower {spell('default_max_len')}" if default_hint else "")
        return (f"{self.label}: up to {self.longest} tokens, but only {self.room} fit in "
                f"{CONTEXT_WORDS} {self.max_seq_len}, {plural(self.fixed, 'token')} of text); "
                f"{fix}")


# -- canvases ---------------------------------------------------------------------------------


@dataclass
class Spans:
    """Where each hole sits in each row of a canvas built from layouts."""

    holes: list[list[tuple[int, int]]]
    """holes[row][k] = (start, end) columns of hole k in that row."""
    texts: list[list[tuple[int, int]]] = field(default_factory=list)
    """texts[row] = (start, end) columns of each text item, in order."""


def _group_name(labels: Sequence[str]) -> str:
    """The name of a constraint shared by holes ``labels``: up to three named, else the first
    and a count (800 gaps named an error line of 800 labels)."""
    if len(labels) <= 3:
        return ", ".join(labels)
    return f"{labels[0]} and {len(labels) - 1} others"


def layouts_canvas(
    layouts: Sequence[Sequence[tuple[str, Any]]],
    automata: Sequence[TokenAutomaton],
    labels: Sequence[str],
    *,
    mask_id: int,
    pad_id: int,
    fill: Sequence[Sequence[Sequence[int] | None]] | None = None,
) -> tuple[Canvas, Spans]:
    """One canvas row per layout (right-padded with ``pad_id``), holes masked, text locked,
    one ``GapConstraint`` per distinct automaton over the spans of its holes in every row,
    the region spanning the holes.

    ``fill[row][k]``, when given and not None, puts those tokens in hole k instead of masks
    (still constrained: used to rescore or to keep a hole fixed).
    """
    rows: list[list[int]] = []
    spans = Spans(holes=[], texts=[])
    for r, layout in enumerate(layouts):
        ids: list[int] = []
        hole_spans: list[tuple[int, int]] = [(0, 0)] * len(automata)
        text_spans: list[tuple[int, int]] = []
        for kind, v in layout:
            if kind != "hole":  # text, or context
                text_spans.append((len(ids), len(ids) + len(v[0])))
                ids.extend(v[0])
            else:
                k, n = v
                given = None if fill is None else fill[r][k]
                hole_spans[k] = (len(ids), len(ids) + n)
                ids.extend(list(given) if given is not None else [mask_id] * n)
        rows.append(ids)
        spans.holes.append(hole_spans)
        spans.texts.append(text_spans)
    L = max(len(r) for r in rows)
    tokens = torch.full((len(rows), L), pad_id, dtype=torch.long)
    real = torch.zeros(len(rows), L, dtype=torch.bool)
    for r, ids in enumerate(rows):
        tokens[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        real[r, : len(ids)] = True
    starts = [s for row in spans.holes for (s, e) in row if e > s]
    ends = [e for row in spans.holes for (s, e) in row if e > s]
    region = (min(starts), max(ends)) if starts else (0, 0)
    # one GapConstraint per automaton, over the spans of every hole that shares it (the
    # cached automaton of every unconstrained gap is one object): each constraint copies the
    # (B, L, V) logits once a step, and one per hole made a step quadratic in the gaps (800
    # gaps of a template: 6 s for 8 steps of a model that costs nothing, 0.5 s so)
    groups: dict[int, list[int]] = {}
    for k, a in enumerate(automata):
        groups.setdefault(id(a), []).append(k)
    constraints = [
        GapConstraint(
            automata[ks[0]], [(r, *spans.holes[r][k]) for k in ks for r in range(len(rows))],
            mask_id=mask_id, name=_group_name([labels[k] for k in ks]),
        )
        for ks in groups.values()
    ]
    canvas = Canvas.from_tokens(
        tokens, mask_id=mask_id, attention_mask=real, region=region, constraints=constraints
    )
    return canvas, spans


def template_canvas(
    template: str | Sequence[str | Gap],
    tokenizer: Any,
    *,
    lengths: Sequence[int] | None = None,
) -> Canvas:
    """A template as a one-row ``Canvas``, not filled (``unmask.infill.infill`` fills one).

    ``lengths`` gives each gap's length in tokens; by default each gap's fixed length, and
    ``UserError`` for a variable-length gap. The text is kept as written (no space moves into
    a gap: ``infill`` does that, and puts the space back when the fill lacks one).
    """
    plan = plan_template(template, tokenizer, move_spaces=False)
    if lengths is None:
        variable = [h.label for h in plan.holes if len(h.feasible) != 1]
        if variable:
            raise UserError(
                f"{variable[0]} has a variable length: "
                "pass lengths=[...] or use unmask.infill.infill"
            )
        lengths = [h.feasible[0] for h in plan.holes]
    lengths = list(lengths)
    if len(lengths) != len(plan.holes):
        raise UserError(f"lengths has {plural(len(lengths), 'entry', 'entries')} for "
                        f"{plural(len(plan.holes), 'gap')}")
    for h, n in zip(plan.holes, lengths, strict=True):
        if n not in h.feasible:
            raise UserError(f"{h.label}: length {n} is outside its bounds or unsatisfiable")
    canvas, _ = layouts_canvas(
        [plan.layout(lengths)], [h.automaton for h in plan.holes], [h.label for h in plan.holes],
        mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id,
    )
    return canvas


__all__ = [
    "DEFAULT_MAX_LEN",
    "Gap",
    "Hole",
    "Plan",
    "Spans",
    "check_context",
    "find_gap",
    "gap_automaton",
    "NAMED_CLASSES",
    "check_gap",
    "own_automaton",
    "joins_spaces",
    "layouts_canvas",
    "leads",
    "parse_template",
    "segment_ids",
    "start_context",
    "with_start_context",
    "plan_template",
    "is_count",
    "split_choices",
    "takes_space",
    "template_canvas",
]

