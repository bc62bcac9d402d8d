"""Templates made of gaps alone, or with only spaces around them (review of session 30).

- A template of gaps only is never filled with nothing at all (``fill._choices``). On a
  tokenizer with a line break, a gap at the start is filled after ``START_CONTEXT``, a locked
  line break that is no text of the output; it was counted as given text, so ``[MASK:0-2]``
  (and ``"[MASK:0-3] [MASK:0-3]"``, whose space the second gap takes) could come back empty.
  Spaces alone are no given text either (the byte tokenizer's ``"[MASK:0-3] [MASK:0-3]"``
  came back ``" "``).
- ``"[MASK:0-2] In"`` left empty dropped the space of ``" In"`` on the byte tokenizer too,
  where no gap takes a space and the space is given text (kept at the end of the text).
- A template that starts with a space taken by a gap (``" [MASK] "``) on a Llama-style
  tokenizer: its decoder drops the first word start, so ``tokens`` decoded to ``"ca "``
  where ``text`` was ``" ca "``.
"""

from __future__ import annotations

import pytest
import torch
from test_formsmend_spaces import LLAMA
from test_infill_spacing import BPE, Prefers, check_round_trip

from unmask.config import SampleConfig
from unmask.infill import Gap, infill, plan_template
from unmask.tokenizer import byte_tokenizer


class Silent:
    """Every position favours the end-of-text token."""

    def __init__(self, tokenizer) -> None:
        self.bias = torch.zeros(tokenizer.vocab_size)
        self.bias[tokenizer.eos_id] = 9.0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, len(self.bias)).clone()  # (B, L, V)


@pytest.mark.parametrize("template", ["[MASK:0-2]", "[MASK:0-3] [MASK:0-3]",
                                      "[MASK:0-1][MASK:0-2]"])
def test_a_template_of_gaps_only_is_never_filled_with_nothing(template):
    plan = plan_template(template, BPE)
    assert plan.items[0][0] == "context"  # the case: a locked line break before the gaps
    r = infill(Prefers(b" cat"), BPE, template, SampleConfig(steps=4))
    assert all(any(c.lengths) for c in r.candidates), [c.lengths for c in r.candidates]
    assert r.text.strip() and any(g.text for g in r.gaps)
    check_round_trip(r)


def test_an_empty_gap_at_the_start_keeps_the_given_space_on_a_byte_tokenizer():
    tok = byte_tokenizer()
    r = infill(Silent(tok), tok, "[MASK:0-2] In", SampleConfig(steps=2))
    empty = {c.lengths: c for c in r.candidates}[(0,)]
    assert empty.text == " In"  # the space is given text: the model read " In"
    assert empty.gaps[0].start == empty.gaps[0].end == 0
    # at the end of the text it was kept already
    r = infill(Silent(tok), tok, "In [MASK:0-2]", SampleConfig(steps=2))
    assert {c.lengths: c for c in r.candidates}[(0,)].text == "In "


def test_spaces_alone_are_no_text_to_leave_gaps_empty_around():
    tok = byte_tokenizer()
    r = infill(Silent(tok), tok, "[MASK:0-3] [MASK:0-3]", SampleConfig(steps=2))
    assert all(any(c.lengths) for c in r.candidates) and r.text.strip()  # was " "


@pytest.mark.parametrize("best", ["▁cat", "c"])
def test_a_space_taken_at_the_start_of_the_text_is_spelt_by_the_tokens(best):
    model = Prefers(b"", tokenizer=LLAMA)
    model.bias.zero_()
    model.bias[LLAMA.token_to_id(best)] = 10.0
    r = infill(model, LLAMA, " [MASK] x", SampleConfig(steps=2))
    assert r.text.startswith(" ") and r.text.endswith(" x")
    assert LLAMA.decode(r.tokens) == r.text  # was "cat x" for " cat x"
    g = r.gaps[0]
    assert r.text[g.start : g.end] == g.text


def test_a_causal_model_never_leaves_a_template_of_a_gap_only_empty():
    """``infill_causal`` let EOS end ``[MASK:0-3]`` at once: an empty text, where the
    diffusion path never fills a template of gaps only with nothing."""
    from test_fim import EOS, V, fim_cfg

    from unmask.infill import infill_causal
    from unmask.tokenizer import with_fim_tokens

    tok = with_fim_tokens(byte_tokenizer())
    a = tok.encode("a")[0]

    class EndsAtOnce(torch.nn.Module):
        supports_kv_cache = True  # logits of whatever it is given (it reads no cache)

        def __init__(self) -> None:
            super().__init__()
            self.config = fim_cfg()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, tokens, attention_mask=None, **kw):
            out = torch.zeros(*tokens.shape, V)  # (B, L, V)
            out[..., EOS], out[..., a] = 10.0, 5.0
            return out

    for template, want in (("[MASK:0-3]", "a"), (" [MASK:0-3] ", " a "), ("x [MASK:0-3]", "x ")):
        assert infill_causal(EndsAtOnce(), tok, template, SampleConfig()).text == want


@pytest.mark.parametrize("template", ["[MASK:0-3]", "[MASK:0-2][MASK:0-2]",
                                      "[MASK:0-2] [MASK:0-2]"])
def test_the_one_pass_length_mode_never_leaves_a_template_of_gaps_only_empty(template):
    """``length_mode="empty"`` let every slot hold ``[EMPTY]``: the text ``""`` (or ``" "``)."""
    from test_empty import TOK as EMPTY_TOK
    from test_empty import Canvas, E

    r = infill(Canvas([E] * 20), EMPTY_TOK, template, SampleConfig(steps=4))
    assert r.length_mode == "empty" and r.text.strip(" ") and any(g.text for g in r.gaps)
    assert r.gaps[0].tokens  # the first gap holds the token


@pytest.mark.parametrize("template", [
    [Gap(choices=[" cat", "dog"]), " x"],  # a choice that starts with a space, at the start
    [" ", Gap(choices=[" cat", "dog"])],  # the space put back before it: two
    [" ", Gap(), " x"],
])
def test_a_text_that_starts_with_a_space_is_spelt_by_the_tokens(template):
    model = Prefers(b"", tokenizer=LLAMA)
    model.bias.zero_()
    model.bias[LLAMA.token_to_id("▁cat")] = 10.0
    r = infill(model, LLAMA, template, SampleConfig(steps=2))
    assert r.text.startswith(" ") and LLAMA.decode(r.tokens) == r.text, r
    for g in r.gaps:
        assert r.text[g.start : g.end] == g.text
