"""SFT and JSONL files in the layouts people have (session 29 audit)."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from unmask import data
from unmask.errors import UserError
from unmask.sft import read_sft_jsonl

ALPACA = [{"instruction": "Say hi", "input": "", "output": "hi"},
          {"instruction": "Add", "input": "1+1", "output": "2"}]


@pytest.mark.parametrize("indent", [4, None])
@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.jsonl"])
def test_a_json_array_of_records_is_told_to_be_converted(tmp_path, indent, name):
    """Alpaca's data file is a JSON array: read as JSON Lines it was "alpaca.json:1: not valid
    JSON (Expecting value at column 1)" (pretty-printed) or "expected a JSON object, got
    list"."""
    p = tmp_path / name
    p.write_text(json.dumps(ALPACA, indent=indent), encoding="utf-8")
    target = "alpaca.jsonl" if name == "alpaca.json" else "alpaca-lines.jsonl"  # never itself
    said = "^" + re.escape(f"{p}: a JSON array, not JSON Lines (one JSON object a line); convert "
                           f"it with jq -c '.[]' {shlex.quote(str(p))} > "
                           f"{shlex.quote(str(tmp_path / target))}") + "$"
    with pytest.raises(UserError, match=said):
        read_sft_jsonl(p)
    if name.endswith(".jsonl"):  # prepare reads it as JSONL too (a .json one is text, noted)
        with pytest.raises(UserError, match=said):
            data.prepare([p], tmp_path / "out", tokenizer="byte", val_fraction=0,
                         progress=False)


def test_a_line_that_is_no_object_is_named_in_json_words(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n"just a string"\n', encoding="utf-8")
    with pytest.raises(UserError, match=f"^{p}:2: expected a JSON object, got a string$"):
        read_sft_jsonl(p)


@pytest.mark.parametrize(("record", "hint"), [
    (ALPACA[1], "an Alpaca-style record: give its instruction, and its input when there is "
                "one, as 'prompt' and its output as 'response'"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
     "a ShareGPT-style record: give its 'conversations' as 'messages'"),
])
def test_records_of_other_sft_layouts_say_how_to_map_them(tmp_path, record, hint):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"^.*:1: missing field\(s\) prompt, response \(or give "
                       r"'messages'\) \(" + hint.replace("(", r"\(").replace(")", r"\)")):
        read_sft_jsonl(p)


def test_null_fields_of_the_other_layout_are_absent(tmp_path):
    """One table holding both layouts (``datasets``' to_json) writes nulls for the columns a
    row does not use: "give 'messages' or 'prompt'/'response', not both"."""
    p = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "q1", "response": "a1", "messages": None},
            {"prompt": None, "response": None,
             "messages": [{"role": "user", "content": "q2"},
                          {"role": "assistant", "content": "a2"}]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    examples = read_sft_jsonl(p)
    assert [[m["content"] for m in ex.messages] for ex in examples] == [["q1", "a1"],
                                                                      ["q2", "a2"]]
    p.write_text(json.dumps({"prompt": "q", "response": None}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r":1: 'response' is null; give a string$"):
        read_sft_jsonl(p)
