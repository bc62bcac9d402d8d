"""Continuous diffusion on token embeddings (objective ``embed-diffusion``): Diffusion-LM's
forward process with CDCD's cross-entropy training, through the one transformer.

- The clean state of a token is its embedding, a row of the model's own ``embed`` table
  L2-normalised to norm sqrt(D) (``token_embeddings``): every coordinate has unit scale,
  as the Gaussian noise does, and the loss cannot win by inflating norms (CDCD,
  Dieleman et al. 2022, §3.2, normalises its embeddings for the same reason).
- Forward process (``SqrtSchedule``): Diffusion-LM's sqrt schedule (Li et al. 2022, App. A:
  ᾱ = 1 - sqrt(t/T + s), here rescaled to reach exactly 0 at t = 1),
  ᾱ(t) = 1 - sqrt(s + (1 - s)·t), s = 1e-4, and
  x_t = sqrt(ᾱ(t))·x0 + sqrt(1 - ᾱ(t))·ε. We chose it over CDCD's learned time warping
  because it is a fixed closed form (testable, nothing to store, no extra training state)
  and it does what warping is for: it adds noise fast at small t, where embedding
  denoising is otherwise trivial and the steps wasted. ᾱ(1) = 0: sampling starts at N(0, I).
- The network reads x_t (``inputs_embeds``) and the time (adaLN, ``sigma = TIME_SCALE·t``)
  and returns logits over the vocabulary; the loss is their cross-entropy against x0 at
  every real position (CDCD's score-interpolation training; the rounding term of
  Diffusion-LM is this cross-entropy at every t rather than only at t = 0). The loss is an
  estimate of denoising difficulty, not a bound on -log p(x) (Plaid's bound needs a learned
  likelihood machinery we do not train).
- ``posterior_step``: DDPM's q(x_s | x_t, x0) with x0 the clamped prediction (the sampler,
  ``unmask.sampling.continuous``).

- Self-conditioning (``ModelConfig.embed_self_condition``; Chen et al. 2022, used by CDCD and
  Plaid): the model also reads its previous estimate of x0, the expected clean embedding
  softmax(logits)·E, through a D×D map added to x_t (``with_self_condition``; zero at
  init). Training gives half the batches a first, gradient-free estimate (zeros for the
  rest); the sampler feeds each step the last step's.

Inside: ``TIME_SCALE``, ``SqrtSchedule``, ``token_embeddings``, ``rms_normalize``,
``expected_embedding``, ``with_self_condition``, ``embed_diffusion`` (the loss),
``continuous_model_config``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import ModelConfig, TrainConfig
from unmask.errors import UserError
from unmask.objectives.spec import (
    LossParts,
    MaskPredictor,
    ObjectiveOptions,
    ObjectiveSpec,
    register_objective,
)

TIME_SCALE = 1000.0
"""t in [0, 1] reaches the adaLN time embedding as sigma = TIME_SCALE·t (DDPM's integer
timesteps), so its sinusoidal features spread over the whole range of frequencies."""


class SqrtSchedule:
    """Diffusion-LM's sqrt noise schedule (Li et al. 2022, arXiv:2205.14217, App. A):
    ᾱ(t) = 1 - sqrt(s + (1 - s)·t), from 1 - sqrt(s) ≈ 0.99 at t = 0 to 0 at t = 1."""

    def __init__(self, s: float = 1e-4) -> None:
        if not 0.0 <= s < 1.0:  # a negative s made ᾱ NaN near t = 0, one of 1 or more 0 there
            raise UserError(f"the sqrt schedule's offset s={s} must be in [0, 1)")
        self.s = s

    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ(t), the signal variance at time t (shape of ``t``)."""
        return (1.0 - torch.sqrt(self.s + (1.0 - self.s) * t.double())).clamp_min(0.0)

    def q_sample(self, x0: Tensor, t: Tensor, generator: torch.Generator | None,
                 noise: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0) = N(sqrt(ᾱ)·x0, (1 - ᾱ)·I) for x0 (B, N, D) and t (B,); the noise
        is drawn on CPU from ``generator`` (the same on every device), or given as ``noise``
        (standard normal, x0's shape: a sampler's draws of a generator per row)."""
        a = self.alpha_bar(t).float().to(x0.device)[:, None, None]  # (B, 1, 1)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator)
        eps = noise.to(x0.device, x0.dtype)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * eps  # (B, N, D)

    def posterior_step(
        self,
        xt: Tensor,
        x0_hat: Tensor,
        t: float,
        s: float,
        generator: torch.Generator | None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """x_s ~ q(x_s | x_t, x0 = x0_hat) for s < t (DDPM's posterior, Ho et al. 2020, eq. 7):
        mean = sqrt(ᾱ_s)·β/(1 - ᾱ_t)·x0 + sqrt(α)·(1 - ᾱ_s)/(1 - ᾱ_t)·x_t and variance
        β·(1 - ᾱ_s)/(1 - ᾱ_t), with α = ᾱ_t/ᾱ_s, β = 1 - α. With x0 the true x0 and
        x_t ~ q(x_t | x0), x_s has the marginal q(x_s | x0) (tested). ``noise``: the standard
        normal draws (xt's shape) in place of drawing them from ``generator``."""
        if not 0.0 <= s < t <= 1.0:  # s > t gave a negative variance, clamped to 0: no error
            raise UserError(f"a posterior step goes back in time, 0 <= s < t <= 1; got t={t}, "
                            f"s={s}")
        a_t = float(self.alpha_bar(torch.tensor(t)))
        a_s = float(self.alpha_bar(torch.tensor(s)))
        alpha = a_t / a_s
        beta = 1.0 - alpha
        c0 = math.sqrt(a_s) * beta / (1.0 - a_t)
        ct = math.sqrt(alpha) * (1.0 - a_s) / (1.0 - a_t)
        var = beta * (1.0 - a_s) / (1.0 - a_t)
        if noise is None:
            noise = torch.randn(xt.shape, generator=generator)
        noise = noise.to(xt.device, xt.dtype)
        return c0 * x0_hat + ct * xt + math.sqrt(max(var, 0.0)) * noise


def rms_normalize(x: Tensor) -> Tensor:
    """Each vector of ``x`` (..., D) scaled to unit root-mean-square (norm sqrt(D))."""
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-8).to(x.dtype)


def token_embeddings(model: MaskPredictor) -> Tensor:
    """(V, D) the clean states of the tokens: the model's ``embed`` rows at norm sqrt(D)."""
    core = getattr(model, "module", model)  # DDP wraps the model
    return rms_normalize(core.embed.weight)


def expected_embedding(logits: Tensor, table: Tensor) -> Tensor:
    """softmax(logits) · table (..., D): the x0 estimate in embedding space under ``logits``
    (..., V), what a self-conditioned model reads back (``with_self_condition``)."""
    return torch.softmax(logits.float(), dim=-1).to(table.dtype) @ table


def with_self_condition(model: MaskPredictor, xt: Tensor, previous: Tensor | None) -> Tensor:
    """The input of an embed-diffusion model: x_t, plus ``self_condition``(previous x0
    estimate) for a self-conditioned model (``ModelConfig.embed_self_condition``; zeros for
    none, so the map is used in every forward, as data-parallel training needs)."""
    core = getattr(model, "module", model)
    if not hasattr(core, "self_condition"):
        return xt
    prev = torch.zeros_like(xt) if previous is None else previous
    # the map runs in its weights' dtype (a bf16 / fp16 checkpoint read a float32 state and
    # estimate: "expected m1 and m2 to have the same dtype"), its output in the state's
    weight = core.self_condition.weight
    return xt + core.self_condition(prev.to(weight.dtype)).to(xt.dtype)


def _check_model(config: ModelConfig, name: str) -> None:
    if config.attention != "bidirectional" or not config.time_conditioning:
        raise UserError(
            f"objective {name!r} needs a bidirectional, time-conditioned model "
            f"(attention={config.attention!r}, time_conditioning={config.time_conditioning})"
        )


def embed_diffusion(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    t: Tensor | None = None,
) -> LossParts:
    """Embedding diffusion loss (Diffusion-LM's forward process, CDCD's cross-entropy; see the
    module docstring), in nats per token.

    t ~ U(0, 1) per row (antithetic as ``mdlm``), x_t = q_sample(token_embeddings[x0], t), and
    the cross-entropy of ``model(inputs_embeds=x_t, sigma=TIME_SCALE·t)`` against x0 at every
    real position (``attention_mask`` True), summed and normalised by their number.
    """
    _check_model(config, "embed-diffusion")
    B = x0.shape[0]
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    table = token_embeddings(model)  # (V, D)
    xt = SqrtSchedule().q_sample(table[x0], t, generator)  # (B, L, D)
    sigma = (TIME_SCALE * t).float().to(x0.device)  # (B,)
    previous = None
    if config.embed_self_condition and float(torch.rand(1, generator=generator)) < 0.5:
        with torch.no_grad():  # half the batches learn to refine a first, gradient-free estimate
            first = model(x0, attention_mask=attention_mask, sigma=sigma,
                          inputs_embeds=with_self_condition(model, xt, None))  # fmt: skip
            previous = expected_embedding(first, table.detach())  # (B, L, D)
    inputs = with_self_condition(model, xt, previous)
    logits = model(x0, attention_mask=attention_mask, sigma=sigma, inputs_embeds=inputs)
    valid = torch.ones_like(x0, dtype=torch.bool) if attention_mask is None else attention_mask
    valid = valid.bool()
    ce = F.cross_entropy(logits[valid].float(), x0[valid], reduction="sum")
    return LossParts(loss_sum=ce, n_tokens=valid.sum())


def continuous_model_config(model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelConfig:
    """A continuous-diffusion model is conditioned on its time by adaLN (``sigma`` given)."""
    return replace(model_cfg, time_conditioning=True, sigma_input="given", output="logits")


register_objective(
    ObjectiveSpec(
        name="embed-diffusion",
        loss=embed_diffusion,
        attention="bidirectional",
        decoder="embed-diffusion",
        model_config=continuous_model_config,
        noise_level=True,
        model_options=("embed_self_condition",),
        summary="Gaussian diffusion on token embeddings (Diffusion-LM schedule, CDCD loss)",
        likelihood=False,  # a cross-entropy of x0 predictions, not a bound
        # benchmarks/rounding.py (docs/sampling.md): argmax rounding repeats frequent tokens
        # (entropy 2.54 vs 3.55 for held-out text); 0.7 is the non-degenerate rounding
        # temperature the scorer rates best against a unigram of the same entropy
        sample_defaults=(("temperature", 0.7),),
    )
)

__all__ = [
    "TIME_SCALE",
    "SqrtSchedule",
    "continuous_model_config",
    "embed_diffusion",
    "expected_embedding",
    "rms_normalize",
    "token_embeddings",
    "with_self_condition",
]
