"""A dynamic policy's bound of forwards per block (``--steps``) and its minimum commits are
each row's own: a row beside another whose prompt holds ``[MASK]``s writes what it writes
alone (``Denoiser._enter_block``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.config import SampleConfig
from unmask.sampling.loop import generate

V, MASK, PAD = 40, 0, 1


class RowHashed:
    """Logits of a row drawn from a generator seeded by the row's own tokens (left padding
    ignored): a row's logits never depend on the other rows."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(vocab_size=V)

    def __call__(self, tokens: torch.Tensor, attention_mask: object = None) -> torch.Tensor:
        out = []
        for row in tokens:
            r = row[row != PAD]
            g = torch.Generator().manual_seed(int((r * torch.arange(1, len(r) + 1)).sum()))
            x = torch.randn(len(r), V, generator=g, dtype=torch.float64)
            out.append(torch.cat([torch.zeros(len(row) - len(r), V, dtype=torch.float64), x]))
        return torch.stack(out)


@pytest.mark.parametrize("policy", ["threshold", "entropy", "factor"])
@pytest.mark.parametrize("steps", [2, 4, 16])
def test_a_row_beside_prompt_masks_writes_what_it_writes_alone(policy, steps):
    model = RowHashed()
    config = SampleConfig(gen_length=16, steps=steps, block_length=8, policy=policy,
                          threshold=0.99, entropy_bound=0.001, factor=0.01)

    def run(prompts: list[list[int]]) -> torch.Tensor:
        return generate(model, prompts, config, mask_id=MASK, pad_id=PAD, eos_id=None).tokens

    masked = [5, 6] + [MASK] * 6 + [7]
    plain = [9, 10, 11]
    both = run([masked, plain])
    assert both[1, -16:].tolist() == run([plain])[0, -16:].tolist()
    assert both[0].tolist() == run([masked])[0].tolist()
    assert not (both == MASK).any()
