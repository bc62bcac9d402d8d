"""Session 36's review findings: an ``added_tokens_decoder`` key that ``str.isdigit`` accepts
but ``int`` does not (``'²'``) is a one-line refusal, not a ``ValueError`` traceback."""

from __future__ import annotations

import json

import pytest

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
