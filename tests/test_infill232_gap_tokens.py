"""A gap's reported ``tokens`` are the tokens the model wrote for it: a gap at the start of
the text written as ``" a"``, ``"f"``, ``"g"``, ``"h"`` (its virtual space dropped) reports
4 tokens, ``a f g h`` (in ``InfillResult.gaps`` and so ``unmask infill --json``), not its
text encoded again (``"afgh"``, one token of this BPE)."""

from __future__ import annotations

import dataclasses

import torch
from server_helpers import tiny_config

from unmask.config import SampleConfig
from unmask.infill import Gap, infill
from unmask.tokenizer import train_bpe

BPE = train_bpe(["afgh bcde afgh gh fgh a bcd e end"] * 20, vocab_size=300)
V = BPE.vocab_size
IDS = {BPE.token_bytes(i): i for i in range(V)}
WRITTEN = [IDS[b" a"], IDS[b"f"], IDS[b"g"], IDS[b"h"]]
REPORTED = [IDS[b"a"], IDS[b"f"], IDS[b"g"], IDS[b"h"]]


class Writes(torch.nn.Module):
    """Every position favours the tokens ``" a"``, ``"f"``, ``"g"``, ``"h"`` alike."""

    def __init__(self) -> None:
        super().__init__()
        self.config = dataclasses.replace(tiny_config(), vocab_size=V)
        self.bias = torch.zeros(V)
        self.bias[WRITTEN] = 5.0

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, V).clone()


def test_the_bpe_has_the_tokens_the_test_needs() -> None:
    assert IDS[b"afgh"] and BPE.encode("afgh") == [IDS[b"afgh"]]


def check(text: str, gap: dict | object, tokens: list[int]) -> None:
    g = gap if isinstance(gap, dict) else dataclasses.asdict(gap)
    assert text == "afgh end"
    assert g["text"] == "afgh" and g["start"] == 0
    assert g["tokens"] == REPORTED  # 4 tokens for Gap(4), as written, the space dropped
    assert BPE.decode(g["tokens"]) == g["text"]
    assert BPE.decode(tokens) == text and tokens[:4] == REPORTED


def test_a_gap_at_the_start_reports_the_tokens_it_was_written_with() -> None:
    r = infill(Writes(), BPE, ["", Gap(4, regex="(a|bcd)(e|fgh)"), " end"],
               SampleConfig(steps=4))
    check(r.text, r.gaps[0], r.tokens)


class InOrder(Writes):
    """The gap's i-th position favours ``WRITTEN[i]`` (the gap: from the first mask seen)."""

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if not hasattr(self, "start"):
            self.start = int((tokens[0] == BPE.mask_id).nonzero()[0])
        out = torch.zeros(*tokens.shape, V)
        for i, t in enumerate(WRITTEN):
            out[:, self.start + i, t] = 5.0
        return out


def test_an_unconstrained_gap_at_the_start_keeps_its_count() -> None:
    r = infill(InOrder(), BPE, "[MASK:4] end", SampleConfig(steps=4))
    check(r.text, r.gaps[0], r.tokens)



def test_a_gap_after_an_empty_one_at_the_start_keeps_its_count() -> None:
    # the first gap left empty, the second's space (in its " a") starts the text: dropped
    r = infill(InOrder(), BPE, "[MASK:0-2] [MASK:4] end", SampleConfig(steps=4))
    assert r.gaps[0].text == "" and r.gaps[0].tokens == []
    check(r.text, r.gaps[1], r.tokens)
