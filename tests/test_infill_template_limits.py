"""Template planning refuses what cannot be filled at once: a huge gap range with a regex
(its feasible lengths were stepped one by one: 14 s of CPU for ``[MASK:1-100000]``), and
an item of the wrong type (``["a", 5]`` said "template has no gaps")."""

from __future__ import annotations

import numpy as np
import pytest

from unmask.errors import UserError
from unmask.infill import Gap, gap_automaton, plan_template
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def _stepped(automaton, max_len: int) -> np.ndarray:
    """``feasible_lengths`` by stepping every length (the reference)."""
    cur = np.zeros(automaton.table.shape[0], dtype=bool)
    cur[automaton.start] = True
    out = np.zeros(max_len + 1, dtype=bool)
    for n in range(max_len + 1):
        out[n] = bool((cur & automaton.accept).any())
        nxt = np.zeros_like(cur)
        nxt[automaton.table[np.nonzero(cur)[0]].reshape(-1)] = True
        nxt[automaton.dead] = False
        cur = nxt
    return out


@pytest.mark.parametrize("gap", [
    Gap(regex=r"\w+"), Gap(regex=r"(ab){2,5}"), Gap(regex=r"a(bcd)*e"), Gap(regex=r"(aa|bbb)+"),
    Gap(regex=r"\d{3}(-\d{2})?"), Gap(choices=["x", "yyyy"]), Gap(), Gap(regex="(abcde)*f?"),
])
def test_feasible_lengths_equal_stepping_every_length(gap):
    a = gap_automaton(gap, TOK)
    for n in (0, 1, 7, 40, 300):
        assert np.array_equal(a.feasible_lengths(n), _stepped(a, n))


def test_a_long_range_is_not_stepped_length_by_length(monkeypatch):
    a = gap_automaton(Gap(regex=r"(ab|cde)+"), TOK)
    want = _stepped(a, 200)
    calls = 0
    real = np.nonzero

    def counted(x):
        nonlocal calls
        calls += 1
        return real(x)

    monkeypatch.setattr(np, "nonzero", counted)
    got = a.feasible_lengths(100_000)
    monkeypatch.undo()
    assert calls < 100  # a handful of distinct state sets, then the period repeats
    assert np.array_equal(got[:201], want) and got[100_000] == want[100]  # period 1 by then


def test_a_huge_gap_with_a_regex_is_refused_with_the_numbers():
    with pytest.raises(UserError, match=r"^gap 1: up to 100000 tokens, but "
                       r"only 60 fit .*max_seq_len 64"):
        plan_template(["A ", Gap(min_len=1, max_len=100_000, regex=r"\w+"), " b"], TOK,
                      max_seq_len=64)


@pytest.mark.parametrize(("template", "name"), [
    (["a", 5], "int"), ([Gap(), None], "NoneType"), (["a", b"b", Gap()], "bytes"),
])
def test_an_item_of_the_wrong_type_is_named(template, name):
    with pytest.raises(UserError, match=rf"^template items must be text or Gap, got {name}$"):
        plan_template(template, TOK)
