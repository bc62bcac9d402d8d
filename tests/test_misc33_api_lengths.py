"""``api.infill``, ``api.edit`` and ``api.fill_form`` given a ``gen_length`` in their
options: it was silently ignored (the text sets the lengths), while ``unmask infill
--gen-length`` is refused in one line. The API refuses it the same way, naming what sets the
length; a ``SampleConfig`` (which always holds one) and options without it still run."""

from __future__ import annotations

import pytest
from server_helpers import loaded as as_loaded
from server_helpers import random_transformer

from unmask import api
from unmask.config import SampleConfig
from unmask.errors import UserError


@pytest.fixture(scope="module")
def loaded():
    return as_loaded(random_transformer())


CALLS = {
    "infill": lambda lo, c: api.infill(lo, "a [MASK:2] b", config=c),
    "edit": lambda lo, c: api.edit(lo, "abc", spans=[(0, 1)], config=c),
    "fill_form": lambda lo, c: api.fill_form(lo, {"n": "<digits:1>"}, config=c),
}


@pytest.mark.parametrize("task", sorted(CALLS))
def test_gen_length_in_options_is_refused(loaded, task):
    with pytest.raises(UserError) as e:
        CALLS[task](loaded, {"gen_length": 200, "steps": 2})
    message = str(e.value)
    assert message == f"gen_length does not apply to {task}: {api.LENGTH_SET_BY[task]}"
    assert "\n" not in message
    assert CALLS[task](loaded, {"steps": 2}).text  # not given: it runs
    assert CALLS[task](loaded, SampleConfig(steps=2)).text  # its default gen_length: runs
