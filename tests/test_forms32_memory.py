"""Forms, session 32: the memory guard holds where the moves estimate is under the engine's
count (counted on the built index before the library's dict)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.tokenizer import byte_tokenizer, load_tokenizer

BYTES = vocab_of(byte_tokenizer())
UNDER = r"(?:a|[a-z]{0,3}){8}"
"""Overlapping alternation in a counted repetition: the engine keeps its states apart in
priority order, so the estimate was under its moves (about 0.3x over bytes) until session 34
counted them in that order; ``test_an_automaton_over_its_estimate_is_refused_before_the_dict``
now makes the estimate a quarter of the count to stand for a pattern it still misjudges."""


def _tokenizer():
    from pathlib import Path

    path = Path(automaton.__file__).parents[1] / "assets" / "demo" / "tokenizer.json"
    return load_tokenizer(str(path))


def _demo():
    return vocab_of(_tokenizer())


@pytest.mark.parametrize("pattern", ["ab", UNDER, r"\w{1,3}\s\w{1,3}", "[0-9]{3}",
                                     r"(?:\S|[a-z]{0,4}){2}", r'"[^"]{0,40}"'])
def test_the_moves_of_a_built_index_are_counted_exactly(pattern):
    """``index_moves`` reads the engine's serialized index: the same count as the dict the
    library hands over, for small and large token ids (one- to three-byte varints)."""
    for vocab in (BYTES, _demo()):
        index = automaton._index(pattern, vocab, "x")
        actual = sum(len(m) for m in index.get_transitions().values())
        assert automaton.index_moves(index) == actual, pattern
        assert automaton.index_moves(index, at_most=10**9) == 10**9  # not read: it fits


def test_an_automaton_over_its_estimate_is_refused_before_the_dict(monkeypatch):
    """The estimate passed ``(?:a|[a-z]{0,3}){8}`` at a limit its automaton is over (0.3x):
    the library's dict of its moves was built whatever the limit (29.6M moves where 6.4M
    were estimated at 126k tokens, 4 GB where 0.9 GB was allowed); now it is refused, one
    line, once the engine's index is counted."""
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")
    vocab = _demo()
    actual = automaton.index_moves(automaton._index(UNDER, vocab, "x"))
    estimate = actual // 4  # the case this guards: an estimate under the count
    monkeypatch.setattr(automaton, "estimated_moves", lambda *a: (estimate, 1))
    limit = (estimate + actual) // 2 * automaton.BYTES_PER_MOVE
    monkeypatch.setattr(automaton, "automaton_memory_limit", lambda: limit)
    automaton.check_transitions(UNDER, vocab)  # the estimate fits
    with pytest.raises(UserError, match="too large for this tokenizer") as e:
        TokenAutomaton.from_regex(UNDER, vocab, what="guided_regex")
    assert "\n" not in str(e.value) and str(e.value).startswith("guided_regex: ")
    assert f"has {actual} token moves" in str(e.value)
    # within the limit it compiles as before
    monkeypatch.setattr(automaton, "automaton_memory_limit", lambda: 2 * limit)
    assert TokenAutomaton.from_regex(UNDER, vocab).accepts_text("abcaz", _tokenizer())
