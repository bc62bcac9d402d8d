"""``edit(lowest=...)``: a re-masked token that is a space and a word keeps the space."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig
from unmask.infill import edit, revise
from unmask.tokenizer import train_bpe

BPE = train_bpe(["cat sat. The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
V = BPE.vocab_size


def tid(piece: bytes) -> int:
    return next(i for i in range(V) if BPE.token_bytes(i) == piece)


class Low:
    """Every token likely (logit 5) but ``low`` (-5), so ``lowest=1`` picks it; ``best`` (10)
    fills."""

    def __init__(self, best: bytes, low: bytes) -> None:
        self.bias = torch.full((V,), 5.0)
        self.bias[tid(low)] = -5.0
        self.bias[tid(best)] = 10.0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, V).clone()  # (B, L, V)


TEXT = "The cat sat on the mat."


@pytest.mark.parametrize("best", [b"at", b" dog"])
def test_a_space_led_token_refilled_keeps_its_space(best):
    """``" sat"`` re-masked was refilled with ``"at"`` glued to the word before it
    (``"The catat on"``); the space is a word boundary, kept as a gap after a space keeps it."""
    assert BPE.encode(TEXT)[2] == tid(b" sat")
    r = edit(Low(best, b" sat"), BPE, TEXT, lowest=1, config=SampleConfig(steps=1))
    new = best.decode().strip()
    assert r.text == f"The cat {new} on the mat."
    assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [(8, 8 + len(new), "sat", new)]
    assert r.spans == [(8, 11)] and TEXT[8:11] == "sat"
    assert BPE.decode(BPE.encode(r.text)) == r.text


def test_revise_rounds_keep_the_spaces_of_their_tokens():
    r = revise(Low(b"at", b" sat"), BPE, TEXT, rounds=2, lowest=1, config=SampleConfig(steps=1))
    first = r.changes[0]
    assert (first.round, first.start, first.end, first.old, first.new) == (1, 8, 10, "sat", "at")
    assert "catat" not in r.text and r.text.endswith(" at on the mat.")


@pytest.mark.parametrize("how", ["span", "regex"])
def test_a_span_that_starts_with_a_space_after_a_word_keeps_it(how):
    """A span ``" sat"`` (``--span 7:11``, ``--regex ' s\\w+'``) was one gap that did not take
    the space in: its refill ``"at"`` came back glued (``"The catat on"``). The space is left
    out of the span, which then takes it in as a template gap after a space does."""
    where = {"spans": [(7, 11)]} if how == "span" else {"regex": r" s\w+"}
    for best, new in ((b"at", "at"), (b" dog", "dog")):
        r = edit(Low(best, b"The"), BPE, TEXT, config=SampleConfig(steps=1), **where)
        assert r.text == f"The cat {new} on the mat."
        assert r.spans == [(8, 11)]
        assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [
            (8, 8 + len(new), "sat", new)]


def test_a_span_of_spaces_or_after_a_space_is_rewritten_as_given():
    model = Low(b"at", b"The")
    r = edit(model, BPE, "The cat  sat on.", spans=[(8, 12)], config=SampleConfig(steps=1))
    assert r.spans == [(8, 12)]
    r = edit(model, BPE, "The cat sat on.", spans=[(7, 8)], config=SampleConfig(steps=1))
    assert r.spans == [(7, 8)]
