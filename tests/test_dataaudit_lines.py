"""--line-docs reads a long line in linear time (session 29 audit)."""

from __future__ import annotations

import re

from unmask import data


class _CountingSplit:
    """``data.LINE_END`` that counts the characters it is asked to search."""

    def __init__(self) -> None:
        self.searched = 0

    def split(self, text: str) -> list[str]:
        self.searched += len(text)
        return re.split(r"\r\n|\r|\n", text)


def test_a_long_line_of_whitespace_is_searched_for_line_ends_once(tmp_path, monkeypatch):
    """A line held whole while it is only whitespace was searched again after every 64 KB
    read: quadratic (8 MB of spaces then a word: 8.6 s in the split, 29 s in all; 7.5 s now)."""
    size = 2_000_000
    p = tmp_path / "a.txt"
    p.write_text(" " * size + "word\r\nnext line\n", encoding="utf-8")
    counter = _CountingSplit()
    monkeypatch.setattr(data, "LINE_END", counter)
    info = data.prepare([p], tmp_path / "d", tokenizer="byte", val_fraction=0, line_docs=True,
                        progress=False)
    assert info.n_documents == 2
    assert counter.searched <= size + 100  # each character once (it was ~16x the file)
    ds = data.TokenDataset(tmp_path / "d", "train")
    text = ds.tokenizer().decode(ds.read(0, ds.n_tokens).tolist(), skip_special=False)
    assert text == " " * size + "word[EOS]next line[EOS]"
