"""SFT with a chat template that marks the assistant's text with ``{% generation %}``
(session 31): each trained turn is the text ``transformers`` marks
(``return_assistant_tokens_mask``, TRL's ``assistant_only_loss``), then EOS; the prompt stays
the one sampling builds."""

from __future__ import annotations

import pytest
from test_sft import write_jsonl

from unmask.chat import ChatTemplate
from unmask.sft import SFTData, read_sft_jsonl
from unmask.tokenizer import Tokenizer, byte_tokenizer

CHATML = (  # transformers' documented form: the answer and its end of turn marked
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{% if m['role'] == 'assistant' %}{% if loop.last %}{{ THINK }}{% endif %}"
    "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TALK = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and then?"},
        {"role": "assistant", "content": "bye now"}]


def _tokenizer() -> Tokenizer:
    base = byte_tokenizer()
    base.hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return Tokenizer(base.hf, **base.special_ids())


def _marked(ids: list[int], mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        if not bit and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("think", ["''", "'<think>\\n\\n</think>\\n\\n'"])
def test_a_generation_span_is_what_sft_trains(think, tmp_path):
    """The trained response was everything after the prompt: the newline the template writes
    after ``<|im_end|>``, and a header the generation prompt lacks (an empty think block),
    were trained before EOS. Now it is the ``{% generation %}`` span of the turn, the ids
    ``transformers`` marks."""
    transformers = pytest.importorskip("transformers")
    source = CHATML.replace("THINK", think)
    tok = _tokenizer()
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", [{"messages": TALK}])),
                   tok, eos_id=tok.eos_id, chat_template=source)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf, bos_token="[BOS]",
                                               eos_token="[EOS]")
    template = ChatTemplate.with_tokens(source, tok, bos_id=tok.bos_id, eos_id=tok.eos_id)
    assert len(data.rows) == 2
    for k, (prompt, response) in enumerate(data.rows):
        talk = TALK[: 2 * k + 2]
        out = ref.apply_chat_template(talk, chat_template=source, tokenize=True,
                                      return_dict=True, return_assistant_tokens_mask=True)
        a, b = _marked(out["input_ids"], out["assistant_masks"])[-1]
        assert response == out["input_ids"][a:b] + [tok.eos_id]
        assert prompt == template.prompt(tok, talk[:-1])[1]


def test_a_template_without_generation_spans_is_split_as_before():
    """No ``{% generation %}`` in the template: the response is the rest of the rendering."""
    tok = _tokenizer()
    source = CHATML.replace("THINK", "''").replace("{% generation %}", "").replace(
        "{% endgeneration %}", "")
    template = ChatTemplate.with_tokens(source, tok, bos_id=tok.bos_id, eos_id=tok.eos_id)
    _, response = template.example(tok, TALK[:2])
    assert response == tok.encode("hello<|im_end|>\n", allow_special=True)


def test_overlong_prompts_are_counted_in_the_one_line(tmp_path):
    """Prompts that leave no room in seq_len: the refusal named the first line only, so a
    dataset with many was fixed a line a run; it now says how many trained turns are so."""
    from unmask.errors import UserError

    tok = byte_tokenizer()
    long, short = "w " * 40, "w"
    lines = [{"prompt": short, "response": "r"}, {"prompt": long, "response": "r"},
             {"messages": [{"role": "user", "content": short},
                           {"role": "assistant", "content": long},
                           {"role": "user", "content": short},
                           {"role": "assistant", "content": "r"}]}]
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", lines)), tok,
                   eos_id=tok.eos_id, chat_template=None)
    with pytest.raises(UserError) as e:
        data.check_fits(48)
    assert str(e.value).startswith(f"{tmp_path / 'd.jsonl'}:2: the prompt has ")
    assert "leaves no room for the response; 1 more of the 4 trained turns are too" in str(
        e.value)
    data.check_fits(200)


def test_an_empty_last_turn_of_weight_0_is_not_a_response(tmp_path):
    """An empty last assistant turn given ``"weight": 0`` is not trained, so it is no empty
    response: the line trains its earlier turn (it was refused as 'empty response'), and a
    line whose turns all have weight 0 says so."""
    from unmask.errors import UserError

    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"},
             {"role": "user", "content": "b"}, {"role": "assistant", "content": "", "weight": 0}]
    tok = byte_tokenizer()
    data = SFTData(read_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", [{"messages": turns}])),
                   tok, eos_id=tok.eos_id, chat_template=None)
    assert len(data.rows) == 1 and tok.decode(data.rows[0][1][:-1]).strip() == "x"
    turns[1]["weight"] = 0
    with pytest.raises(UserError, match="every assistant turn has weight 0"):
        read_sft_jsonl(write_jsonl(tmp_path / "e.jsonl", [{"messages": turns}]))
