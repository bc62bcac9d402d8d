"""An SFT line whose ``tools`` is a JSON string nested past the parser's stack is a one-line
refusal naming the file and line, not a ``RecursionError`` traceback."""

from __future__ import annotations

import json

import pytest

from unmask.errors import UserError
from unmask.sft import read_sft_jsonl

PAIR = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.mark.parametrize("key", ["tools", "functions"])
def test_a_tools_string_nested_too_deep_is_a_one_line_refusal(tmp_path, key):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps({**PAIR, key: "[" * 100_000}) + "\n")
    with pytest.raises(UserError, match=r"deep\.jsonl:2: .*nested too deep") as e:
        read_sft_jsonl(path)
    assert "\n" not in str(e.value)
