"""A template given as segments reads the same however its text is split."""

from __future__ import annotations

import torch

from unmask.config import SampleConfig
from unmask.infill import Gap, infill, plan_template
from unmask.tokenizer import train_bpe

BPE = train_bpe(["cat sat. The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
V = BPE.vocab_size
CAT = next(i for i in range(V) if BPE.token_bytes(i) == b" cat")


def prefers_cat(tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
    bias = torch.zeros(V)
    bias[CAT] = 10.0
    return bias.expand(*tokens.shape, V).clone()  # (B, L, V)


def test_split_text_before_a_gap_is_read_as_one_text():
    """``["The ", "", Gap()]`` locked the space that ``["The ", Gap()]`` moves into the gap
    (the fill then glued a second space: ``"The  cat"``), and ``["The", " ", Gap()]`` encoded
    the two texts apart."""
    want = infill(prefers_cat, BPE, ["The ", Gap(), " sat"], SampleConfig(steps=1))
    assert want.text == "The cat sat"
    for split in (["The ", "", Gap(), " sat"], ["The", " ", Gap(), " s", "at"],
                  ["", "The ", Gap(), "", " sat", ""]):
        r = infill(prefers_cat, BPE, split, SampleConfig(steps=1))
        assert (r.text, r.tokens) == (want.text, want.tokens), split
    plan = plan_template(["The", " ", Gap(), " s", "at"], BPE)
    assert plan.holes[0].space and [k for k, _ in plan.items] == ["text", "hole", "text"]


def test_a_locked_space_stays_locked_when_split():
    r = infill(prefers_cat, BPE, ["The ", Gap(take_space=False), " sat"], SampleConfig(steps=1))
    assert r.text == "The  cat sat"
