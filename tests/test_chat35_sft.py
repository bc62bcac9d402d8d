"""SFT data (``unmask.sft``) as a demanding user writes it: tool definitions are refused, not
silently ignored."""

from __future__ import annotations

import json

import pytest

from unmask.errors import UserError
from unmask.sft import read_sft_jsonl


@pytest.mark.parametrize("key", ["tools", "functions"])
def test_sft_lines_that_define_tools_are_refused_naming_the_line(tmp_path, key):
    """OpenAI's fine-tuning format and TRL's ``tools`` column hand the tools to the model;
    here no tool reaches the template, and the definitions were ignored as another field."""
    pair = {"messages": [{"role": "user", "content": "weather?"},
                         {"role": "assistant", "content": "sunny"}]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({**pair, key: []}) + "\n"  # empty: absent
                    + json.dumps({**pair, key: [{"type": "function",
                                                 "function": {"name": "get"}}]}) + "\n")
    with pytest.raises(UserError, match=rf"^{path}:2: the line defines '{key}'; unmask has no "
                                        "tool calls"):
        read_sft_jsonl(path)
