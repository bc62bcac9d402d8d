"""The automaton estimate counts states as the engine keeps them, in priority order (session
34): overlapping alternatives inside a counted repetition made the engine's DFA up to 90x the
estimate (``(?:x|[a-z]{0,4}|[a-c]{0,6}){8}``: 252 estimated, 23,418 built; its moves 0.01x
the built ones at a 16k vocabulary), so the memory guard let through a compile of tens of
gigabytes that only the count after the engine's build could refuse."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import _estimated_sizes, _index, estimated_moves, index_moves, vocab_of
from unmask.infill.dfa import dfa_states
from unmask.tokenizer import byte_tokenizer

BYTES = vocab_of(byte_tokenizer())

OVERLAPPING = [
    "(?:x|[a-z]{0,4}|[a-c]{0,6}){3}",
    "(?:x|[a-z]{0,3}|[a-c]{0,4}){4}",
    "(?:[a-c]{0,3}|x|[a-z]{0,2}){4}",
    "(?:a|[a-z]{0,3}){4}",
]


@pytest.mark.parametrize("pattern", OVERLAPPING)
def test_the_estimate_is_not_under_the_engine(pattern):
    index = _index(pattern, BYTES, "regex")
    built = len(index.get_transitions())
    assert dfa_states(pattern, 10**6) >= built
    keep = BYTES.lengths > 0
    assert estimated_moves(_estimated_sizes(pattern), BYTES, keep)[0] >= index_moves(index)


def test_a_pattern_whose_engine_dfa_is_too_large_is_refused_before_it_builds(monkeypatch):
    """``(?:\\w{0,3}|\\d{0,5}){6}`` has 66,297 engine states, over ``MAX_DFA_STATES``: it was
    estimated at 31,732 and built (seconds of native code at 256 tokens, at a 126k vocabulary
    minutes and gigabytes) to be refused only afterwards for its token states."""
    pattern = r"(?:\w{0,3}|\d{0,5}){6}"
    assert dfa_states(pattern, automaton.MAX_DFA_STATES) > automaton.MAX_DFA_STATES

    def engine(*args, **kwargs):
        raise AssertionError("the engine built the pattern")

    monkeypatch.setattr(automaton, "_index", engine)
    with pytest.raises(UserError, match="too large"):
        automaton.TokenAutomaton.from_regex(pattern, BYTES)


def test_priority_order_alone_tells_states_apart():
    """The same alternatives in another order: the engine's counts differ (23,418 and 6,848 at
    {8}); both estimates stay within 1.5x over the engine's at {3}."""
    for pattern in ("(?:x|[a-z]{0,4}|[a-c]{0,6}){3}", "(?:[a-c]{0,6}|x|[a-z]{0,4}){3}"):
        built = len(_index(pattern, BYTES, "regex").get_transitions())
        assert built <= dfa_states(pattern, 10**6) <= 1.5 * built
