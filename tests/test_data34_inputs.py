"""Inputs named twice through a link (session 34)."""

from __future__ import annotations

import pytest

from unmask.data import prepare
from unmask.errors import UserError

KW = {"tokenizer": "byte", "val_fraction": 0, "progress": False}


def test_a_link_to_a_file_of_the_same_folder_is_named_as_one(tmp_path):
    """The message guessed "(a file and a folder holding it?)" for a folder given once that
    holds a link to one of its files (``latest.txt -> v3.txt``)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello")
    (corpus / "b.txt").symlink_to("a.txt")
    with pytest.raises(UserError, match=r"a.txt: given once more as .*b.txt \(.*b.txt is a "
                                        r"link to it\); name each file once$"):
        prepare([corpus], tmp_path / "d", **KW)
    with pytest.raises(UserError, match=r"b.txt: given once more as .*a.txt \(it is a link to "
                                        r".*a.txt\)"):
        prepare([corpus / "b.txt", corpus / "a.txt"], tmp_path / "d", **KW)
    with pytest.raises(UserError, match=r"a.txt: given twice \(a file and a folder holding "
                                        r"it\?\)"):
        prepare([corpus / "a.txt", corpus], tmp_path / "d", **KW)
