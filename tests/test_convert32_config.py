"""ModelConfig's sample_defaults from Python (session 32): not a dict, or a key that is not a
name, is one line (both were a TypeError from the error's own join)."""

from __future__ import annotations

import pytest

from unmask.config import ModelConfig
from unmask.errors import UserError


@pytest.mark.parametrize(("value", "words"), [
    ([1], "sample_defaults must be a dict of sampling options, not [1]"),
    ({1: 2, "steps": 4}, "sample_defaults: 1 is not a sampling option"),
    ({"stepz": 4}, "sample_defaults: stepz (did you mean steps?) is not a sampling option"),
])
def test_bad_sample_defaults_are_one_line(value: object, words: str) -> None:
    with pytest.raises(UserError) as e:
        ModelConfig(vocab_size=16, sample_defaults=value)  # type: ignore[arg-type]
    assert str(e.value) == words
