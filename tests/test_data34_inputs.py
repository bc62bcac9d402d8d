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


def test_a_hard_link_to_a_file_read_is_refused_as_a_file_named_twice(tmp_path):
    """A hard link (``cp -al``, a deduplicating backup) put the same text in the stream twice,
    possibly once in training and once in validation; a symbolic link was refused already."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello")
    (corpus / "b.txt").hardlink_to(corpus / "a.txt")
    with pytest.raises(UserError, match=r"a.txt: given once more as .*b.txt \(a hard link to "
                                        r"the same file\); name each file once$"):
        prepare([corpus], tmp_path / "d", **KW)
    (corpus / "b.txt").unlink()
    (corpus / "b.txt").write_text("hello")  # a copy is another file: read
    assert prepare([corpus], tmp_path / "d", **KW).n_documents == 2
