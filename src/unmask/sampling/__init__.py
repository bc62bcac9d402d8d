"""Decoding: one protocol, one registry of decoders, one choice from the checkpoint's facts.

- ``DecoderRun`` (``protocol``): one run as a state object (``advance``, ``done``, ``view``,
  ``result``, ``nfe``/``steps``; ``shares_forward`` + ``model_inputs``/``step`` for runs that
  can share a forward pass); ``step_together`` (continuous batching over any such runs),
  ``GenerateResult``, ``rows_finished`` (stopping at EOS).
- ``DECODERS``, ``register_decoder``, ``Decoder``, ``Target``, ``choose_decoder``
  (``registry``): decoders by name and the one function that picks one from
  ``unmask.facts.ModelFacts`` and ``SampleConfig.decoder`` (or refuses, in one line).
- The decoders, one module each: ``llada`` (``loop``: ``Denoiser``, LLaDA's reverse process
  with commit policies and caches; ``generate`` / ``sample``), ``bd3lm`` (``blocks``:
  ``BlockRun``, ``sample_blocks``), ``sedd`` (``sedd``: ``SEDDRun``, ``sample_sedd`` /
  ``generate_sedd``, Euler and analytic steps), ``ar`` (``ar``: ``ARRun``, ``generate_ar``),
  ``speculative`` (``speculative``: ``SpeculativeRun``, a diffusion drafter for a causal
  verifier), ``hybrid`` (``hybrid``: ``HybridRun``, one TiDAR-style model verifies its drafts
  and drafts the next block in one forward), ``embed-diffusion`` and ``latent-diffusion``
  (``continuous``: ``EmbedRun``, ``LatentRun``, Gaussian diffusion of embeddings / latents,
  gradient guidance).
- ``CommitPolicy``, ``POLICIES``, ``register_policy`` (``policies``): which proposals the
  ``llada`` / ``bd3lm`` decoders keep: ``llada`` (scheduled), ``threshold`` / ``factor``
  (Fast-dLLM), ``entropy`` (EB-sampler); ``CONFIDENCES``, ``REMASKING``: how they are scored.
- ``CACHES``, ``register_cache``, ``CachePolicy`` (``cache``): KV-cache reuse (none, prefix,
  dual).
- ``Penalties`` (``penalties``): repetition / presence / frequency penalties, one definition
  for the commit loop (a canvas constraint) and the left-to-right decoders (``TextCounts``).
- ``LiveView`` (``live``): draws the generation region in the terminal after every step.

Most callers want ``unmask.api`` (one entry per task), not this package.
"""

from __future__ import annotations

from unmask.sampling.ar import ARRun, filter_logits, generate_ar, sample_token
from unmask.sampling.blocks import BlockRun, sample_blocks
from unmask.sampling.cache import CACHES, CachePolicy, make_cache, register_cache, shift_logits
from unmask.sampling.continuous import EmbedRun, LatentRun
from unmask.sampling.hybrid import HybridResult, HybridRun
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
from unmask.sampling.penalties import Penalties
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
from unmask.sampling.protocol import DecoderRun, ViewCallback, rows_finished
from unmask.sampling.registry import DECODERS, Decoder, Target, choose_decoder, register_decoder
from unmask.sampling.sedd import (
    SEDD_POLICIES,
    SEDDRun,
    generate_sedd,
    sample_sedd,
    uses_sedd_sampler,
)
from unmask.sampling.speculative import SpeculativeResult, SpeculativeRun

__all__ = [
    "ARRun",
    "BlockRun",
    "EmbedRun",
    "LatentRun",
    "DECODERS",
    "Decoder",
    "DecoderRun",
    "HybridResult",
    "HybridRun",
    "SEDDRun",
    "SpeculativeResult",
    "SpeculativeRun",
    "Target",
    "ViewCallback",
    "choose_decoder",
    "register_decoder",
    "rows_finished",
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
    "Penalties",
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
