"""A pattern's moves over a large vocabulary, session 31: the library hands every (state,
token) move over as one Python dict (about 260 bytes each at a compile's peak), so a long
``.``-run over a 126k vocabulary took tens of GB; it is estimated and refused first."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.tokenizer import byte_tokenizer, load_tokenizer

BYTES = vocab_of(byte_tokenizer())


def _demo():
    from pathlib import Path

    path = Path(automaton.__file__).parents[1] / "assets" / "demo" / "tokenizer.json"
    return vocab_of(load_tokenizer(str(path)))


def test_a_pattern_with_too_many_moves_is_refused_before_the_engine(monkeypatch):
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")
    monkeypatch.setattr(automaton, "MAX_TRANSITIONS", 5000, raising=False)

    def no_engine(*a, **k):
        raise AssertionError("the engine was run")

    monkeypatch.setattr(automaton, "_index", no_engine)
    with pytest.raises(UserError, match="too large for this tokenizer") as e:
        TokenAutomaton.from_regex(".{40}", BYTES, what="guided_regex")
    assert "\n" not in str(e.value) and str(e.value).startswith("guided_regex: ")
    # a narrow class moves on few tokens: within the same limit
    automaton.check_transitions("a{1000}", BYTES)
    automaton.check_transitions("[0-9]{100}", BYTES)


@pytest.mark.parametrize("pattern", [".{30}", "[a-z]{2,40}", "a{100}", r"\w{1,8} \d{2}",
                                     "(?:ab|é)+x", "[^,]{0,20}", r"\S{1,5}"])
def test_the_estimate_bounds_the_moves_the_library_builds(pattern):
    """On these patterns the estimate is at least the moves of the library's map (its start
    and end marks aside), and within 1.1-1.7x of it for the wide ones (``.{30}``: 133,988
    for 117,208 over the demo's 4,096 tokens)."""
    for vocab in (BYTES, _demo()):
        sizes = automaton._estimated_sizes(pattern)
        assert sizes is not None
        estimate = automaton.estimated_moves(sizes, vocab, vocab.lengths > 0)[0]
        moves = automaton._index(pattern, vocab, "x").get_transitions()
        actual = sum(1 for m in moves.values() for t in m if t < vocab.size)
        assert actual <= estimate, (pattern, actual, estimate)
