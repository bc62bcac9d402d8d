"""A JSON array of records where JSON Lines go (a ``.jsonl`` file, SFT data) is refused from its
first bytes: a one-line array (``json.dumps(records)``, ``to_json(lines=False)``) was read and
parsed whole first, 1.2 GB resident for 126 MB of records, out of memory for a few GB."""

from __future__ import annotations

import gzip
import json

import pytest

from unmask import data
from unmask.errors import UserError

RECORDS = [{"text": f"record number {i}"} for i in range(2000)]


def _never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = json.loads

    def parse(text: str | bytes, *args: object, **kwargs: object) -> object:
        if len(text) > 10_000:  # the array (~50 KB), not a tokenizer's settings
            raise AssertionError("the array was read and parsed before it was refused")
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", parse)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf\n  \n "])
def test_a_one_line_array_is_refused_before_it_is_parsed(tmp_path, monkeypatch, bom):
    p = tmp_path / "records.jsonl"
    p.write_bytes(bom + json.dumps(RECORDS).encode())
    _never_parsed(monkeypatch)
    for read in (lambda: list(data.read_jsonl(p)),
                 lambda: data.prepare([p], tmp_path / "out", tokenizer="byte", progress=False)):
        with pytest.raises(UserError, match=r"records.jsonl: a JSON array, not JSON Lines"):
            read()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["records.jsonl"]


def test_a_compressed_one_is_refused_with_the_command_that_unpacks_it(tmp_path, monkeypatch):
    p = tmp_path / "records.jsonl.gz"
    p.write_bytes(gzip.compress(json.dumps(RECORDS).encode()))
    _never_parsed(monkeypatch)
    with pytest.raises(UserError, match=r"convert it with gzip -dc .*records.jsonl.gz \| jq"):
        list(data.read_jsonl(p))


def test_json_lines_read_as_before(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_bytes(b"\xef\xbb\xbf\n" + "".join(json.dumps(r) + "\n" for r in RECORDS).encode())
    assert [obj for _, obj in data.read_jsonl(p)] == RECORDS


@pytest.mark.parametrize("field", ["messages", "prompt"])
def test_chat_data_named_by_text_field_points_at_sft(tmp_path, field):
    """``--text-field messages`` on chat data said only "is an array, not a string"; without
    the flag the same file is pointed at ``--objective sft``."""
    p = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "user", "content": "hi"}],
              "prompt": {"text": "hi"}, "response": "yo"}
    p.write_text(json.dumps(record) + "\n")
    with pytest.raises(UserError) as e:
        data.prepare([p], tmp_path / "out", tokenizer="byte", text_field=field, progress=False)
    said = str(e.value)
    assert said.startswith(f"{p}:1: field {field!r} is an ")
    assert said.endswith(f"not a string; chat or prompt/response data is not prepared: fine-tune "
                         f"a model on the file itself (unmask train --objective sft --init RUN "
                         f"--data {p}; docs/training.md)")
