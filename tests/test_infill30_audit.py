"""User mistakes in templates, and what the messages say (review of session 30)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import Gap, plan_template
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


@pytest.mark.parametrize(("gap", "says"), [
    # no length given: its maximum was default_max_len's, which the message did not say
    (Gap(regex="a{100}"), "its shortest answer takes 100 tokens; a gap without a maximum "
                          "holds at most default_max_len (16): give it one, e.g. [MASK:100-200]"),
    # a named gap's example keeps its name: [MASK:100-200] lost a --regex word= binding
    (Gap(regex="a{100}", name="word"), "give it one, e.g. [MASK:word:100-200]"),
    (Gap(min_len=1, max_len=3, regex="a{10}"), "(its shortest answer takes 10 tokens)"),
    (Gap(min_len=5, max_len=6, choices=["a", "bb"]), "(its longest answer takes 2 tokens)"),
    (Gap(min_len=2, max_len=4, choices=["a", "b" * 11]), "(its answers take 1, 11 tokens)"),
    (Gap(allowed="digits", regex="[a-z]"), "(no text satisfies all of it)"),
])
def test_an_infeasible_gap_says_which_lengths_its_constraint_allows(gap, says):
    with pytest.raises(UserError, match="no sequence of .* satisfies its constraint") as e:
        plan_template(["x ", gap], TOK)
    assert says in str(e.value), str(e.value)


def test_a_hand_written_gap_set_reads_its_text_on_a_sentencepiece_tokenizer(tmp_path):
    """A gap-set line without ids encoded prefix, middle and suffix each on its own: on a
    SentencePiece-style tokenizer each got a word start, and ``"cat "``, ``"dog"``, ``" cat"``
    was scored as the text ``"cat  dog  cat"``."""
    import json

    from test_infill30_forms_spacing import _llama, _metaspace

    from unmask.gapset import read_gap_set

    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps({"prefix": "cat ", "middle": "dog", "suffix": " cat"}) + "\n")
    for tok in (_llama(), _metaspace(), TOK):
        g = read_gap_set(path, tok)[0]
        assert tok.decode(g.window) == "cat dog cat"
        assert tok.decode(g.window[: g.start]).rstrip() == "cat"


@pytest.mark.parametrize("line", ['{"prefix": ' + "1" * 5000 + "}", "[" * 100_000])
def test_a_gap_set_line_json_cannot_convert_is_a_user_error(tmp_path, line):
    from unmask.gapset import read_gap_set

    path = tmp_path / "gaps.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match="gaps.jsonl:1: not a JSON object"):
        read_gap_set(path, TOK)


def test_a_form_far_over_the_context_is_refused_before_its_holes_compile(monkeypatch):
    """``<text:800>`` on a model of 256 positions compiled its automaton (about 20 ms a
    character: 10 s on the demo) before ``fill_form`` said it does not fit."""
    import torch

    from unmask.config import SampleConfig, model_preset
    from unmask.infill import forms
    from unmask.model import Transformer

    def no_compiling(*args, **kwargs):
        raise AssertionError("a hole was compiled")

    monkeypatch.setattr(forms, "cached_automaton", no_compiling)
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    model = Transformer(cfg).eval()
    form = {"a": "<text:40>", "b": ["<digits:1-30>"], "c": "<int>"}
    with pytest.raises(UserError, match=r"needs 72 tokens or more .* \(max_seq_len 64\)"):
        forms.fill_form(model, TOK, form, SampleConfig(steps=2))
