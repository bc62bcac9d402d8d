"""A Jinja string whose text holds a run of 256+ characters without a '/' is a template, not
an ``OSError: File name too long`` traceback from the file probe (``api.chat(template=...)``,
``--template TEXT``, ``serve --chat-template TEXT``)."""

from __future__ import annotations

import pytest

from unmask.chat import template_arg
from unmask.errors import UserError

LONG = "{% for m in messages %}{{ m.content }}{% endfor %}{# " + "x" * 300 + " #}"


def test_a_long_jinja_string_is_a_template():
    chat = template_arg(LONG)
    assert chat.render([{"role": "user", "content": "hi"}]) == "hi"


def test_a_long_string_that_is_not_jinja_is_no_such_file():
    with pytest.raises(UserError, match="no such file"):
        template_arg("x" * 300)
