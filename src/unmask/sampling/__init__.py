"""Sampling from masked diffusion language models: the loop, commit policies, caches, live view.

- ``generate`` / ``sample`` and ``GenerateResult`` (``loop``): LLaDA's reverse process;
  ``Denoiser`` (one run as a state object stepped by ``step(logits)``) and
  ``step_together`` (one shared forward pass for many runs: continuous batching).
- ``CommitPolicy``, ``POLICIES``, ``register_policy`` (``policies``): which proposals to
  keep, by name: ``llada`` (scheduled), ``threshold`` / ``factor`` (Fast-dLLM), ``entropy``
  (EB-sampler).
- ``CONFIDENCES``, ``register_confidence``, ``REMASKING``, ``register_remasking``
  (``policies``): how proposals are scored.
- ``CACHES``, ``register_cache``, ``CachePolicy`` (``cache``): KV-cache reuse (none,
  prefix, dual).
- ``generate_ar`` (``ar``): autoregressive decoding with a KV cache for causal models.
- ``LiveView`` (``live``): draws the canvas in the terminal after every step.
- ``sample_sedd`` / ``generate_sedd`` (``sedd``): SEDD's Euler and analytic samplers (policy
  names ``sedd-euler``, ``sedd-analytic``; registered on import).
"""

from __future__ import annotations

from unmask.sampling.ar import filter_logits, generate_ar, sample_token
from unmask.sampling.blocks import sample_blocks
from unmask.sampling.cache import CACHES, CachePolicy, make_cache, register_cache, shift_logits
from unmask.sampling.live import LiveView
from unmask.sampling.loop import (
    Denoiser,
    GenerateResult,
    add_gumbel_noise,
    cut_at_eos,
    decode_generations,
    forbid_tokens,
    generate,
    make_generator,
    model_logit_shift,
    sample,
    step_together,
    validate,
)
from unmask.sampling.policies import (
    CONFIDENCES,
    POLICIES,
    REMASKING,
    CommitPolicy,
    EntropyBoundPolicy,
    FactorPolicy,
    LLaDAPolicy,
    StepState,
    ThresholdPolicy,
    make_policy,
    num_transfer_tokens,
    register_confidence,
    register_policy,
    register_remasking,
)
from unmask.sampling.sedd import SEDD_POLICIES, generate_sedd, sample_sedd, uses_sedd_sampler

__all__ = [
    "CACHES",
    "Denoiser",
    "step_together",
    "CONFIDENCES",
    "POLICIES",
    "REMASKING",
    "SEDD_POLICIES",
    "CachePolicy",
    "CommitPolicy",
    "EntropyBoundPolicy",
    "FactorPolicy",
    "GenerateResult",
    "LLaDAPolicy",
    "LiveView",
    "StepState",
    "ThresholdPolicy",
    "add_gumbel_noise",
    "cut_at_eos",
    "decode_generations",
    "filter_logits",
    "forbid_tokens",
    "generate",
    "generate_ar",
    "generate_sedd",
    "make_cache",
    "make_generator",
    "make_policy",
    "model_logit_shift",
    "num_transfer_tokens",
    "register_cache",
    "register_confidence",
    "register_policy",
    "register_remasking",
    "sample",
    "sample_blocks",
    "sample_sedd",
    "sample_token",
    "shift_logits",
    "uses_sedd_sampler",
    "validate",
]
