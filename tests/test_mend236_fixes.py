"""Session 36's review findings: an ``added_tokens_decoder`` key that ``str.isdigit`` accepts
but ``int`` does not (``'²'``) is a one-line refusal, not a ``ValueError`` traceback;
``invoked_as`` (``unmask demo``'s hints) names ``python -m unmask`` by this package's own
``__main__.py`` and does not crash where ``sys.executable`` is None."""

from __future__ import annotations

import json
import os
import sys

import pytest

import unmask.__main__
from unmask.commands.demo import invoked_as
from unmask.convert.qwen2_tokenizer import added_tokens
from unmask.errors import UserError


def _config(tmp_path, decoder):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    return tmp_path


def test_an_added_token_key_that_int_cannot_read_is_one_line(tmp_path) -> None:
    """``'²'.isdigit()`` is True and ``int('²')`` a ``ValueError`` (transformers' own loader
    fails on it too, with a traceback): a publisher folder with it was a traceback."""
    folder = _config(tmp_path, {"²": {"content": "<|mask|>"}})
    with pytest.raises(UserError, match=r"added_tokens_decoder entry '²' is not an id"):
        added_tokens(folder)
    # a decimal digit of another script is one int() reads, as transformers does
    assert added_tokens(_config(tmp_path, {"٣": {"content": "<m>"}})) == [(3, {"content": "<m>"})]


def test_python_m_unmask_with_no_known_python_is_python_m_unmask(monkeypatch) -> None:
    """Python documents ``sys.executable`` as empty or None where it cannot tell: None was a
    ``TypeError`` (``os.path.dirname(None)``) before the fallback to ``python``."""
    monkeypatch.setenv("PATH", "")
    for exe in (None, ""):
        monkeypatch.setattr(sys, "executable", exe)
        assert invoked_as(unmask.__main__.__file__) == "python -m unmask"


def test_only_this_packages_main_is_python_m_unmask(tmp_path, monkeypatch) -> None:
    """Any ``.../foounmask/__main__.py`` (or another ``unmask`` folder's) was taken for
    ``python -m unmask``: the test was the path's ending."""
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    for name in ("foounmask", "unmask"):
        other = tmp_path / name / "__main__.py"
        other.parent.mkdir()
        other.write_text("")
        assert invoked_as(str(other)) == "unmask"
    assert invoked_as(unmask.__main__.__file__).endswith(" -m unmask")
    assert invoked_as(os.path.relpath(unmask.__main__.__file__)).endswith(" -m unmask")
