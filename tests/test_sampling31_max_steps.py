"""Session 31: ``steps`` far beyond any use (a typo: 10**9) is refused in one line by the
commit loop's ``validate``: its count schedule is a (B, steps) tensor built up front, which
at 10**9 got the process killed for memory (no message)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.loop import MAX_STEPS, Denoiser, validate


def test_steps_past_the_bound_are_refused_before_anything_is_built():
    with pytest.raises(UserError, match=r"^steps must be at most 1048576, got 1000000000 "):
        validate(SampleConfig(gen_length=8, steps=10**9))
    for policy in ("llada", "threshold"):  # a dynamic policy's bound too
        with pytest.raises(UserError, match="steps must be at most"):
            Denoiser.for_prompts(lambda t, attention_mask=None: torch.zeros(*t.shape, 16),
                                 [[5]], SampleConfig(gen_length=4, steps=MAX_STEPS + 1,
                                                     policy=policy),
                                 mask_id=0, pad_id=1, eos_id=2)
    validate(SampleConfig(gen_length=8, steps=MAX_STEPS))  # the bound itself runs
