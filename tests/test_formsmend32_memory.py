"""The memory guard's count of a built index, session 32 review: the varint runs read on
Python 3.10 (which the project supports), and the limit is told as it is set."""

from __future__ import annotations

import random
import re
import sys

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import _VARINT_RUN, TokenAutomaton, index_moves, vocab_of
from unmask.tokenizer import byte_tokenizer

BYTES = vocab_of(byte_tokenizer())


def test_the_varint_run_has_no_possessive_quantifier():
    """``{1,65536}+`` is Python 3.11 syntax: on 3.10 importing ``unmask.infill.automaton``
    raised ``re.error: multiple repeat``, breaking every constrained path."""
    parser = pytest.importorskip("re._parser") if sys.version_info >= (3, 11) else None
    if parser is None:
        return  # 3.10: the module imported, so the pattern compiled
    ops = repr(parser.parse(_VARINT_RUN.pattern.decode("latin-1"), _VARINT_RUN.flags).data)
    assert "MAX_REPEAT" in ops and "POSSESSIVE_REPEAT" not in ops


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the possessive form needs 3.11")
def test_the_greedy_run_matches_as_the_possessive_one_did():
    possessive = re.compile(_VARINT_RUN.pattern + b"+", re.DOTALL)
    rng = random.Random(0)
    width = {251: 2, 252: 4, 253: 8}
    # whole varints (every width), then noise: bytes 254/255 and cut-off varints
    whole = bytearray()
    for _ in range(3000):
        first = rng.choice([rng.randrange(251), 251, 252, 253])
        whole += bytes([first]) + rng.randbytes(width.get(first, 0))
    index = automaton._index("(?:a|[a-z]{0,3}){4}", BYTES, "regex")
    for data in (bytes(whole), bytes(whole) + b"\xfd\x01", rng.randbytes(4000),
                 index.__reduce__()[1][0]):
        for at in range(0, len(data), 7):
            a, b = _VARINT_RUN.match(data, at), possessive.match(data, at)
            assert (a and a.span()) == (b and b.span())
    assert index_moves(index) == sum(map(len, index.get_transitions().values()))


def test_the_limit_is_told_as_set_not_rounded_down(monkeypatch):
    """A 1.37 MB limit was told as "the 1 MB limit"."""
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, "1.37")
    with pytest.raises(UserError) as e:
        TokenAutomaton.from_regex(".{60}", BYTES, what="regex")
    assert "over the 1.37 MB limit" in str(e.value)
    assert automaton._in_megabytes(1 << 20) == "1 MB"
    assert automaton._in_megabytes(3947 << 20) == "3947 MB"
    assert automaton._in_megabytes(1000) == "1000 bytes"
