"""Infilling in blocks with a dynamic policy (threshold, factor, entropy): the steps asked for
bound the forwards, and steps that cover one forward per mask never bind, however unevenly
the masks lie over the blocks (``unmask.infill.fill.infill_config``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig
from unmask.infill.fill import infill_config
from unmask.sampling.loop import sample

MASK, EOS, V = 0, 2, 32


class Hashed:
    """Logits drawn from a generator seeded by the canvas: deterministic, no training."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(vocab_size=V)

    def __call__(self, tokens: torch.Tensor, attention_mask: object = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(tokens.sum()))
        return torch.randn(*tokens.shape, V, generator=g, dtype=torch.float64)


def _canvas() -> Canvas:
    # 40 columns in blocks of 8: text, three blocks full of masks, one with two
    row = [5] * 8 + [MASK] * 24 + [6, 7, 8, MASK, MASK, 9, 10, 11]
    return Canvas.from_tokens(torch.tensor([row]), mask_id=MASK, region=(0, 40))


def _run(policy: str, steps: int) -> tuple[int, list[int]]:
    cfg = SampleConfig(policy=policy, threshold=1.0, entropy_bound=0.0, block_length=8,
                       steps=steps)
    config, canvas = infill_config(cfg, _canvas())
    result = sample(Hashed(), canvas, config, eos_id=EOS, split=True)
    assert not (result.tokens == MASK).any()
    return result.nfe, result.tokens[0].tolist()


@pytest.mark.parametrize("policy", ["threshold", "entropy"])
def test_steps_that_cover_every_mask_do_not_bind_uneven_blocks(policy):
    """26 masks over blocks of 0, 8, 8, 8 and 2: at 26 steps or more the run is the unbounded
    one (a threshold nothing passes: one commit per forward, 26 forwards); an even share of
    26 over 5 blocks (5 or 6 each) bound the full blocks to 17 forwards and other text."""
    free = _run(policy, 1000)
    assert free[0] == 26
    for steps in (26, 30, 64):
        assert _run(policy, steps) == free


@pytest.mark.parametrize("policy", ["threshold", "entropy"])
def test_fewer_steps_than_masks_bound_the_forwards(policy):
    nfe, _ = _run(policy, 12)
    assert nfe <= 12
