"""Tokenizer edge cases (session 29 audit)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def test_an_unpaired_surrogate_is_a_one_line_error_naming_it():
    """A str holding ``\\ud800`` (JSON's escape, a file name read with surrogateescape) raised
    HF's TypeError "TextInputSequence must be str", about a str."""
    with pytest.raises(UserError, match=r"^the text holds an unpaired surrogate \(U\+D800 at "
                       r"character 3\)"):
        TOK.encode("ab \ud800 c")
    with pytest.raises(UserError, match=r"^text 1 of the batch holds an unpaired surrogate "
                       r"\(U\+DCFF at character 0\)"):
        TOK.encode_batch(["fine", "\udcff"])


def test_a_non_string_is_still_a_type_error():
    with pytest.raises(TypeError):
        TOK.encode(42)  # type: ignore[arg-type]
    assert TOK.encode_batch(x for x in ["ab"]) == [TOK.encode("ab")]  # any iterable, as before


def test_prepared_text_is_not_normalised(tmp_path):
    """docs/data.md: nothing is normalised; NFC and NFD forms stay as they are."""
    from unmask.data import TokenDataset, prepare

    text = "caf\u00e9 cafe\u0301 \ufb01 \u2460 A\u030a \u212b " * 40
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    prepare([tmp_path / "a.txt"], tmp_path / "d", vocab_size=300, val_fraction=0,
            progress=False)
    ds = TokenDataset(tmp_path / "d", "train")
    assert ds.tokenizer().decode(ds.read(0, ds.n_tokens).tolist()) == text
    assert ds.n_bytes == len(text.encode("utf-8"))


def test_a_path_object_named_like_a_built_in_tokenizer_is_that_folder(tmp_path, monkeypatch):
    """``tokenizer=Path("bpe")`` trained a new BPE tokenizer, ignoring ./bpe/tokenizer.json (the
    CLI's --tokenizer bpe takes ./bpe when it exists)."""
    from pathlib import Path

    from unmask.data import TokenDataset, prepare

    monkeypatch.chdir(tmp_path)
    TOK.save(tmp_path / "bpe")
    (tmp_path / "a.txt").write_text("some text " * 50, encoding="utf-8")
    prepare(["a.txt"], "d", tokenizer=Path("bpe"), val_fraction=0, progress=False)
    assert TokenDataset("d", "train").vocab_size == TOK.vocab_size == 260
