"""``Gap`` fields of the wrong type are one-line ``UserError`` s when the gap is made, not a
TypeError deep in the automaton compiler (``regex=5``, ``allowed=5``), in a message
(``name=5``), or a silent misreading (``banned="the"`` banned every t, h and e)."""

from __future__ import annotations

import numpy as np
import pytest

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill import Gap, infill
from unmask.tokenizer import byte_tokenizer


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(regex=5), "a gap: regex must be a str, not int"),
        (dict(allowed=5), "a gap: allowed must be a character class name or token ids, not int"),
        (dict(allowed=[1.5]), "token ids, not float (1.5)"),
        (dict(allowed=[True]), "token ids, not bool (True)"),
        (dict(name=5), "a gap: name must be a str, not int (5)"),
        (dict(banned="the"), "banned is a list of strings or token ids, not one string ('the')"),
        (dict(banned=5), "banned must be strings or token ids, not int"),
        (dict(banned=[None]), "banned must be strings or token ids, not NoneType (None)"),
        (dict(take_space=1), "take_space must be True or False, not 1"),
        (dict(name="city", regex=5), "city: regex must be a str"),
    ],
)
def test_a_gap_field_of_the_wrong_type_is_refused_in_one_line(fields, message):
    with pytest.raises(UserError) as err:
        Gap(**fields)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_gap_fields_of_the_right_types_still_fill():
    tok = byte_tokenizer()

    class Uniform:
        def __call__(self, tokens, attention_mask=None):
            import torch

            return torch.zeros(*tokens.shape, tok.vocab_size)

    a, b = tok.encode("a")[0], tok.encode("b")[0]
    for gap in (Gap(2, allowed=np.array([a, b])), Gap(2, allowed=[a, b], banned=["b"]),
                Gap(2, allowed=(np.int64(a),), take_space=False)):
        r = infill(Uniform(), tok, ["x ", gap, " y"], SampleConfig(steps=1))
        assert set(r.gaps[0].text) <= {"a", "b"} and len(r.gaps[0].text) == 2
        assert "b" not in r.gaps[0].text or gap.banned == ()
