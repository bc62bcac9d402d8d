"""A message ``name`` is checked in one more rendering per conversation, whatever the number
of named messages: a rendering per named message, repeated by every internal rendering,
took 18.9 s for a 30 KB request of 1,000 named messages on the server."""

from __future__ import annotations

import dataclasses

import pytest
from server_helpers import loaded, tiny_config
from test_server import Scripted

from unmask.chat import ChatTemplate
from unmask.errors import UserError
from unmask.tokenizer import byte_tokenizer

NAMED_SRC = ("{% for m in messages %}<|{{ m.role }}|>{% if m.name %} {{ m.name }}{% endif %}"
             "{{ '\\n' }}{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n"
             "{% endif %}")
N = 50


def conversation(n: int = N) -> list[dict[str, str]]:
    roles = ("user", "assistant")
    return [{"role": "system", "content": "Be brief."}] + [
        {"role": roles[i % 2], "content": f"turn {i}", "name": f"p{i}"} for i in range(n)]


@pytest.fixture
def renders(monkeypatch):
    calls = []
    real = ChatTemplate._render
    monkeypatch.setattr(ChatTemplate, "_render",
                        lambda self, *a: calls.append(1) or real(self, *a))
    return calls


def test_names_cost_one_more_rendering_per_conversation(renders):
    tok = byte_tokenizer()
    t = ChatTemplate(NAMED_SRC)
    msgs = conversation()
    t.prompt(tok, msgs[:2])  # the template's end of turn, found once (_written_turn_ends)
    renders.clear()
    t.render(msgs)
    assert len(renders) == 2  # the text, and the names probed at once
    renders.clear()
    t.prompt(tok, msgs)
    assert len(renders) == 3  # + the system message probed
    renders.clear()
    last = {k: v for k, v in msgs[-1].items() if k != "name"}  # the response: as prompted
    t.example(tok, [*msgs[:-1], last])
    assert len(renders) <= 6  # prompt, system probe, conversation, names, generation flag


def test_the_server_probes_the_names_once(renders):
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    config = dataclasses.replace(tiny_config(128), chat_template=NAMED_SRC)
    body = {"messages": conversation(), "max_tokens": 1}
    with TestClient(create_app(loaded(Scripted(config, [5], 0)))) as c:
        renders.clear()
        c.post("/v1/chat/completions", json=body)
    assert len(renders) <= 4  # length check, prompt, names, system message


def test_one_rendering_still_finds_the_name_it_drops():
    t = ChatTemplate("{% for m in messages %}{% if m.role == 'user' %}{{ m.name }}: {% endif %}"
                     "{{ m.content }}\n{% endfor %}")
    with pytest.raises(UserError, match=r"messages\[2\] has 'name'"):
        t.render(conversation(4))
    # a name the template writes otherwise (upper-cased, or through a filter that keeps no
    # probe) is read
    upper = ChatTemplate("{% for m in messages %}{{ (m.name or '') | upper }}{{ m.content }}"
                         "{% endfor %}")
    assert upper.render(conversation(3)).startswith("Be brief.P0turn 0")
    hashed = ChatTemplate("{% for m in messages %}{{ (m.name or '') | length }}{{ m.content }}"
                          "{% endfor %}")
    assert hashed.render(conversation(2)) == "0Be brief.2turn 02turn 1"
    # a name equal to its probe is probed with another
    own = [{"role": "user", "content": "hi", "name": "unmaskprobe0name"}]
    assert ChatTemplate(NAMED_SRC).render(own).startswith("<|user|> unmaskprobe0name\n")
