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
    with pytest.raises(UserError, match=rf"^{path}:2: the line defines '{key}' \(1 tool "
                                        r"definition\); unmask has no tool calls"):
        read_sft_jsonl(path)


@pytest.mark.parametrize(("message", "why"), [
    ({"role": "tool", "content": "22C", "tool_call_id": "1"}, r"has role 'tool'; .*"),
    ({"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}, r"has key 'tool_calls'"),
])
def test_tool_messages_say_why_they_are_refused(message, why):
    """A tool call in chat data or a request was refused as an unknown role or key, which
    read like a typo; it now says unmask has no tool calls, as the server's ``tools`` does."""
    from unmask.chat import check_messages

    with pytest.raises(UserError, match=rf"messages\[1\] {why}.*; unmask has no tool calls$"):
        check_messages([{"role": "user", "content": "weather?"}, message])
