"""Sampling from masked diffusion language models: the loop, commit policies, live view.

- ``generate`` / ``sample`` and ``GenerateResult`` (``loop``): LLaDA's reverse process.
- ``CommitPolicy``, ``POLICIES``, ``register_policy``, ``REMASKING``,
  ``register_remasking`` (``policies``): which proposals to keep, by name.
- ``LiveView`` (``live``): draws the canvas in the terminal after every step.
"""

from __future__ import annotations

from unmask.sampling.live import LiveView
from unmask.sampling.loop import (
    GenerateResult,
    add_gumbel_noise,
    cut_at_eos,
    decode_generations,
    forbid_tokens,
    generate,
    make_generator,
    model_logit_shift,
    sample,
    shift_logits,
    validate,
)
from unmask.sampling.policies import (
    POLICIES,
    REMASKING,
    CommitPolicy,
    LLaDAPolicy,
    StepState,
    make_policy,
    num_transfer_tokens,
    register_policy,
    register_remasking,
)

__all__ = [
    "POLICIES",
    "REMASKING",
    "CommitPolicy",
    "GenerateResult",
    "LLaDAPolicy",
    "LiveView",
    "StepState",
    "add_gumbel_noise",
    "cut_at_eos",
    "decode_generations",
    "forbid_tokens",
    "generate",
    "make_generator",
    "make_policy",
    "model_logit_shift",
    "num_transfer_tokens",
    "register_policy",
    "register_remasking",
    "sample",
    "shift_logits",
    "validate",
]
