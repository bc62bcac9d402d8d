"""A one-line .json object of many small members (a minified word count) is looked at in its
first 1 MB only, once per file, keeping names, not values: the look-ahead for a long field
before the text field walked every member of its first 64 MB in Python, values and all, three
times per run, and kept them for the run (session 34: 0.24 s -> 23 s to tell a 188 MB file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unmask import data

KW = {"tokenizer": "byte", "val_fraction": 0, "progress": False}


@pytest.fixture(autouse=True)
def _small_peek(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_PEEK_BYTES", 1024)  # 1 MB made 1 KB: 64 times it is 64 KB


def _count(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """The byte limits of the peeks at a first line, and the number of object walks."""
    limits: list[int] = []
    walks: list[int] = []
    peek, head = data._Source.peek_nonblank, data._object_head

    def counted_peek(self: data._Source, n: int, limit: int) -> list[bytes]:
        limits.append(limit)
        return peek(self, n, limit)

    def counted_head(*args, **kw):  # type: ignore[no-untyped-def]
        walks.append(1)
        return head(*args, **kw)

    monkeypatch.setattr(data._Source, "peek_nonblank", counted_peek)
    monkeypatch.setattr(data, "_object_head", counted_head)
    return limits, walks


def test_a_long_object_of_small_members_is_looked_at_in_its_first_megabyte_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({f"k{i}": i for i in range(30_000)}, separators=(",", ":"))  # 300 KB
    (tmp_path / "counts.json").write_text(body)
    limits, walks = _count(monkeypatch)
    info = data.prepare(tmp_path / "counts.json", tmp_path / "d", **KW)
    assert set(limits) == {1024} and len(walks) == 1
    assert info.n_bytes["train"] == len(body)
    [note] = [n for n in info.notes if "read as plain text" in n]
    assert "fields: k0, k1, k2, k3, k4, k5, k6, k7)" in note


def test_a_long_field_before_the_text_is_still_read_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head ends inside a string, and so does the next look: the look goes on (from
    that member, not the start) until the text field."""
    first = {"html": "x" * 3000, "id": 7, "body": "y" * 10_000, "text": "late",
             "tail": "z" * 100_000}  # over 64 times the head: the line is not parsed whole
    (tmp_path / "a.json").write_text(json.dumps(first) + "\n" + '{"text": "more"}\n')
    limits, walks = _count(monkeypatch)
    info = data.prepare(tmp_path / "a.json", tmp_path / "d", **KW)
    assert info.n_documents == 2 and not info.notes
    assert max(limits) == 64 * 1024 and len(walks) == 3  # 1, 8, 64 KB, once


def test_beyond_the_head_names_are_kept_not_values(tmp_path: Path) -> None:
    first = {"a": "x" * 2000, "n": [1, 2, 3], "b": {"c": "d"}, "text": "kept",
             "tail": "z" * 70_000}  # over 64 KB: not parsed whole
    (tmp_path / "a.json").write_text(json.dumps(first))
    src = data._Source(tmp_path / "a.json", lambda n: None)
    try:
        obj = data._first_json_line(src, "text")
        assert data._first_json_line(src, "text") is obj  # told once per file
    finally:
        src.close()
    assert obj == {"a": None, "n": None, "b": None, "text": "kept", "tail": ""}


def test_members_past_the_head_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "_PEEK_MEMBERS", 100)
    first = {"a": "x" * 2000, **{f"m{i}": i for i in range(200)}, "text": "late",
             "tail": "z" * 70_000}
    (tmp_path / "a.json").write_text(json.dumps(first))
    src = data._Source(tmp_path / "a.json", lambda n: None)
    try:
        obj = data._first_json_line(src, "text")
    finally:
        src.close()
    assert list(obj)[-1] == "m99" and "text" not in obj
