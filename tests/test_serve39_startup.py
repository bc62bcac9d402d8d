"""``unmask serve --chat-template`` that names nothing, is a folder or does not render is
refused before torch loads, as ``unmask chat --template`` is (it waited for the model)."""

from __future__ import annotations

import pytest
from cli_helpers import refusal


@pytest.mark.parametrize(("template", "said"), [
    ("nosuch-unmask-serve39.jinja", "no such file"), (".", "is a folder"),
    ("{{ oops", "failed to render")])
def test_a_bad_chat_template_is_refused_before_torch(template, said):
    err = refusal(["serve", "--model", "demo", "--chat-template", template])
    line = err.strip().splitlines()[-1]
    assert said in line and "--chat-template" in line
