"""``TokenAutomaton.intersect`` (the product, built a level of pairs at a time) accepts
exactly what both automata accept, and stays within ``MAX_STATES``."""

from __future__ import annotations

import numpy as np
import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import _BYTES, TokenAutomaton


@pytest.mark.parametrize(("r1", "r2"), [
    (r'"X[\w ]{1,12}"', r'"[^"\\\x00-\x1f]{0,}"'),
    ("[a-c]{2,5}", "a*b[abc]*"),
    ("(ab|ba)*", "[ab]{0,6}"),
    ("x+", "y+"),  # empty intersection
])
def test_the_product_accepts_what_both_accept(r1, r2):
    a, b = TokenAutomaton.from_regex(r1, _BYTES), TokenAutomaton.from_regex(r2, _BYTES)
    both = a.intersect(b)
    rng = np.random.default_rng(0)
    alphabet = sorted(set((r1 + r2 + "Xab c").encode()))
    for _ in range(2000):
        seq = [int(x) for x in rng.choice(alphabet, int(rng.integers(0, 10)))]
        assert both.accepts(seq) == (a.accepts(seq) and b.accepts(seq)), seq
    for text in ("abab", "abc", '"X ab"', "xy"):
        seq = list(text.encode())
        assert both.accepts(seq) == (a.accepts(seq) and b.accepts(seq)), text


def test_a_product_over_the_state_limit_is_refused(monkeypatch):
    a = TokenAutomaton.from_regex("[a-z]{0,40}", _BYTES)
    b = TokenAutomaton.from_regex("(?:[a-z][0-9]?){0,40}", _BYTES)
    monkeypatch.setattr(automaton, "MAX_STATES", 10)
    with pytest.raises(UserError, match="over 10 states"):
        a.intersect(b)
