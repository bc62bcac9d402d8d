"""``unmask.prepare`` given arguments of the wrong kind: one line naming the argument (was a
``TypeError`` from inside, or a truthy string taken for True), ``vocab_size`` with a tokenizer
that brings its own vocabulary refused as the CLI refuses ``--vocab-size`` (it was ignored),
and numpy scalars taken as the numbers they are."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unmask import data
from unmask.errors import UserError

KW = {"val_fraction": 0, "progress": False}


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "a.txt").write_text("some words of text, and more words of text\n" * 20)
    return tmp_path / "a.txt"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokenizer": None}, "tokenizer must be a name or path, not NoneType"),
        ({"vocab_size": "4096"}, "vocab_size must be an integer or None, not str"),
        ({"vocab_size": True}, "vocab_size must be an integer or None, not bool"),
        ({"tokenizer": "byte", "val_fraction": "0.1"}, "val_fraction must be a number, not str"),
        ({"tokenizer": "byte", "line_docs": "no"}, "line_docs must be a bool, not str"),
        ({"tokenizer": "byte", "vocab_size": 300},
         "vocab_size trains a BPE tokenizer (tokenizer='bpe'); tokenizer 'byte' brings its own "
         "vocabulary"),
    ],
)
def test_a_wrong_argument_is_one_line_naming_it(tmp_path, corpus, kwargs, message):
    with pytest.raises(UserError) as e:
        data.prepare(corpus, tmp_path / "out", **{**KW, **kwargs})
    assert str(e.value) == message
    assert not (tmp_path / "out").exists()


def test_numpy_scalars_and_a_path_tokenizer_are_taken(tmp_path, corpus):
    first = data.prepare(corpus, tmp_path / "a", vocab_size=np.int64(300), **KW)
    again = data.prepare(corpus, tmp_path / "b", tokenizer=tmp_path / "a" / "tokenizer.json",
                         val_fraction=np.float64(0), line_docs=np.bool_(False),
                         seed=np.int32(3), progress=False)  # fmt: skip
    assert first.n_tokens == again.n_tokens
    assert json.loads((tmp_path / "b" / "index.json").read_text())["seed"] == 3
