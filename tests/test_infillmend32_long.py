"""Causal (AR-FIM) infill under a token automaton: long gaps and the context limit (review of
session 32).

- Every causal gap is written under its automaton; the least length was a product with
  ``TokenAutomaton.at_least`` (about ten states a token for the UTF-8 automaton), so a
  ``[MASK:2100]`` that filled before was refused as "constraint too large". The least length
  is now a counter of ``FormGuide`` beside an automaton that ``stretches``.
- The EOS after a gap at its widest is the only token allowed: the run spent a model call on
  it and counted a token of context for it, so a gap that fitted the context exactly was
  refused. It is taken without a call now (``FormGuide.close``): n tokens, n calls.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.errors import UserError
from unmask.infill import Gap, infill_causal, template_canvas
from unmask.infill.automaton import TokenAutomaton
from unmask.infill.template import gap_automaton
from unmask.tokenizer import byte_tokenizer, with_fim_tokens

TOK = with_fim_tokens(byte_tokenizer())


class Favours:
    """A causal FIM double with a KV cache whose every position favours the byte ``favour``
    (then the end-of-text token); it counts its calls."""

    supports_kv_cache = True

    def __init__(self, max_seq_len: int, favour: bytes = b"x") -> None:
        self.config = SimpleNamespace(attention="causal", max_seq_len=max_seq_len,
                                      vocab_size=TOK.vocab_size, **TOK.special_ids(),
                                      **TOK.fim_ids())
        self.bias = torch.zeros(TOK.vocab_size)
        self.bias[TOK.eos_id] = 4.0
        for k, b in enumerate(favour):
            self.bias[TOK.encode(bytes([b]).decode())[0]] = 8.0 - k
        self.calls = 0

    def __call__(self, tokens, attention_mask=None, *, cache=None, start=0):
        self.calls += 1
        return self.bias.expand(*tokens.shape, TOK.vocab_size).clone()  # (B, L, V)


def test_a_long_unconstrained_causal_gap_fills():
    model = Favours(4096)
    r = infill_causal(model, TOK, "a[MASK:2100]b")
    assert r.text == "a" + "x" * 2100 + "b"
    assert r.nfe == model.calls == 2100


@pytest.mark.parametrize("template,n", [("a[MASK:59]b", 59), ("a[MASK:1-59]b", 59)])
def test_a_gap_that_fits_the_context_exactly_fills_with_one_call_a_token(template, n):
    """Prompt: 3 sentinels + "a" + "b" = 5 tokens, + 59 = 64, the context."""
    model = Favours(64)
    r = infill_causal(model, TOK, template)
    assert r.text == "a" + "x" * n + "b"
    assert r.nfe == model.calls == n  # the forced EOS after them: no call
    with pytest.raises(UserError, match="up to 60 middle tokens exceed the model's max_seq_len"):
        infill_causal(Favours(64), TOK, "a[MASK:60]b")


def test_a_variable_gap_ended_early_still_reads_its_eos_from_the_model():
    model = Favours(64, favour=b"")  # EOS first everywhere
    r = infill_causal(model, TOK, "a[MASK:2-9]b")
    assert len(r.gaps[0].tokens) == 2 and r.nfe == model.calls == 3


def test_a_least_length_beside_an_automaton_that_does_not_stretch():
    """``x|abc`` ends after ``x``: a counter for the least length would let the run write
    ``x`` and then find no token to take; such an automaton still gets the product."""
    regex = gap_automaton(Gap(regex="x|abc"), TOK)
    assert not regex.stretches() and gap_automaton(Gap(3), TOK).stretches()
    r = infill_causal(Favours(64), TOK, ["q", Gap(min_len=2, max_len=3, regex="x|abc"), "z"])
    assert r.gaps[0].text == "abc"
    assert TokenAutomaton.at_least(2, 5).stretches()


def test_a_constraint_shared_by_many_gaps_names_the_first_and_a_count():
    c = template_canvas(["a", Gap(1), "b", Gap(1), "c", Gap(1), "d", Gap(1), "e"], TOK)
    assert [p.name for p in c.constraints] == ["gap 1 and 3 others"]
    c = template_canvas(["a", Gap(1), "b", Gap(1), "c"], TOK)
    assert [p.name for p in c.constraints] == ["gap 1, gap 2"]
