"""Where a reply ends besides its end-of-turn token: at the end of turn the template writes as
markup right after the assistant's text (ChatML's ``<|im_end|>`` through a tokenizer without
that token), never at the text of a token the tokenizer has (Mistral's ``</s>``: its id ends
the turn, and HTML's ``<s>old</s>`` is text), nor at a header of the next turn or plain words
(``user:`` in a YAML line)."""

from __future__ import annotations

import pytest
from tokenizers import AddedToken

from unmask.chat import ChatTemplate
from unmask.tokenizer import byte_tokenizer

MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}"
           " [/INST]{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}")
ROLE_COLON = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
              "{% if add_generation_prompt %}assistant:{% endif %}")
VICUNA = ("{% for m in messages %}{% if m.role == 'user' %}USER: {{ m.content }} {% else %}"
          "ASSISTANT: {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
SPACED_END = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n<|end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def with_tokens(*added: AddedToken):
    tok = byte_tokenizer()
    tok.hf.add_special_tokens(list(added))
    return tok


@pytest.mark.parametrize("built", [True, False])
def test_the_text_of_a_special_token_is_not_an_end_of_turn(built):
    tok = with_tokens(AddedToken("<s>", special=True), AddedToken("</s>", special=True))
    eos = tok.token_to_id("</s>")
    t = (ChatTemplate.with_tokens(MISTRAL, tok, bos_id=tok.token_to_id("<s>"), eos_id=eos)
         if built else ChatTemplate(MISTRAL, bos_token="<s>", eos_token="</s>"))
    text = "Wrap it in <s>: <s>old price</s> then the new one."
    ids = tok.encode(text, allow_special=False)  # HTML, written as text pieces
    assert eos not in ids
    assert t.reply(tok, [*ids, eos, *tok.encode("more")], eos) == text
    if built:
        assert t.turn_starts == ()  # the server's streamed hold-back reads this
    # through a tokenizer without that token the written end of turn is text, and ends it
    plain = byte_tokenizer()
    assert ChatTemplate(MISTRAL, eos_token="</s>").reply(
        plain, plain.encode("Yes.</s>[INST] more"), None) == "Yes."


def test_an_added_token_written_as_the_end_of_turn_ends_the_reply_by_its_id():
    tok = with_tokens(AddedToken("<|end|>", special=False))
    end = tok.token_to_id("<|end|>")
    t = ChatTemplate.with_tokens(SPACED_END, tok, bos_id=None, eos_id=None)
    assert t.turn_starts == () and end in t.ends(tok, None)
    assert t.reply(tok, [*tok.encode("Hi."), end, *tok.encode("more")], None) == "Hi."


@pytest.mark.parametrize(("source", "text"), [
    (ROLE_COLON, "Use this config:\nuser: admin\npassword: x"),
    (VICUNA, "Set the USER: field, then save."),
    ("{% for m in messages %}{{ m.content }}\n---\n{% endfor %}", "One.\n---\nTwo."),
])
def test_a_header_of_the_next_turn_or_plain_words_do_not_end_a_reply(source, text):
    tok = byte_tokenizer()
    t = ChatTemplate(source)
    assert t.turn_starts == ()
    assert t.reply(tok, tok.encode(text), None) == text


def test_an_end_of_turn_written_after_a_newline_ends_the_reply_where_it_is_written():
    tok = byte_tokenizer()
    t = ChatTemplate(SPACED_END)
    assert t.turn_starts == ("<|end|>",)
    assert t.reply(tok, tok.encode("answer<|end|>\n<|user|>\nmore"), None) == "answer"
