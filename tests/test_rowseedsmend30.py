"""Rows of a batch write what they write alone where the batch used to differ.

- Exact ties of confidence (two columns of the same confidence, as two probabilities of
  exactly 1.0): ``torch.topk`` broke them by where the row sits in the tensor, so a row
  left-padded beside a longer prompt committed other columns than alone; the scheduled
  policy now takes them in column order, as the dynamic policies do (``most_confident``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.config import SampleConfig
from unmask.sampling.ar import row_generators
from unmask.sampling.loop import generate
from unmask.sampling.protocol import make_generator

V, MASK, PAD, EOS = 40, 0, 1, 2
KW = {"mask_id": MASK, "pad_id": PAD, "eos_id": EOS}


class Tied:
    """Every column of a row gets the same logits, drawn from a generator seeded by the
    row's own tokens (left padding ignored): each step's confidences tie exactly."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(vocab_size=V)

    def __call__(self, tokens: torch.Tensor, attention_mask: object = None) -> torch.Tensor:
        out = []
        for row in tokens:
            r = row[row != PAD]
            g = torch.Generator().manual_seed(int((r * torch.arange(1, len(r) + 1)).sum()))
            x = (2 * torch.randn(1, V, generator=g, dtype=torch.float64)).expand(len(r), V)
            out.append(torch.cat([torch.zeros(len(row) - len(r), V, dtype=torch.float64), x]))
        return torch.stack(out)


PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [9], [20, 21, 22]]


@pytest.mark.parametrize("options", [
    {"temperature": 0.0, "steps": 8},
    {"temperature": 0.0, "steps": 6, "block_length": 8},
    {"temperature": 1.0, "steps": 8, "block_length": 8},
])
def test_exact_ties_commit_the_same_columns_in_a_batch_as_alone(options):
    """Greedy rows in one batch (one generator: no draws at t=0) and seeded rows (a
    generator each) beside longer prompts: each row = the row alone."""
    model = Tied()
    config = SampleConfig(gen_length=16, **options)
    greedy = options["temperature"] == 0
    batch = generate(model, PROMPTS, config, generator=None if greedy else
                     row_generators([1, 2, 3]), **KW)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], config, generator=make_generator(i + 1), **KW)
        assert batch.gen_ids[i] == alone.gen_ids[0], i
