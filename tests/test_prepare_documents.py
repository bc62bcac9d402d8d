"""What ``prepare`` counts as a document: a text file or JSONL record of only whitespace is
none (as a blank line of ``--line-docs`` is none), and ``--line-docs`` given with nothing but
JSONL inputs gets a note instead of being ignored silently."""

from __future__ import annotations

import json

import numpy as np

from unmask import data
from unmask.cli import main

KW = {"tokenizer": "byte", "val_fraction": 0, "progress": False}


def _tokens(out) -> np.ndarray:
    ds = data.TokenDataset(out, "train")
    return ds.read(0, ds.n_tokens)


def test_a_whitespace_only_text_file_is_no_document(tmp_path):
    (tmp_path / "a.txt").write_text("a real document\n")
    (tmp_path / "b.txt").write_text("  \n\t\n \r\n")
    (tmp_path / "c.txt").write_text(" " * 70_000)  # longer than a piece fed at a time
    both = data.prepare([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"],
                        tmp_path / "both", **KW)  # fmt: skip
    alone = data.prepare([tmp_path / "a.txt"], tmp_path / "alone", **KW)
    assert both.n_documents == alone.n_documents == 1
    assert np.array_equal(_tokens(tmp_path / "both"), _tokens(tmp_path / "alone"))


def test_a_document_with_leading_whitespace_keeps_it(tmp_path):
    text = " " * 70_000 + "words at last\n"
    (tmp_path / "a.txt").write_text(text)
    info = data.prepare([tmp_path / "a.txt"], tmp_path / "out", **KW)
    assert info.n_documents == 1
    assert info.n_tokens["train"] == len(text.encode()) + 1  # bytes and the document's EOS


def test_a_whitespace_only_jsonl_record_is_no_document(tmp_path):
    recs = [{"text": "first"}, {"text": "  \n "}, {"text": ""}, {"text": "second"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    info = data.prepare([tmp_path / "a.jsonl"], tmp_path / "out", **KW)
    assert info.n_documents == 2


def test_a_whitespace_only_corpus_is_empty(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n \n")
    assert main(["prepare", str(tmp_path / "a.txt"), "-o", str(tmp_path / "out"),
                 "--tokenizer", "byte"]) == 2  # fmt: skip
    assert "the inputs hold no text (empty corpus)" in capsys.readouterr().err


def test_line_docs_with_only_jsonl_inputs_gets_a_note(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "b.txt").write_text("three\nfour\n")
    note = ("--line-docs (line_docs= in Python) was not used: every input is JSONL, one "
            "document per record already (it splits text files by line)")
    only = data.prepare([tmp_path / "a.jsonl"], tmp_path / "only", line_docs=True, **KW)
    assert note in only.notes
    mixed = data.prepare([tmp_path / "a.jsonl", tmp_path / "b.txt"], tmp_path / "mixed",
                         line_docs=True, **KW)  # fmt: skip
    assert note not in mixed.notes and mixed.n_documents == 4


def test_a_long_line_of_only_whitespace_is_no_line_document(tmp_path):
    """Longer than a piece fed at a time, it was cut into pieces before its end was read."""
    lines = ["a real line", " " * 70_000, "\t" * 5_000 + " " * 70_000, "another line",
             " " * 70_000 + "words after spaces"]  # fmt: skip
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    info = data.prepare([tmp_path / "a.txt"], tmp_path / "out", line_docs=True, **KW)
    assert info.n_documents == 3
    want = sum(len(line.encode()) + 1 for line in lines if line.strip())  # bytes and an EOS
    assert info.n_tokens["train"] == want
