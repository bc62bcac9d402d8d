"""A template's end of turn written as text ends a reply only when it reads as a special token
written out: a JSON-lines template's ``"}`` and an HTML one's ``</p>`` are text that ordinary
replies hold (every reply that writes JSON was cut)."""

from __future__ import annotations

import pytest

from unmask.chat import ChatTemplate
from unmask.tokenizer import byte_tokenizer

LOOP = "{% for m in messages %}"


@pytest.mark.parametrize("source", [
    LOOP + '{"role": "{{ m.role }}", "content": "{{ m.content }}"}\n{% endfor %}',
    LOOP + "<p>{{ m.content }}</p>{% endfor %}",
    LOOP + "{{ m.role }}: {{ m.content }}[/QUOTE]\n{% endfor %}",
], ids=["json-lines", "html", "bbcode"])
def test_ordinary_markup_after_a_reply_does_not_end_it(source):
    t = ChatTemplate(source)
    assert t.turn_starts == ()
    tok = byte_tokenizer()
    text = '{"a": "b"} <p>x</p> [quote]y[/QUOTE] done'
    assert t.reply(tok, tok.encode(text), None) == text


@pytest.mark.parametrize(("end", "after"), [
    ("<|im_end|>", "\n"), ("<end_of_turn>", "\n"), ("</s>", ""), ("</assistant>", "\n"),
    ("[/END]", "\n"),
])
def test_a_token_written_out_still_ends_a_reply(end, after):
    t = ChatTemplate(LOOP + "<{{ m.role }}>{{ m.content }}" + end + after + "{% endfor %}")
    assert t.turn_starts == (end,)


DEEPSEEK = ("{% for m in messages %}{% if m.role == 'user' %}<｜User｜>{{ m.content }}{% else %}"
            "<｜Assistant｜>{{ m.content }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<｜Assistant｜>{% endif %}")
EXAONE = ("{% for m in messages %}[|{{ m.role }}|]{{ m.content }}{% if m.role == 'assistant' %}"
          "[|endofturn|]{% endif %}\n{% endfor %}{% if add_generation_prompt %}[|assistant|]"
          "{% endif %}")


@pytest.mark.parametrize(("source", "reply"), [
    (DEEPSEEK, "Moses.<｜end▁of▁sentence｜><｜User｜>more"),
    (EXAONE, "Moses.[|endofturn|]\n[|user|]more"),
], ids=["deepseek", "exaone"])
def test_full_width_and_barred_ends_still_end_a_reply(source, reply):
    """DeepSeek's full-width bars and EXAONE's ``[|...|]`` read as tokens written out (review
    rm8: the first token-like rule wanted an ASCII ``|`` or a letter after the bracket, and
    such replies ran on into the next turn through a tokenizer without those tokens)."""
    tok = byte_tokenizer()
    assert ChatTemplate(source).reply(tok, tok.encode(reply), None) == "Moses."
