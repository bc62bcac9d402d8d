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


@pytest.mark.parametrize("first", [
    {"input_ids": list(range(2000)), "text": "late"},  # token ids stored before the text
    {"meta": {"html": "x" * 3000, "n": [1, {"a": "]}"}]}, "text": "late"},
    {"rows": [[i, [i, {"k": "v"}]] for i in range(500)], "text": "late"},  # deeper than _FLAT
])
def test_a_long_array_or_object_before_the_text_is_read_past(
    tmp_path: Path, first: dict
) -> None:
    """The head ends inside an array or object value (review rm4 #2): the look went on only
    after a cut string, so such records were read as one plain-text document with a note."""
    (tmp_path / "a.json").write_text(json.dumps(first) + "\n" + '{"text": "more"}\n')
    info = data.prepare(tmp_path / "a.json", tmp_path / "d", **KW)
    assert info.n_documents == 2 and not info.notes
    assert info.n_bytes["train"] == len("late") + len("more")


def test_a_cut_line_is_not_given_to_json_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """json.loads of a cut line builds every value it holds before it fails at the cut
    (review rm4 #3: a 10 MB string then 12 M small members peaked at 921 MB)."""
    first = {"html": "x" * 10_000, **{f"m{i}": i for i in range(20_000)}, "text": "late"}
    (tmp_path / "a.json").write_text(json.dumps(first))
    sizes: list[int] = []
    loads = json.loads

    def counted(s, *a, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(s))
        return loads(s, *a, **kw)

    monkeypatch.setattr(json, "loads", counted)
    src = data._Source(tmp_path / "a.json", lambda n: None)
    try:
        obj = data._first_json_line(src, "text")
    finally:
        src.close()
    assert sizes == [] and obj["html"] is None and "m999" in obj and "text" not in obj


def test_a_first_line_of_exactly_the_head_at_the_end_is_read_whole(tmp_path: Path) -> None:
    """A line of exactly ``_PEEK_BYTES`` with no newline is the whole file, not a cut line."""
    pad = 1024 - len(json.dumps({"id": [1], "text": "hi", "x": ""}))
    line = json.dumps({"id": [1], "text": "hi", "x": "y" * pad})
    assert len(line) == 1024
    (tmp_path / "a.json").write_text(line)
    info = data.prepare(tmp_path / "a.json", tmp_path / "d", **KW)
    assert info.n_documents == 1 and not info.notes and info.n_bytes["train"] == 2


def test_skip_nested_finds_the_end_of_a_value_or_says_it_is_cut() -> None:
    import random

    rng = random.Random(0)

    def value(depth: int) -> object:
        r = rng.random()
        if depth > 5 or r < 0.3:
            return rng.choice([1, "a]", 'q"{', "\\", None, 2.5, "[x}"])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"{rng.choice('k]{')}{i}": value(depth + 1) for i in range(rng.randrange(4))}

    for n in range(500):
        v = value(0)
        if isinstance(v, (list, dict)):
            text = json.dumps(v, separators=(",", ":") if n % 2 else None)
            assert data._skip_nested(text + ', "z": 1}', 0) == len(text), text
            assert all(data._skip_nested(text[:cut], 0) == -1 for cut in range(len(text)))
