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


def test_a_template_file_that_cannot_be_read_is_said_so(tmp_path, monkeypatch):
    """Only a name too long for a file is taken for Jinja text (review rm8): a template file
    behind a folder that cannot be entered was reported as 'no such file'."""
    import errno
    from pathlib import Path

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)  # (what is_file and is_dir ask)
    with pytest.raises(UserError, match=r"t\.jinja: cannot be read \(Permission denied\)"):
        template_arg(str(tmp_path / "t.jinja"))
