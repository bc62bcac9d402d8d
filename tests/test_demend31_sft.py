"""SFT review fixes (session 31): a ``{% generation %}`` tag with Jinja's ``+`` whitespace
control is a span too; two spans in a turn train the text between them (documented as the
one difference from ``transformers``); a line whose trained turn is empty says "empty
response" again."""

from __future__ import annotations

import pytest
from test_distill31_sft import CHATML, TALK, _tokenizer
from test_sft import write_jsonl

from unmask.chat import ChatTemplate
from unmask.errors import UserError
from unmask.sft import read_sft_jsonl


@pytest.mark.parametrize(("opened", "closed"), [
    ("{%+ generation %}", "{% endgeneration %}"),
    ("{%+ generation +%}", "{%+ endgeneration +%}"),
    ("{%- generation -%}", "{%- endgeneration -%}"),
])  # fmt: skip
def test_a_generation_tag_with_whitespace_control_marks_the_span(opened, closed):
    """``{%+ generation %}`` was not taken for the tag (only ``-`` was): the turn was split as
    a template without spans, training the newline after ``<|im_end|>`` that transformers
    does not mark."""
    tok = _tokenizer()
    source = CHATML.replace("THINK", "''").replace("{% generation %}", opened).replace(
        "{% endgeneration %}", closed)
    template = ChatTemplate.with_tokens(source, tok, bos_id=tok.bos_id, eos_id=tok.eos_id)
    _, response = template.example(tok, TALK[:2])
    assert response == tok.encode("hello<|im_end|>", allow_special=True)


def test_two_spans_in_a_turn_train_the_text_between_them():
    """As docs/training.md says: from the first span to the end of the last, the text between
    them included (transformers marks the spans alone)."""
    tok = _tokenizer()
    source = CHATML.replace("THINK", "''").replace(
        "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}",
        "{% generation %}{{ m['content'] }}{% endgeneration %} [sep] "
        "{% generation %}<|im_end|>{% endgeneration %}")
    template = ChatTemplate.with_tokens(source, tok, bos_id=tok.bos_id, eos_id=tok.eos_id)
    _, response = template.example(tok, TALK[:2])
    assert response == tok.encode("hello [sep] <|im_end|>", allow_special=True)


def test_an_empty_turn_of_weight_1_is_an_empty_response(tmp_path):
    """An empty assistant turn without a weight and an empty last turn of weight 0: the line
    said 'every assistant turn has weight 0', false of the first; it is an empty response."""
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""},
             {"role": "user", "content": "b"}, {"role": "assistant", "content": "", "weight": 0}]
    with pytest.raises(UserError) as e:
        read_sft_jsonl(write_jsonl(tmp_path / "e.jsonl", [{"messages": turns}]))
    assert str(e.value) == f"{tmp_path / 'e.jsonl'}:1: empty response"
    turns[1]["weight"] = 0
    with pytest.raises(UserError, match="every assistant turn has weight 0; nothing to train"):
        read_sft_jsonl(write_jsonl(tmp_path / "f.jsonl", [{"messages": turns}]))
