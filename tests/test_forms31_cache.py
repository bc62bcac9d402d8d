"""The on-disk automaton cache, session 31: an entry whose arrays are not an automaton over
the tokenizer (edited, foreign, or written by other code under the same name) is rebuilt."""

from __future__ import annotations

import io

import numpy as np
import pytest

from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
PATTERN = "[a-c]{2,4}x"


def _stored(arrays: dict[str, np.ndarray], **changed: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, **changed})
    return buf.getvalue()


BAD = {
    "token_class cut short": lambda z: {"token_class": z["token_class"][:10]},
    "table flat": lambda z: {"table": z["table"].ravel()},
    "table of floats": lambda z: {"table": z["table"].astype(np.float32)},
    "dead_class a vector": lambda z: {"dead_class": np.array([1, 2])},
    "start past the states": lambda z: {"start": np.int64(10**6)},
    "classes past the table": lambda z: {"token_class": z["token_class"] + 1000},
    "states past the table": lambda z: {"table": z["table"] + 1000},
    "accept cut short": lambda z: {"accept": z["accept"][:1]},
}


@pytest.mark.parametrize("damage", list(BAD), ids=list(BAD))
def test_an_entry_that_is_no_automaton_is_rebuilt(tmp_path, monkeypatch, damage):
    """It gave an ``IndexError`` at the first step that read it, a ``TypeError``, or (a short
    ``token_class``) an automaton that refused the text its pattern matches."""
    monkeypatch.setenv("UNMASK_CACHE_DIR", str(tmp_path))
    vocab = vocab_of(TOK)
    first = TokenAutomaton.from_regex(PATTERN, vocab)
    (entry,) = (tmp_path / "automata").iterdir()
    with np.load(entry) as z:
        arrays = {k: z[k] for k in z.files}
    entry.write_bytes(_stored(arrays, **BAD[damage](arrays)))
    again = TokenAutomaton.from_regex(PATTERN, vocab)
    assert again.accepts(TOK.encode("abx")) and not again.accepts(TOK.encode("ax"))
    assert again.allowed([None, None, None]) is not None
    assert (again.table == first.table).all()
    with np.load(entry) as z:  # rewritten whole
        assert (z["table"] == first.table).all()
