"""``Tokenizer.save`` given a file name, as HF's ``Tokenizer.save`` takes one: the file is
written there (it made a folder ``tokenizer.json/`` holding the file, or, for a file that was
there, a ``FileExistsError`` traceback); a folder, even one named ``*.json``, still gets its
``tokenizer.json``."""

from __future__ import annotations

from unmask.tokenizer import byte_tokenizer, load_tokenizer


def test_a_json_file_name_is_the_file(tmp_path):
    tok = byte_tokenizer()
    assert tok.save(tmp_path / "out" / "tokenizer.json") == tmp_path / "out" / "tokenizer.json"
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    (tmp_path / "mine.json").write_text("old")
    assert tok.save(tmp_path / "mine.json") == tmp_path / "mine.json"
    assert load_tokenizer(tmp_path / "mine.json").encode("hi") == tok.encode("hi")


def test_a_folder_gets_its_tokenizer_json(tmp_path):
    tok = byte_tokenizer()
    assert tok.save(tmp_path / "d") == tmp_path / "d" / "tokenizer.json"
    (tmp_path / "odd.json").mkdir()
    assert tok.save(tmp_path / "odd.json") == tmp_path / "odd.json" / "tokenizer.json"
