"""Prepared-data edges fixed in session 32: a ``.json`` file or standard input whose first
JSON Lines record is over 1 MB was read as plain text (JSON syntax and all); a pretty-printed
JSON object piped to ``prepare -`` got no note while the same ``.json`` file did; an
``index.json`` listing shards (or its tokenizer) by a path outside its folder was read."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from unmask import data
from unmask.errors import UserError

BIG = "word " * 500  # a first record longer than the peek (1 MB, made 1 KB here)


@pytest.fixture(autouse=True)
def _small_peek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_PEEK_BYTES", 1024)


def _train_bytes(folder: Path) -> bytes:
    index = json.loads((folder / "index.json").read_text())
    return b"".join((folder / s).read_bytes() for s in index["splits"]["train"]["shards"])


def _stdin(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))


@pytest.mark.parametrize("first", [{"text": BIG}, {"id": 7, "text": BIG},
                                   {"text": BIG, "meta": {"a": [1, 2]}}])
def test_a_json_file_whose_first_record_is_over_a_megabyte_is_json_lines(
    tmp_path: Path, first: dict
) -> None:
    lines = json.dumps(first) + "\n" + json.dumps({"text": "second"}) + "\n"
    (tmp_path / "c.json").write_text(lines)
    kw = dict(tokenizer="byte", val_fraction=0, progress=False)
    info = data.prepare(tmp_path / "c.json", tmp_path / "j", **kw)
    assert not any("plain text" in n for n in info.notes)
    assert info.n_bytes["train"] == len(BIG) + len("second")  # the texts, not the JSON around them


def test_standard_input_whose_first_record_is_over_a_megabyte_is_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stdin(monkeypatch, (json.dumps({"text": BIG}) + "\n").encode())
    info = data.prepare("-", tmp_path / "out", tokenizer="byte", val_fraction=0, progress=False)
    assert info.n_bytes["train"] == len(BIG)


def test_a_long_first_line_that_is_no_record_is_still_text(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"config": "' + BIG + '"}\n')  # no field "text"
    info = data.prepare(tmp_path / "c.json", tmp_path / "out", tokenizer="byte",
                        val_fraction=0, progress=False)
    assert any("read as plain text" in n for n in info.notes)


def test_a_pretty_printed_object_on_standard_input_gets_the_note_a_json_file_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.dumps({"title": "a", "body": "some text"}, indent=2) + "\n"
    (tmp_path / "doc.json").write_text(doc)
    kw = dict(tokenizer="byte", val_fraction=0, progress=False)
    from_file = data.prepare(tmp_path / "doc.json", tmp_path / "f", **kw)
    _stdin(monkeypatch, doc.encode())
    piped = data.prepare("-", tmp_path / "p", **kw)
    note = [n for n in from_file.notes if "read as plain text" in n]
    assert note
    assert [n.replace("<stdin>", "x") for n in piped.notes if "read as plain text" in n] == [
        note[0].replace(str(tmp_path / "doc.json"), "x")
        .replace("convert a JSON array of records with jq -c '.[]' in.json > out.jsonl",
                 "pipe a JSON array of records through jq -c '.[]' first")]


def test_text_that_starts_with_a_brace_on_standard_input_gets_no_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stdin(monkeypatch, b"{curly} braces in prose\nand more\n")
    info = data.prepare("-", tmp_path / "out", tokenizer="byte", val_fraction=0, progress=False)
    assert not any("plain text" in n for n in info.notes)


@pytest.mark.parametrize("key,value", [
    ("shards", ["../outside.bin"]), ("shards", ["/etc/hostname"]), ("shards", ["a/b.bin"]),
    ("shards", [".."]), ("shards", [""]), ("shards", ["x\0.bin"]), ("tokenizer", "../t.json"),
])
def test_an_index_naming_files_outside_its_folder_is_refused(
    tmp_path: Path, key: str, value: object
) -> None:
    (tmp_path / "c.txt").write_text("some text to prepare " * 50)
    out = tmp_path / "ds"
    data.prepare(tmp_path / "c.txt", out, tokenizer="byte", val_fraction=0, progress=False)
    (tmp_path / "outside.bin").write_bytes((out / "train-00000.bin").read_bytes())
    index = json.loads((out / "index.json").read_text())
    if key == "shards":
        index["splits"]["train"]["shards"] = value
    else:
        index["tokenizer"] = value
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=f"field (splits.train.)?{key} .*in the folder"):
        data.TokenDataset(out, "train").tokenizer()


def test_plain_name() -> None:
    from unmask.files import plain_name

    assert plain_name("train-00000.bin") and plain_name("model-1.safetensors")
    for bad in ("", ".", "..", "../x", "/x", "a/b", "x\0", None, 3):
        assert not plain_name(bad)
