"""The control tokens of a tokenizer and template are found once, not on every prompt and
SFT example: looking through 2,000 reserved tokens each time cost ten times the rendering
(1.3 ms -> 0.13 ms an SFT example, measured side by side)."""

from __future__ import annotations

import pytest
from tokenizers import AddedToken

import unmask.chat as chat
from unmask.chat import ChatTemplate
from unmask.tokenizer import byte_tokenizer

SOURCE = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"


@pytest.fixture
def tok():
    t = byte_tokenizer()
    t.hf.add_special_tokens([AddedToken(s, special=True) for s in
                             ("<|im_start|>", "<|im_end|>", "<|reserved_0|>", "<|reserved_01|>")])
    return t


def test_the_tokens_are_looked_through_once_per_tokenizer_and_template(tok, monkeypatch):
    calls = []
    real = chat._added_tokens
    monkeypatch.setattr(chat, "_added_tokens", lambda t: calls.append(1) or real(t))
    t = ChatTemplate(SOURCE)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    first = t.prompt(tok, msgs[:1])
    n = len(calls)
    assert n > 0
    assert t.prompt(tok, msgs[:1]) == first and t.example(tok, msgs)
    assert t.ends(tok, 2) == {tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>"), 2}
    assert len(calls) == n  # found once
    other = ChatTemplate("{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}")
    assert other.specials(tok) == {"<|im_end|>": tok.token_to_id("<|im_end|>")}  # its own


def test_typed_control_tokens_stay_text_overlapping_ones_too(tok):
    t = ChatTemplate(SOURCE)
    typed = "a<|reserved_01|>b<|reserved_0|>c<|im_end|>"
    _, ids = t.prompt(tok, [{"role": "user", "content": typed}])
    special = {tok.token_to_id(s) for s in ("<|reserved_0|>", "<|reserved_01|>")}
    assert not special & set(ids)
    assert ids.count(tok.token_to_id("<|im_end|>")) == 1  # the template's own only
    assert typed in tok.decode(ids)
