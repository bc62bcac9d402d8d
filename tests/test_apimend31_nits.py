"""Session 31 (apimend): ``system=`` without a template, on a model with no chat template of
its own, names a way that works (``api.chat_template(m)`` refuses such a model)."""

from __future__ import annotations

import pytest
from server_helpers import loaded, random_transformer

from unmask import api
from unmask.errors import UserError


def test_system_without_a_template_on_a_model_without_one_names_a_way_that_works():
    m = loaded(random_transformer())
    assert not m.config.chat_template
    with pytest.raises(UserError) as e:
        api.generate(m, "Hi", system="Be brief.", config={"gen_length": 4})
    said = str(e.value)
    assert 'pass template="plain"' in said and "chat_template(m)" not in said
    assert "\n" not in said and "--template" not in said
    with pytest.raises(UserError, match="--template plain"):  # the way it named before
        api.chat_template(m)
    out = api.generate(m, "Hi", system="Be brief.", config={"gen_length": 4}, template="plain")
    assert len(out.texts) == 1
