"""Steps over blocks: a total that is a cap (``split``), and the dynamic policies' bound."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.loop import sample, split_steps

MASK, PAD, EOS = 0, 1, 2


class Peaked:
    """Position i proposes token 4 + i % 8 with a confidence that falls with i (no ties)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.calls += 1
        B, L = tokens.shape
        logits = torch.zeros(B, L, 16, dtype=torch.float64)
        for i in range(L):
            logits[:, i, 4 + i % 8] = 8.0 - i * 0.1
        return logits


def holes(n: int, before: int = 2) -> Canvas:
    tokens = torch.tensor([[5] * before + [MASK] * n])
    return Canvas.from_tokens(tokens, mask_id=MASK, region=(before, before + n))


def test_split_steps_spreads_a_total():
    assert split_steps(10, 4) == [3, 3, 2, 2]
    assert split_steps(12, 4) == [3, 3, 3, 3]
    assert split_steps(4, 4) == [1, 1, 1, 1]
    assert sum(split_steps(1023, 7)) == 1023


def test_a_split_total_is_a_cap_over_blocks():
    """Infilling in blocks rounded its steps up to a multiple of the blocks: ``block_length
    8`` at ``--max-steps 10`` ran 12 forwards (4 blocks x 3). With ``split`` the loop spreads
    the 10 steps (3, 3, 2, 2) and takes exactly 10; every mask is filled."""
    model = Peaked()
    config = SampleConfig(gen_length=32, block_length=8, steps=10)
    r = sample(model, holes(32), config, split=True, return_history=True)
    assert r.nfe == r.steps == model.calls == 10
    assert MASK not in r.tokens.tolist()[0]
    per_block = [0] * 4
    for before, after in zip([holes(32).tokens] + r.history[:-1], r.history, strict=True):
        changed = (before != after)[0, 2:].nonzero().flatten().tolist()
        per_block[changed[0] // 8] += 1  # a step commits inside one block
    assert per_block == [3, 3, 2, 2]
    # a multiple runs as before, split or not
    twelve = dataclasses.replace(config, steps=12)
    a = sample(Peaked(), holes(32), twelve, split=True)
    b = sample(Peaked(), holes(32), twelve)
    assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe == 12


def test_a_split_total_below_the_blocks_is_one_line():
    config = SampleConfig(gen_length=32, block_length=8, steps=3)
    with pytest.raises(UserError, match=r"^steps \(3\) must be at least the number of blocks "
                                        r"\(4 = gen_length 32 / block_length 8\)"):
        sample(Peaked(), holes(32), config, split=True)
    # without split: LLaDA's rule, a multiple of the blocks (unchanged)
    with pytest.raises(UserError, match="must be a multiple of the number of blocks"):
        sample(Peaked(), holes(32), dataclasses.replace(config, steps=10))


@pytest.mark.parametrize("policy", ["threshold", "factor", "entropy"])
def test_dynamic_policies_keep_their_bound_in_every_block(policy):
    """A dynamic policy at a bar nothing passes (one commit a step) under ``steps`` 10 over 4
    blocks of 8: at most 3, 3, 2, 2 steps, every mask filled (it took 32 steps, one a token)."""
    model = Peaked()
    config = SampleConfig(gen_length=32, block_length=8, steps=10, policy=policy,
                          threshold=1.0, factor=1e-9, entropy_bound=0.0)
    r = sample(model, holes(32), config, return_history=True)
    assert r.nfe == model.calls == 10 and MASK not in r.tokens.tolist()[0]
    # the split per block, not only the total: the blocks whose masks each step committed
    blocks, before = [], holes(32).tokens
    for after in r.history:
        cols = ((before == MASK) & (after != MASK))[0].nonzero().flatten().tolist()
        blocks.append({(c - 2) // 8 for c in cols})
        before = after
    assert all(len(b) == 1 for b in blocks)
    assert [sum(b == {k} for b in blocks) for k in range(4)] == [3, 3, 2, 2]
    loose = sample(Peaked(), holes(32), dataclasses.replace(config, steps=32))
    assert loose.nfe == 32  # one step per mask: the bound does not bind


@pytest.mark.parametrize("policy", ["threshold", "entropy"])
def test_a_dynamic_bound_fills_the_block_with_prompt_masks_under_reference(policy):
    """Under ``prompt_masks='reference'`` the floor counted the block's own masks only, while
    the prompt's masks compete for the commits: at a binding bound the block ended with masks
    of its own left. The floor counts every candidate: the generated region is filled. The
    first block commits the prompt's 2 masks too, so they come on top of its share of 2
    steps: 4 steps (6 masks: 2, 2, 1, 1), then 2 for the second block."""
    tokens = torch.tensor([[5, MASK, 5, MASK] + [MASK] * 8])
    canvas = Canvas.from_tokens(tokens, mask_id=MASK, region=(4, 12))
    config = SampleConfig(gen_length=8, block_length=4, steps=4, policy=policy, threshold=1.0,
                          entropy_bound=0.0, prompt_masks="reference")
    r = sample(Peaked(), canvas, config)
    assert r.nfe == 6 and MASK not in r.tokens[0].tolist()
