"""SFT lines whose ``tools``/``functions`` define no tool are read: TRL stores the ``tools``
column as a JSON string, ``"[]"`` on a row without tools, and a whole file was refused at its
first such row; only real tool definitions are refused."""

from __future__ import annotations

import json

import pytest

from unmask.errors import UserError
from unmask.sft import read_sft_jsonl

PAIR = {"messages": [{"role": "user", "content": "2+2?"},
                     {"role": "assistant", "content": "4"}]}
TOOL = {"type": "function", "function": {"name": "add"}}


@pytest.mark.parametrize(("key", "value"), [
    ("tools", "[]"), ("tools", "null"), ("tools", ""), ("tools", False), ("tools", "{}"),
    ("functions", 0), ("functions", ["add", "sub"]), ("functions", "add"),
])
def test_a_column_that_defines_no_tool_is_absent(tmp_path, key, value):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({**PAIR, key: value}) + "\n")
    assert len(read_sft_jsonl(path)) == 1


@pytest.mark.parametrize(("value", "says"), [
    (json.dumps([TOOL, TOOL]), r"\(a JSON string of 2 tool definitions\)"),
    ([TOOL], r"\(1 tool definition\)"),
])
def test_tool_definitions_are_refused_in_a_json_string_too(tmp_path, value, says):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({**PAIR, "tools": value}) + "\n")
    with pytest.raises(UserError, match=rf"^{path}:1: the line defines 'tools' {says}; unmask "
                                        "has no tool calls"):
        read_sft_jsonl(path)
