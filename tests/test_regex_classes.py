"""``guard_pattern``: '.', negated classes and class escapes leave out START/SENTINEL.

Every constraint is compiled as ``START(?:pattern)SENTINEL``; a class of the pattern that
also matched ``START`` let the engine's unanchored DFA track a match start per character of
a counted run (2^n states for ``.{1,n}``). These tests check that the rewrite keeps every
pattern's language on texts without the two noncharacters, that the unanchored DFA of a
counted run now grows linearly, and that a pattern spelling either character is refused.
"""

from __future__ import annotations

import itertools
import json
import random
import re

import numpy as np
import pytest

from unmask.errors import UserError
from unmask.infill import automaton, parse_form
from unmask.infill.automaton import (
    _BYTES,
    SENTINEL,
    START,
    TokenAutomaton,
    check_regex,
    guard_pattern,
)
from unmask.tokenizer import byte_tokenizer

PATTERNS = [
    ".{0,4}",
    "a.b",
    "[^,]{1,3}x?",
    r"\D+5?",
    r"\W\w*",
    r"\S\s?\S",
    r"\.{1,2}",
    r"[.]\.?a",
    "[^a-f0-9]+",
    "(?:[^,]|,.)*",
    "[a-d][^b-c]{0,2}",
    "(?s).{0,3}",
    "(?s:a.)b.?",
    "(a(?s)..)?.",
    r"(?R).\n?",
    "(?i)[^k]x?",
    "[]a]+",
    "[^]a]*,",
    "[a-z&&[^aeiou]]{1,3}",
    r"\p{L}\P{L}?",
    r"[\x00-\x{10FFFF}]{2}",
    "(a|.)(?i:.K)?",
    r"\x2e.",
    r"[^\]\[]{2}",
]
"""Dots, negated classes, shorthands, escaped dots, classes with ranges, nested classes, set
operations and the flags that change '.' (s, R, i), in the engine's syntax."""

ALPHABET = list("abkKxz,.\n\r5 -]_\t") + ["\u0663", "é", "€", "\U0001f600", "\u212a"]
"""Characters the patterns treat differently (an Arabic-Indic digit, the Kelvin sign that
case-folds to k, a 4-byte emoji), none of them START or SENTINEL."""


def _bytes_automaton(pattern: str) -> TokenAutomaton:
    return TokenAutomaton.from_regex(pattern, _BYTES)


def _texts(seed: int, count: int) -> list[str]:
    """Every text of up to 3 characters over a few, then random ones over ``ALPHABET``."""
    rng = random.Random(seed)
    out = {"".join(t) for k in range(4) for t in itertools.product("ab,.K\n", repeat=k)}
    count += len(out)
    while len(out) < count:
        out.add("".join(rng.choice(ALPHABET) for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6]))))
    return sorted(out)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_guarded_pattern_accepts_exactly_what_the_original_does(pattern, monkeypatch):
    """The engine on the rewritten pattern against the engine on the pattern as written,
    over 400 random texts: the same verdict on every one, both verdicts occurring."""
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")  # both versions share one cache key
    guarded = _bytes_automaton(pattern)
    monkeypatch.setattr(automaton, "guard_pattern", lambda p, what="regex": p)
    original = _bytes_automaton(pattern)
    verdicts = []
    for text in _texts(seed=sum(map(ord, pattern)), count=400):
        seq = list(text.encode("utf-8"))
        want = original.accepts(seq)
        assert guarded.accepts(seq) == want, (pattern, text)
        verdicts.append(want)
    assert any(verdicts) and not all(verdicts), pattern


def test_guarded_patterns_agree_with_python_re():
    """Where Python's syntax means the same (no nested classes, no engine escapes), the
    rewritten pattern matches what ``re.fullmatch`` of the original matches."""
    for pattern in [
        ".{0,4}",
        "[^,]{1,3}x?",
        r"\D+5?",
        r"\.{1,2}",
        r"[.]\.?a",
        "(?s).{0,3}",
        "[^a-f0-9]+",
        "(a|.)(?i:.K)?",
    ]:
        guarded = _bytes_automaton(pattern)
        for text in _texts(seed=7, count=300):
            want = re.fullmatch(pattern, text) is not None
            assert guarded.accepts(list(text.encode("utf-8"))) == want, (pattern, text)


def test_dot_and_negated_classes_no_longer_match_the_marks():
    for pattern in [".", "[^,]", r"\D", r"\W", r"\S", r"\P{L}", "(?s).", r"[\x00-\x{10FFFF}]"]:
        a = _bytes_automaton(pattern)
        assert a.accepts(list(b"!")), pattern
        for mark in (START, SENTINEL):
            assert not a.accepts(list(mark.encode("utf-8"))), (pattern, mark)


