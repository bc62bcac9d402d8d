"""A reply ends at the end of turn its template writes as text. Through a tokenizer without
ChatML's ``<|im_end|>`` token (an SFT of the demo with ``--chat-template chatml.jinja``),
the marker SFT trained every response to end with is plain text: no special token ended the
turn, and the reply ran on past it, ``<|im_end|>`` and all, into the history. A template that
writes no such markup (an Alpaca one) ends a reply at EOS or a stop sequence only: its next
header is text a reply may hold (``tests/test_chatmend35_turn_end.py``). ``unmask chat``,
``api.chat`` and the server (streamed or not) cut by the one rule."""

from __future__ import annotations

import dataclasses
import json

import pytest
from server_helpers import loaded, tiny_config
from test_chat import LLADA_TEMPLATE
from test_server import Scripted, sse_events

from unmask.chat import DEFAULT_CHAT_TEMPLATE, PLAIN_CHAT_TEMPLATE, ChatTemplate
from unmask.tokenizer import byte_tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ALPACA = ("{% for m in messages %}{% if m.role == 'user' %}### Instruction:\n{{ m.content }}"
          "\n\n### Response:\n{% else %}{{ m.content }}\n\n{% endif %}{% endfor %}")


@pytest.mark.parametrize(("source", "generated", "want"), [
    (CHATML, "Moses.<|im_end|>\nNoah.<|im_end|>\n", "Moses."),
    (CHATML, "a <|im_start|> b<|im_end|>", "a <|im_start|> b"),
    (ALPACA, "Moses.\n\n### Instruction:\nWho?", "Moses.\n\n### Instruction:\nWho?"),
    (ALPACA, "One.\n\nTwo.\n### Instruction: x", "One.\n\nTwo.\n### Instruction: x"),
    # where the template's own text ends nothing: the content alone
    ("{% for m in messages %}{{ m.content }}{% endfor %}", "a\n\nb", "a\n\nb"),
])
def test_a_reply_ends_at_the_end_of_turn_the_template_writes_as_text(source, generated, want):
    tok = byte_tokenizer()
    assert tok.token_to_id("<|im_end|>") is None  # the marker is text here
    assert ChatTemplate(source).reply(tok, tok.encode(generated), tok.eos_id) == want


def test_the_built_in_templates_and_special_token_markers_keep_their_rule():
    assert ChatTemplate(DEFAULT_CHAT_TEMPLATE).turn_starts == (
        "\n<|user|>", "\n<|assistant|>", "\n<|system|>")
    assert ChatTemplate(PLAIN_CHAT_TEMPLATE).turn_starts == ("\nUser:", "\nAssistant:")
    # LLaDA's appends an assistant header after every conversation: no text of it is an end
    # of turn (its <|eot_id|> is a special token of LLaDA's tokenizer)
    assert ChatTemplate(LLADA_TEMPLATE).turn_starts == ()
    # a header the template appends after every conversation is not an end of turn, and no
    # part of two headers is one: a Markdown heading in a reply is text
    headed = ("{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}"
              "### assistant:")
    assert ChatTemplate(headed).turn_starts == ()
    tok = byte_tokenizer()
    text = "Steps:\n### Install\nrun it"
    assert ChatTemplate(headed).reply(tok, tok.encode(text), None) == text
    refuses = "{{ raise_exception('no') }}"
    assert ChatTemplate(refuses).turn_starts == ()


def test_the_server_cuts_at_the_written_end_of_turn_streamed_or_not():
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    tok = byte_tokenizer()
    config = dataclasses.replace(tiny_config(128), chat_template=CHATML)
    prompt = ChatTemplate(CHATML).prompt(tok, [{"role": "user", "content": "Hi"}])[1]
    script = tok.encode(" Hello there.<|im_end|>\n<|im_start|>user\nmore")
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": len(script)}
    with TestClient(create_app(loaded(Scripted(config, script, len(prompt))))) as c:
        r = c.post("/v1/chat/completions", json=body).json()
        assert r["choices"][0]["message"]["content"] == "Hello there."
        assert r["choices"][0]["finish_reason"] == "stop"
        r = c.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = [json.loads(d) for _, d in sse_events(r.text)[:-1]]
        assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks
                       if ch["choices"]) == "Hello there."
