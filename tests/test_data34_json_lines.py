"""A .json file / stdin of JSON Lines whose first record has a long field before its text
field (session 34)."""

from __future__ import annotations

import io
import json
import sys

from unmask import data
from unmask.data import TokenDataset, prepare

KW = {"tokenizer": "byte", "val_fraction": 0, "progress": False}


def _records(first_field: str) -> str:
    return "".join(json.dumps(r) + "\n" for r in (
        {first_field: "m" * 1_500_000, "text": "hello"}, {first_field: "s", "text": "world"}))


def _texts(out) -> str:
    ds = TokenDataset(out, "train")
    return ds.tokenizer().decode(ds.read(0, ds.n_tokens).tolist(), skip_special=False)


def test_a_text_field_after_the_first_megabyte_is_found(tmp_path, monkeypatch):
    """Only the members starting in the first 1 MB were looked at: the file was read as text,
    2 MB of JSON syntax trained on, with a note saying it had no field 'text'."""
    (tmp_path / "a.json").write_text(_records("html"))
    info = prepare([tmp_path / "a.json"], tmp_path / "d", **KW)
    assert (info.n_documents, list(info.notes)) == (2, [])
    assert _texts(info.out) == "hello[EOS]world[EOS]"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(_records("html").encode())))
    info = prepare(["-"], tmp_path / "e", **KW)
    assert _texts(info.out) == "hello[EOS]world[EOS]"


def test_a_long_object_without_the_field_is_still_text(tmp_path, monkeypatch):
    """The look stops at 64 times the first 1 MB (here 64 KB): a minified JSON document is
    text, with the note, not read whole to find out."""
    monkeypatch.setattr(data, "_PEEK_BYTES", 1024)
    body = json.dumps({"a": "x" * 100_000, "text": "late"})
    (tmp_path / "a.json").write_text(body)
    info = prepare([tmp_path / "a.json"], tmp_path / "d", **KW)
    assert info.n_documents == 1 and _texts(info.out) == body + "[EOS]"
    assert any("read as plain text" in n for n in info.notes)