def _unanchored_states(pattern: str, cap: int = 5000) -> int:
    """States of the DFA the engine builds for an unanchored search of ``START(?:pattern)``
    + SENTINEL (a match may begin at any token; the subset construction over the index's
    anchored DFA, whose only way out of its initial state is START): the part the engine
    builds in full although the index never reads it."""
    index = automaton._index(pattern, _BYTES, "regex")
    moves = index.get_transitions()
    init = index.get_initial_state()
    states = sorted(set(moves) | {init} | {q for m in moves.values() for q in m.values()})
    number = {q: i for i, q in enumerate(states)}
    tokens = sorted({t for m in moves.values() for t in m})
    table = np.full((len(states), len(tokens)), -1, dtype=np.int64)  # (S, T) next, or -1
    col = {t: j for j, t in enumerate(tokens)}
    for q, m in moves.items():
        for t, r in m.items():
            table[number[q], col[t]] = number[r]
    table = np.unique(table, axis=1)  # (S, K): tokens that act alike from every state, once
    first = np.zeros(len(states), dtype=bool)
    first[number[init]] = True
    seen = {first.tobytes()}
    todo = [first]
    while todo and len(seen) < cap:
        members = np.nonzero(todo.pop())[0]
        nxt = table[members]  # (|set|, K)
        after = np.zeros((table.shape[1], len(states)), dtype=bool)  # (K, S) next set per class
        rows, cols = np.nonzero(nxt >= 0)
        after[cols, nxt[rows, cols]] = True
        after[:, number[init]] = True  # a new match may begin after any token
        for row in np.unique(after, axis=0):
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                todo.append(row)
    return len(seen)


def test_counted_runs_keep_the_unanchored_dfa_linear(monkeypatch):
    """Doubling the count of ``.{1,n}`` or ``[^,]{1,n}`` at most doubles the unanchored DFA
    (plus a constant); the pattern as written (no rewrite) multiplies it by 2^n."""
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")
    for tpl, n in [(".{{1,{}}}", 6), ("[^,]{{1,{}}}", 6), (r"\D{{{}}}", 3)]:
        small, large = (_unanchored_states(tpl.format(k)) for k in (n, 2 * n))
        assert large <= 2 * small + 16, (tpl, small, large)
    monkeypatch.setattr(automaton, "guard_pattern", lambda p, what="regex": p)
    small, large = (_unanchored_states(f".{{1,{k}}}") for k in (3, 6))
    assert large >= 6 * small, (small, large)  # the blow-up this guards against (120 -> 1016)


@pytest.mark.parametrize(
    "pattern", [r"a\x{10FFFE}", "a" + SENTINEL, r"\U0010FFFE", r"\u{10ffff}b", r"(x|\x{10FFFF})"]
)
def test_a_pattern_naming_the_marks_is_refused(pattern):
    with pytest.raises(UserError, match="names U\\+10FFFE or U\\+10FFFF") as err:
        check_regex(pattern, "regex")
    assert "\n" not in str(err.value)


def test_an_invalid_code_point_is_the_engines_error_not_the_refusal():
    """Only U+10FFFE/U+10FFFF are refused as reserved, and a braced code point is not a
    counted repetition (``\\x{10000}`` was once read as ``{10000}``, over ``MAX_REPEAT``)."""
    with pytest.raises(UserError, match="rejects it"):
        check_regex(r"a\x{110000}")
    check_regex(r"\x{10000}\u{2000}[\x{10FFFD}]")
    with pytest.raises(UserError, match="quantifier"):
        check_regex(r"\\x{5000}")  # an escaped backslash, then x 5000 times


def test_classes_that_name_the_marks_are_kept_without_them():
    """A class may name them (the form's JSON character class excludes them itself): the
    rewrite leaves the class's meaning on every other character."""
    check_regex("[^a" + START + SENTINEL + "]{3}")
    check_regex(r"[\x{10FFF0}-\x{10FFFF}]")
    assert guard_pattern(r"\.[.]\\") == r"\.[[.]--[\x{10FFFE}\x{10FFFF}]]\\"
    assert guard_pattern("(?-u:a.)") == "(?-u:a.)"  # byte mode: left as written


def test_form_regex_hole_with_a_long_counted_dot_compiles():
    """``fill-form`` with ``<regex:.{1,40}>`` and ``<regex:[^,]{1,40}>``: 2^40 sets of match
    starts before the rewrite (never finished), a few hundred states now."""
    template = json.dumps({"x": "<regex:.{1,40}>", "y": "<regex:[^,]{1,40}>"})
    _, holes, automata = parse_form(template, byte_tokenizer())
    assert len(holes) == len(automata) == 2
    assert holes[1].matches("é" * 40 + '"') and not holes[1].matches("é" * 41 + '"')
    assert holes[0].matches("a,b" + '"') and not holes[1].matches("a,b" + '"')


def test_deeply_nested_classes_are_read_without_recursion():
    """The class reader loops (a depth count): 5000 nested brackets are read and handed to
    the engine, whose nesting limit refuses them in one line."""
    deep = "[" * 5000 + "a" + "]" * 5000
    assert guard_pattern(deep).startswith("[" + deep + "--[")
    with pytest.raises(UserError):
        check_regex(deep)
    assert guard_pattern("[[a-c]--[b]]x[") == r"[[[a-c]--[b]]--[\x{10FFFE}\x{10FFFF}]]x["
