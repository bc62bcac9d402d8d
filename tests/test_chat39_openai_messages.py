"""Messages as the server reads OpenAI's: a ``developer`` message is a ``system`` one and
content may be a list of text parts. ``/v1/chat/completions`` took both
(``unmask.server.http.chat_messages``) while ``api.chat``, ``generate``'s template path and
SFT data refused them ("messages[0].content must be a string, not a list"; "role
'developer'"): the same conversation worked over HTTP and failed in Python."""

from __future__ import annotations

import json
import re

import pytest
from server_helpers import loaded, random_transformer

from unmask import api
from unmask.chat import check_messages
from unmask.errors import UserError
from unmask.sft import read_sft_jsonl

PLAIN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who was Noah?"}]
OPENAI = [{"role": "developer", "content": [{"type": "text", "text": "Be "},
                                            {"type": "text", "text": "brief."}]},
          {"role": "user", "content": [{"type": "text", "text": "Who was Noah?"}]}]


def test_api_chat_reads_text_parts_and_developer_messages_as_the_server_does():
    m = loaded(random_transformer())
    options = {"gen_length": 8, "steps": 8}
    want = api.chat(m, PLAIN, config=options, template="plain")
    got = api.chat(m, OPENAI, config=options, template="plain")
    assert (got.prompt, got.prompt_ids, got.text) == (want.prompt, want.prompt_ids, want.text)
    assert got.prompt.startswith("System: Be brief.\nUser: Who was Noah?")


def test_sft_lines_read_text_parts_and_developer_messages(tmp_path):
    path = tmp_path / "pairs.jsonl"
    reply = {"role": "assistant", "content": [{"type": "text", "text": "A builder."}]}
    path.write_text(json.dumps({"messages": [*OPENAI, reply]}) + "\n", encoding="utf-8")
    [example] = read_sft_jsonl(path)
    assert example.messages == [*PLAIN, {"role": "assistant", "content": "A builder."}]


@pytest.mark.parametrize(("content", "said"), [
    ([{"type": "image_url", "image_url": {"url": "x.png"}}],
     "messages[0].content[0] is a part of type 'image_url'; unmask takes text only"),
    (["Hi"], "messages[0].content[0] is a string; a content list holds text parts"),
    ([{"type": "text", "text": 5}], "messages[0].content[0].text must be a string, not a number"),
    ([{"type": "text", "text": "a", "cache": 1}], "messages[0].content[0] has key 'cache'"),
])
def test_other_content_lists_are_one_line(content, said):
    with pytest.raises(UserError, match="^messages: " + re.escape(said)):
        check_messages([{"role": "user", "content": content}])
