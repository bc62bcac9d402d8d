"""Templates, session 36: a gap longer than any context is named by its line and column, as
every other malformed gap is (the message named the gap alone)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill.template import parse_template


@pytest.mark.parametrize("text, where", [
    ("[MASK:200000]", "template column 1: "),
    ("ab\ncd [MASK:city:1-99999999999999999999]", "template line 2 column 4: "),
])
def test_a_gap_past_any_context_is_named_by_its_column(text, where):
    with pytest.raises(UserError) as e:
        parse_template(text)
    assert str(e.value).startswith(where)
    assert "longer than any model's context" in str(e.value)
