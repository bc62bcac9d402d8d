"""A system prompt in a field of its own on an SFT line (LLaMA-Factory's ``system`` column,
OpenOrca's ``system_prompt``) was ignored as "another field": the response was trained as the
answer to a conversation without that instruction, silently. It is refused, naming the line,
unless it is blank or a copy of a system message the line's ``messages`` hold."""

from __future__ import annotations

import json

import pytest

from unmask.errors import UserError
from unmask.sft import read_sft_jsonl

TALK = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def _write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("row", "key"), [
    ({"system": "Answer in French.", "prompt": "Hi", "response": "Salut"}, "system"),
    ({"system_prompt": "Be terse.", "prompt": "Hi", "response": "Hi"}, "system_prompt"),
    ({"system": "Answer in French.", "messages": TALK}, "system"),
])
def test_a_system_prompt_in_a_field_of_its_own_is_refused_naming_the_line(tmp_path, row, key):
    path = _write(tmp_path, [{"prompt": "a", "response": "b"}, row])
    with pytest.raises(UserError) as e:
        read_sft_jsonl(path)
    message = str(e.value)
    assert message.startswith(f"{path}:2: the line has {key!r} (a system prompt)"), message
    assert "\n" not in message and "system message first" in message


def test_a_blank_or_copied_system_field_is_absent(tmp_path):
    system = {"role": "system", "content": "Be brief."}
    rows = [{"system": "", "prompt": "a", "response": "b"},
            {"system": None, "prompt": "a", "response": "b"},
            {"system": "Be brief.", "messages": [system, *TALK]}]
    examples = read_sft_jsonl(_write(tmp_path, rows))
    assert [e.messages[0]["role"] for e in examples] == ["user", "user", "system"]
