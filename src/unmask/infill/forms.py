"""Form filling: a JSON template whose values are typed holes, filled in one diffusion pass.

Inside:

- ``parse_form(template)``: JSON text (or parsed JSON) → skeleton text pieces and
  ``FormHole`` s. A string value of the form ``"<type>"`` or ``"<type:args>"`` is a hole:

  ============================  ===============================================  ==========
  hole                          value                                            default
  ============================  ===============================================  ==========
  ``<text>`` ``<text:a-b>``     a JSON string of a to b characters (``:n`` = n)  1-16
  ``<int>`` ``<int:a-b>``       an integer of a to b digits, optional ``-``      1-6
  ``<float>`` ``<float:a-b>``   ``-?digits.digits`` with a to b digits in all    2-8
  ``<bool>``                    ``true`` or ``false``
  ``<choice:A|B|C>``            one of the strings (``\\|`` for a literal ``|``)
  ``<regex:R>``                 a JSON string whose text matches ``R`` in full   16 chars
  ============================  ===============================================  ==========

  ``"\\\\<int>"`` (a backslash first) is the literal string ``"<int>"``.
- ``fill_form``: all holes masked at once in one canvas with the skeleton locked, and
  filled by the one sampler loop; returns a ``FormResult`` whose ``text`` always parses.

How the guarantee holds for any model: each hole is a fixed number of canvas positions
governed by one automaton over its whole span: the value (string characters without
``"``, ``\\`` or control characters, closing quote included), then spaces, which JSON
allows after a value. The automaton is applied to the logits at every step and spans it
rejects are refilled (``unmask.infill.fill_canvas``), so every span is a valid value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill.automaton import TokenAutomaton, cached_automaton, vocab_of
from unmask.infill.dfa import (
    ANY,
    DFA,
    CharSet,
    Node,
    alt,
    any_char,
    cat,
    embed,
    lit,
    rep,
    to_dfa,
)
from unmask.infill.fill import _max_seq_len, fill_canvas
from unmask.infill.regex import compile_regex
from unmask.infill.template import layouts_canvas, split_choices
from unmask.messages import plural
from unmask.sampling.loop import MaskPredictor, StepCallback

HOLE_TYPES = ("text", "int", "float", "bool", "choice", "regex")
_HOLE = re.compile(r"<([A-Za-z_]+)(?::(.*))?>", re.DOTALL)
MAX_REGEX_CHARS = 16
"""Longest text (bytes) a ``<regex:...>`` hole with an unbounded pattern may hold."""

# A character a JSON string may hold unescaped: no '"', no '\\', no control character.
JSON_CHAR = CharSet(frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}, frozenset(), ANY.non_ascii)
DIGIT = CharSet(frozenset(range(48, 58)))
NONZERO = CharSet(frozenset(range(49, 58)))


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
    """Canvas positions (tokens) it gets: the longest value plus the closing quote."""
    quoted: bool = False
    """A JSON string: its opening quote is part of the skeleton, the closing one of the hole."""
    text: str = ""
    """The filled JSON text of the value (after filling)."""
    value: Any = None
    """The parsed value (after filling)."""
    dfa: DFA | None = field(default=None, repr=False)


@dataclass
class FormResult:
    """What ``fill_form`` returns."""

    text: str
    """The filled JSON text as sampled (holes may be followed by padding spaces)."""
    value: Any
    """``json.loads(text)``."""
    holes: list[FormHole]
    nfe: int
    """Model evaluations (repairs included)."""
    repaired: int = 0
    """Holes refilled because a first pass broke them."""

    def pretty(self, indent: int | None = 2) -> str:
        """``value`` as indented JSON."""
        return json.dumps(self.value, indent=indent, ensure_ascii=False)


# -- hole languages ---------------------------------------------------------------------------


def _bounds(args: str | None, default: tuple[int, int], where: str, least: int = 0) -> tuple[int, int]:
    if args is None or args == "":
        return default
    lo_s, dash, hi_s = args.partition("-")
    if not lo_s.strip().isdigit() or (dash and not hi_s.strip().isdigit()):
        raise UserError(f"{where}: bad length {args!r}; use N or MIN-MAX")
    lo = int(lo_s)
    hi = int(hi_s) if dash else lo
    if hi < lo:
        raise UserError(f"{where}: bounds inverted (min {lo} > max {hi})")
    if lo < least:
        raise UserError(f"{where}: length must be at least {least}")
    if hi > 1000:
        raise UserError(f"{where}: length over 1000")
    return lo, hi


def _int_node(lo: int, hi: int) -> Node:
    """An integer with ``lo``..``hi`` digits and no leading zero."""
    branches = []
    if lo <= 1:
        branches.append(lit("0"))
    if hi >= 1:
        branches.append(cat(any_char(NONZERO), rep(any_char(DIGIT), max(lo, 1) - 1, hi - 1)))
    return alt(*branches)


def _hole_dfa(kind: str, args: str | None, where: str) -> tuple[DFA, int, bool]:
    """(DFA of the value text, longest value in bytes, whether the skeleton opens a quote)."""
    if kind == "text":
        lo, hi = _bounds(args, (1, 16), where)
        return to_dfa(cat(rep(any_char(JSON_CHAR), lo, hi), lit('"'))), hi + 1, True
    if kind == "int":
        lo, hi = _bounds(args, (1, 6), where, least=1)
        return to_dfa(cat(rep(lit("-"), 0, 1), _int_node(lo, hi))), hi + 1, False
    if kind == "float":
        lo, hi = _bounds(args, (2, 8), where, least=2)
        branches = [cat(_int_node(i, i), lit("."), rep(any_char(DIGIT), f, f))
                    for i in range(1, hi) for f in range(1, hi - i + 1) if lo <= i + f <= hi]
        return to_dfa(cat(rep(lit("-"), 0, 1), alt(*branches))), hi + 2, False
    if kind == "bool":
        if args:
            raise UserError(f"{where}: <bool> takes no arguments")
        return to_dfa(alt(lit("true"), lit("false"))), 5, False
    if kind == "choice":
        if not args:
            raise UserError(f"{where}: <choice:...> needs choices, e.g. <choice:red|green|blue>")
        encoded = [json.dumps(c, ensure_ascii=False)[1:] for c in split_choices(args)]  # content + '"'
        return to_dfa(alt(*(lit(e) for e in encoded))), max(len(e.encode("utf-8")) for e in encoded), True
    if kind == "regex":
        if not args:
            raise UserError(f"{where}: <regex:...> needs a pattern")
        try:
            user = compile_regex(args)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        safe = user.intersect(to_dfa(rep(any_char(JSON_CHAR), 0, None)))
        if safe.is_empty():
            raise UserError(f"{where}: no text matching the regex can stand in a JSON string")
        longest = safe.max_length()
        if longest is None:
            longest = max(MAX_REGEX_CHARS, safe.min_length() or 0)
        return to_dfa(cat(embed(safe), lit('"'))), longest + 1, True
    raise UserError(f"{where}: unknown hole type {kind!r}; choose one of {', '.join(HOLE_TYPES)}")


def _hole(spec: str, path: str, tokenizer: Any) -> tuple[FormHole, TokenAutomaton, bool]:
    m = _HOLE.fullmatch(spec)
    assert m is not None
    kind, args = m.group(1), m.group(2)
    where = f"hole {path} {spec!r}"
    dfa, width, quoted = _hole_dfa(kind, args, where)

    def build() -> TokenAutomaton:
        padded = to_dfa(cat(embed(dfa), rep(lit(" "), 0, None)))  # value, then spaces
        return TokenAutomaton.from_dfa(padded, vocab_of(tokenizer))

    automaton = cached_automaton(tokenizer, ("form", kind, args), build)
    if not automaton.feasible_lengths(width)[width]:
        raise UserError(f"{where}: no sequence of {plural(width, 'token')} satisfies it with this "
                        "tokenizer")
    return FormHole(path=path, spec=spec, kind=kind, width=width, quoted=quoted, dfa=dfa), automaton, quoted


# -- templates --------------------------------------------------------------------------------


def _load(template: str | Any, source: str) -> Any:
    if not isinstance(template, str):
        return template
    try:
        return json.loads(template)
    except json.JSONDecodeError as e:
        raise UserError(f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def parse_form(
    template: str | Any, tokenizer: Any, *, source: str = "form template"
) -> tuple[list[tuple[str, Any]], list[FormHole], list[TokenAutomaton]]:
    """Skeleton and holes of a form template (JSON text, or already parsed JSON).

    Returns layout items (``("text", str)`` skeleton pieces or ``("hole", k)``), the holes
    and their automata. ``UserError`` for invalid JSON (with line and column), an unknown
    hole type, bad bounds or a hole no token sequence can fill.
    """
    value = _load(template, source)
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
                emit(sub, f"{path}.{k}" if re.fullmatch(r"[A-Za-z_]\w*", k) else f"{path}[{json.dumps(k)}]")
            text("}")
        elif isinstance(v, list):
            text("[")
            for i, sub in enumerate(v):
                if i:
                    text(", ")
                emit(sub, f"{path}[{i}]")
            text("]")
        elif isinstance(v, str) and _HOLE.fullmatch(v):
            hole, automaton, quoted = _hole(v, path, tokenizer)
            if quoted:
                text('"')
            if buf:
                items.append(("text", "".join(buf)))
                buf.clear()
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

    emit(value, "$")
    if buf:
        items.append(("text", "".join(buf)))
    if not holes:
        raise UserError(f"{source}: no holes; write values such as \"<text:2-8>\", \"<int>\" or \"<choice:a|b>\"")
    return items, holes, automata


def fill_form(
    model: MaskPredictor,
    tokenizer: Any,
    template: str | Any,
    config: SampleConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    source: str = "form template",
) -> FormResult:
    """Fill every hole of a JSON form template at once; the result always parses as JSON.

    All holes are masked together in one canvas with the skeleton locked and denoised in
    one pass of ``unmask.sampling.sample`` (``config``; ``steps`` is capped at the number of
    masked positions, ``gen_length`` is ignored). Each hole's value satisfies its type.
    """
    config = config or SampleConfig()
    items, holes, automata = parse_form(template, tokenizer, source=source)
    layout: list[tuple[str, Any]] = []
    for kind, v in items:
        if kind == "text":
            layout.append(("text", (list(tokenizer.encode(v)), v)))
        else:
            layout.append(("hole", (v, holes[v].width)))
    total = sum(len(v[0]) if k == "text" else v[1] for k, v in layout)
    max_seq_len = _max_seq_len(model)
    if max_seq_len is not None and total > max_seq_len:
        raise UserError(
            f"{source}: the form needs {total} tokens (holes at their widest), more than the model's "
            f"context (max_seq_len {max_seq_len}); use fewer or shorter holes"
        )
    canvas, spans = layouts_canvas([layout], automata, [f"hole {h.path}" for h in holes],
                                   mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id)
    filled = fill_canvas(model, canvas, config, eos_id=getattr(tokenizer, "eos_id", None), generator=generator,
                         step_callback=step_callback)
    row = filled.tokens[0].tolist()
    vocab = vocab_of(tokenizer)
    parts: list[str] = []
    for kind, v in layout:
        if kind == "text":
            parts.append(v[1])
        else:
            k = v[0]
            s, e = spans.holes[0][k]
            raw = vocab.decode(row[s:e])
            parts.append(raw)
            holes[k].text = ('"' if holes[k].quoted else "") + raw.rstrip(" ")
            holes[k].value = json.loads(holes[k].text)
    text = "".join(parts)
    return FormResult(text=text, value=json.loads(text), holes=holes, nfe=filled.nfe, repaired=filled.repaired)
