"""A dynamic policy's bound: the prompt's masks come on top of a block's share, and the
scheduled minimum is the loop's, so a registered dynamic policy fills its blocks too."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_sampling_steps import Peaked  # position i proposes 4 + i % 8, no ties

from unmask.config import SampleConfig
from unmask.sampling.loop import generate
from unmask.sampling.policies import POLICIES, CommitPolicy, StepState, register_policy

MASK, PAD, EOS = 0, 1, 2
IDS = dict(mask_id=MASK, pad_id=PAD, eos_id=EOS)


@pytest.mark.parametrize("prompt_masks", ["fill", "reference"])
@pytest.mark.parametrize("policy", ["threshold", "factor", "entropy"])
def test_one_step_per_token_does_not_bind_with_masks_in_the_prompt(policy, prompt_masks):
    """The default ``steps`` (one per generated token) never binds: the first block commits
    the prompt's [MASK] too, which counted against its share (16 tokens in blocks of 4 with 6
    prompt masks took 16 steps, not one commit a step, 22). The run is the unbounded one."""
    prompts = [[5, MASK, MASK, 6, MASK, MASK, MASK, MASK, 7], [5, 6, 7, 8, 9, 10, 11, 12, 13]]
    config = SampleConfig(gen_length=16, steps=16, block_length=4, policy=policy,
                          threshold=1.0, factor=1e-9, entropy_bound=0.0,
                          prompt_masks=prompt_masks)
    bounded = generate(Peaked(), prompts, config, **IDS)
    free = generate(Peaked(), prompts, dataclasses.replace(config, steps=1000), **IDS)
    assert free.nfe == 22  # nothing passes the bar: one commit a step, 16 + 6 masks
    assert bounded.nfe == free.nfe and torch.equal(bounded.tokens, free.tokens)
    assert MASK not in bounded.tokens.tolist()[0]


class _Top1(CommitPolicy):
    """A registered dynamic policy that commits one candidate a step and knows no schedule."""

    dynamic = True

    def select(self, state: StepState) -> torch.Tensor:
        conf = state.confidence
        top = torch.zeros_like(state.candidates)
        top[torch.arange(conf.shape[0]), conf.argmax(dim=1)] = True
        return top & state.candidates

    def block_done(self, done: int, steps_per_block: int, block_masked: torch.Tensor) -> bool:
        return not bool(block_masked.any())  # ignores the bound: the loop keeps it


def test_a_registered_dynamic_policy_gets_the_scheduled_minimum():
    """The loop, not the built-in policies, commits the scheduled count: a registered dynamic
    policy kept its bound but left [MASK] in the output (8 tokens in 2 steps, one a step)."""
    register_policy("sampmend_top1")(lambda config: _Top1())
    try:
        config = SampleConfig(gen_length=8, steps=2, block_length=4, policy="sampmend_top1")
        model = Peaked()
        r = generate(model, [[5, 6]], config, **IDS)
        assert r.nfe == model.calls == 2
        assert MASK not in r.tokens.tolist()[0]
        loose = generate(Peaked(), [[5, 6]], dataclasses.replace(config, steps=8), **IDS)
        assert loose.nfe == 8 and MASK not in loose.tokens.tolist()[0]
    finally:
        POLICIES.pop("sampmend_top1")


@pytest.mark.parametrize("absolute,blocks", [(False, 4), (True, 5)])
def test_too_few_steps_for_block_diffusion_names_the_blocks_asked_for(absolute, blocks):
    """A block-diffusion model's block length is its own: the refusal of fewer steps than
    blocks offered "longer blocks", and named the padded span (gen_length 10) for LLaDA 2.x's
    absolute blocks; it names the gen_length asked for and a step count."""
    from unmask.errors import UserError
    from unmask.sampling.blocks import plan_blocks

    config = SampleConfig(gen_length=8, steps=3, policy="threshold")
    with pytest.raises(UserError) as e:
        plan_blocks(config, 2, [3], absolute=absolute)
    message = str(e.value)
    assert "longer blocks" not in message and "gen_length 10" not in message
    assert f"the 8 new tokens span ({blocks}" in message and f"try steps {blocks}" in message
