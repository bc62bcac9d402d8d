"""JSON Lines whose records end in a lone ``\\r`` (old Mac line ends): the whole file is one
line to a reader of lines, and the refusal was ``line 1: not valid JSON (Extra data ...)``.
It now says so, with the ``tr`` command that converts it (``prepare``, and ``read_jsonl``:
SFT data, task files)."""

from __future__ import annotations

import gzip

import pytest

from unmask.data import prepare, read_jsonl
from unmask.errors import UserError


def test_records_ended_by_a_lone_cr_are_named_with_the_command_that_converts_them(tmp_path):
    recs = tmp_path / "old.jsonl"
    recs.write_bytes(b'{"text": "a"}\r{"text": "b"}\r')
    with pytest.raises(UserError, match=r"old\.jsonl: records ended by a lone \\r .*"
                                        r"tr '\\r' '\\n' < \S*old\.jsonl > \S*old-lines\.jsonl"):
        prepare(recs, tmp_path / "d", tokenizer="byte", val_fraction=0, progress=False)
    packed = tmp_path / "old2.jsonl.gz"
    packed.write_bytes(gzip.compress(recs.read_bytes()))
    with pytest.raises(UserError, match=r"gzip -dc \S*old2\.jsonl\.gz \| tr '\\r' '\\n' > "):
        list(read_jsonl(packed))


def test_a_cr_in_whitespace_of_a_good_record_is_read_and_other_errors_stay(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"text":\r"a"}\r\n{"text": "b"}\n')
    assert [o["text"] for _, o in read_jsonl(good)] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a"} x\r\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1: not valid JSON"):
        list(read_jsonl(bad))


def test_a_raw_cr_inside_a_string_keeps_its_own_error_with_its_line(tmp_path):
    """A raw CR inside a JSON string is invalid JSON of that line, not old Mac line ends:
    it was named as lone-\\r records with no line, and the ``tr`` given split the record."""
    raw = tmp_path / "rawcr.jsonl"
    raw.write_bytes(b'{"text": "a"}\n{"text": "b"}\n{"text": "x }\r{ y"}\n')
    with pytest.raises(UserError, match=r"rawcr\.jsonl:3: not valid JSON \(Invalid control"):
        prepare(raw, tmp_path / "d", tokenizer="byte", val_fraction=0, progress=False)
    with pytest.raises(UserError, match=r"rawcr\.jsonl:3: not valid JSON"):
        list(read_jsonl(raw))
