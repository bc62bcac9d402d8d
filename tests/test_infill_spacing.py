"""BPE spacing: an unconstrained gap takes in the space before it, and the text keeps it."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig
from unmask.infill import Gap, infill, plan_template, takes_space
from unmask.tokenizer import byte_tokenizer, train_bpe

BPE = train_bpe(["cat sat. The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
V = BPE.vocab_size


def tid(piece: bytes) -> int:
    return next(i for i in range(V) if BPE.token_bytes(i) == piece)


class Prefers:
    """Every position favours the token ``best``; other space-led tokens next, then the rest.
    Records every canvas it sees."""

    def __init__(self, best: bytes, space_led: float = 4.0) -> None:
        self.bias = torch.zeros(V)
        for i in range(V):
            b = BPE.token_bytes(i)
            if len(b) >= 2 and b.startswith(b" "):
                self.bias[i] = space_led
        self.bias[tid(best)] = 10.0
        self.bias[[BPE.mask_id, BPE.pad_id, BPE.eos_id]] = 20.0  # never allowed in a gap
        self.seen: list[list[int]] = []

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.extend(tokens.tolist())
        return self.bias.expand(*tokens.shape, V).clone()


def check_round_trip(r) -> None:
    assert BPE.decode(r.tokens) == r.text
    for g in r.gaps:
        assert r.text[g.start : g.end] == g.text


def test_gap_takes_the_space_and_fills_with_a_space_led_token():
    model = Prefers(b" cat")
    r = infill(model, BPE, "The [MASK] sat", SampleConfig(steps=1))
    assert r.text == "The cat sat" and r.gaps[0].text == "cat" and r.gaps[0].tokens == [tid(b" cat")]
    assert r.tokens == BPE.encode("The") + [tid(b" cat")] + BPE.encode(" sat")
    assert model.seen[0][:2] == BPE.encode("The") + [BPE.mask_id]  # no locked space before the gap
    check_round_trip(r)


def test_space_is_put_back_when_the_fill_has_none():
    r = infill(Prefers(b"cat", space_led=-5.0), BPE, "The [MASK] sat", SampleConfig(steps=1))
    assert r.text == "The cat sat" and r.gaps[0].text == "cat" and r.gaps[0].tokens == [tid(b"cat")]
    assert r.tokens == BPE.encode("The") + BPE.encode(" ") + [tid(b"cat")] + BPE.encode(" sat")
    check_round_trip(r)


def test_escaped_space_stays_locked():
    model = Prefers(b" cat")
    r = infill(model, BPE, r"The\ [MASK] sat", SampleConfig(steps=1))
    # The locked space forces a second space: what the rule avoids.
    assert r.text == "The  cat sat" and r.gaps[0].text == " cat"
    assert model.seen[0][:3] == BPE.encode("The ") + [BPE.mask_id] and len(BPE.encode("The ")) == 2
    check_round_trip(r)
    # The same through the Python API.
    r2 = infill(Prefers(b" cat"), BPE, ["The ", Gap(take_space=False), " sat"], SampleConfig(steps=1))
    assert r2.text == "The  cat sat"


def test_only_the_last_space_moves_and_several_gaps_round_trip():
    r = infill(Prefers(b" cat"), BPE, "The  [MASK] on [MASK:2] [MASK].", SampleConfig(steps=4))
    assert r.text == "The  cat on cat cat cat." and [g.text for g in r.gaps] == ["cat", "cat cat", "cat"]
    check_round_trip(r)


def test_variable_length_gap_with_the_space_round_trips():
    r = infill(Prefers(b" cat"), BPE, "The [MASK:1-3] sat", SampleConfig(steps=3))
    assert r.text.startswith("The ") and r.text.endswith(" sat") and r.length_mode == "elbo"
    assert all(c.text.startswith("The c") for c in r.candidates)
    check_round_trip(r)


@pytest.mark.parametrize("gap,expect", [
    (Gap(choices=["cat", "dog"]), False),  # constraints shape the text: no space moves in
    (Gap(regex="[a-z]+"), False),
    (Gap(2, allowed="lowercase"), False),
    (Gap(banned=["x"]), True),  # banning tokens does not
    (Gap(), True),
])
def test_rule_applies_to_unconstrained_gaps_only(gap, expect):
    assert takes_space(gap, "The ", BPE) is expect
    assert not takes_space(gap, "The", BPE)
    assert not takes_space(gap, "The ", byte_tokenizer())  # no space-led tokens: nothing to gain
    plan = plan_template(["The ", gap, " sat"], BPE)
    assert plan.holes[0].space is expect
    assert plan.items[0][1][0] == BPE.encode("The" if expect else "The ")


def test_constrained_gap_keeps_the_space_locked():
    model = Prefers(b" cat")
    r = infill(model, BPE, ["The ", Gap(choices=["cat", "dog"]), " sat"], SampleConfig(steps=2))
    assert r.text in ("The cat sat", "The dog sat")
    assert r.tokens[: len(BPE.encode("The "))] == BPE.encode("The ")
    check_round_trip(r)


def test_edit_span_after_a_space_uses_space_led_tokens():
    from unmask.infill import edit

    r = edit(Prefers(b" dog"), BPE, "The cat sat on the mat.", spans=[(4, 7)], config=SampleConfig(steps=1))
    assert r.text == "The dog sat on the mat."
    assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [(4, 7, "cat", "dog")]
