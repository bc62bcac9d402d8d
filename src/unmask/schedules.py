"""Noise schedules α(t) and the forward (masking) process of masked diffusion.

One schedule object serves training and sampling (MDLM, Sahoo et al. 2024; LLaDA,
Nie et al. 2025):

- ``p_mask(t)``: probability that a token is ``[MASK]`` at time t, floored at ``eps``
  as LLaDA trains it: ``p_mask = (1 - eps)·(1 - α(t)) + eps``;
- ``weight(t)``: the ELBO weight ``-α'(t) / p_mask(t)`` of the cross-entropy at a
  masked token (``1/p_mask`` for the linear schedule, LLaDA's form);
- ``sample_t``: t ~ U(0, 1) per row, optionally low-discrepancy ("antithetic") so a
  batch covers [0, 1) evenly (VDM's low-discrepancy sampler, one random offset of an even
  grid, Kingma et al. 2021; MDLM's "antithetic" flag draws one offset per stratum instead);
- ``mask``: the forward process q(x_t | x_0);
- ``transfer_counts``: how many of n masked tokens to reveal at each of s reverse
  steps, i.e. the expected share ``(α(s) - α(t)) / (1 - α(t))`` per step, rounded so
  the linear schedule gives LLaDA's counts exactly (n // s per step, the remainder to
  the earliest steps: 10 over 4 → 3, 3, 2, 2).

Inside: ``Schedule`` (base), ``LinearSchedule``, ``CosineSchedule``, ``GeometricSchedule``
(SEDD's geometric noise as α = e^{-σ}), ``SCHEDULES``, ``get_schedule``, ``schedule_of`` (the
schedule a checkpoint's config names).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from unmask.errors import UserError


class Schedule:
    """α(t): the probability that a token is still clean at time t ∈ [0, 1]."""

    name = "base"

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0.0 <= eps < 1.0:
            raise UserError(f"eps={eps} must be in [0, 1)")
        self.eps = eps

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        """dα/dt."""
        raise NotImplementedError

    def p_mask(self, t: Tensor) -> Tensor:
        return (1.0 - self.eps) * (1.0 - self.alpha(t)) + self.eps

    def weight(self, t: Tensor) -> Tensor:
        """ELBO weight of the masked-token cross-entropy at time t: ``-α'(t) / p_mask(t)``, so
        that a token's expected weight over t ~ U(0, 1), ``E[weight · p_mask]``, is α(0) - α(1):
        1 for the linear and cosine schedules (a uniform predictor's bound is exactly log V a
        token, as with the linear schedule's ``1/p_mask``; the floor ``eps`` stands in for the
        t≈0 end, conservatively: a token is no harder to predict at less masking), 0.9999 for
        the geometric one, whose α(0) is e^{-1e-4}."""
        return -self.dalpha(t) / self.p_mask(t)

    def sample_t(
        self, batch: int, generator: torch.Generator, *, antithetic: bool = True
    ) -> Tensor:
        """(batch,) times in [0, 1); antithetic = one uniform offset plus an even grid, t_i =
        (u + i/batch) mod 1 (VDM's low-discrepancy sampler; each t_i is still U(0, 1), so
        the loss stays an unbiased estimate, with less variance across the batch)."""
        if antithetic:
            u = torch.rand(1, generator=generator)
            return (u + torch.arange(batch) / batch) % 1.0
        return torch.rand(batch, generator=generator)

    @staticmethod
    def mask(
        x0: Tensor,
        p_mask: Tensor,
        *,
        mask_id: int,
        generator: torch.Generator,
        maskable: Tensor | None = None,
        u: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Forward process: each maskable token of x0 (B, L) becomes ``mask_id`` with probability
        p_mask (B,): where its uniform draw is below p_mask. ``u`` (B, L) gives the draws
        instead of ``generator``.

        Returns (xt, masked) with masked (B, L) bool.
        """
        if u is None:
            u = torch.rand(x0.shape, generator=generator)
        u = u.to(x0.device)
        masked = u < p_mask.to(x0.device)[:, None]  # (B, L)
        if maskable is not None:
            masked &= maskable
        return torch.where(masked, torch.full_like(x0, mask_id), x0), masked

    def transfer_counts(self, n: int, steps: int) -> list[int]:
        """Tokens to reveal at each of ``steps`` reverse steps from t=1 to t=0, summing to n.

        With at least as many tokens as steps no step reveals none: the running total after
        step k is held within ``[k, n - (steps - k)]`` (a step that reveals nothing is a
        forward that changes nothing; cosine's rounding gave 10 over 8 steps as
        0, 1, 1, 1, 1, 2, 2, 2 and 65 over 64 thirteen empty steps, where 64 over 64 is one a
        step). The schedule still shapes the rest: 10 over 8 is 1, 1, 1, 1, 1, 1, 2, 2."""
        if steps <= 0:
            raise UserError(f"steps={steps} must be positive")
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        a = self.alpha(grid).clamp(0.0, 1.0)
        frac = (1.0 - a) / (1.0 - a[0]).clamp_min(1e-12)  # share still masked, 1 → 0
        cum = [round(n * (1.0 - float(f))) for f in frac[1:]]
        if n >= steps:  # one token a step at least, room for one in every later step
            cum = [min(max(c, k), n - steps + k) for k, c in enumerate(cum, start=1)]
        cum[-1] = n
        return [c - p for c, p in zip(cum, [0] + cum[:-1], strict=True)]


class LinearSchedule(Schedule):
    """α(t) = 1 - t (LLaDA, MDLM's default); weight 1/p_mask."""

    name = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def dalpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def transfer_counts(self, n: int, steps: int) -> list[int]:
        if steps <= 0:
            raise UserError(f"steps={steps} must be positive")
        base, rem = divmod(n, steps)
        return [base + 1 if i < rem else base for i in range(steps)]


class CosineSchedule(Schedule):
    """α(t) = 1 - sin(π t / 2): MaskGIT's cosine in diffusion time, revealing few tokens in the
    first reverse steps and many in the last (MDLM's ``CosineNoise`` is the mirror image,
    α = cos(π t / 2), which reveals many first)."""

    name = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - torch.sin(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * t)


class GeometricSchedule(Schedule):
    """SEDD's geometric noise (Lou et al. 2024, arXiv:2310.16834, §5.1; the reference's
    ``GeometricNoise`` with its configured ``sigma_min`` 1e-4 and ``sigma_max`` 20): the total
    noise σ(t) = σ_min^{1-t}·σ_max^t, rate dσ/dt = σ(t)·log(σ_max/σ_min), and as a masking
    schedule α(t) = e^{-σ(t)}, the share of tokens the absorbing graph leaves clean.

    Objective ``sedd`` runs on σ itself (``unmask.sedd.noise_of``; ``eps`` does not apply).
    A masked objective reads α: from α(0) = e^{-σ_min} ≈ 0.9999 to α(1) = e^{-20} ≈ 2e-9, so its
    ELBO leaves out the reconstruction of the ~1e-4 of tokens masked already at t = 0 (as
    SEDD's bound leaves out σ < σ_min): a token's expected weight is α(0) - α(1), not 1."""

    name = "geometric"
    sigma_min = 1e-4
    """σ(0)."""
    sigma_max = 20.0
    """σ(1): e^{-20} of the tokens are still clean at t = 1."""

    def sigma(self, t: Tensor) -> Tensor:
        """Total noise σ(t) = σ_min^{1-t}·σ_max^t (computed as exp of the log-line)."""
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(lo + (hi - lo) * t)

    def dsigma(self, t: Tensor) -> Tensor:
        """Noise rate dσ/dt = σ(t)·log(σ_max/σ_min)."""
        return self.sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self.sigma(t))

    def dalpha(self, t: Tensor) -> Tensor:
        return -self.dsigma(t) * self.alpha(t)


SCHEDULES: dict[str, type[Schedule]] = {
    "linear": LinearSchedule, "cosine": CosineSchedule, "geometric": GeometricSchedule,
}
"""Schedules by name: exactly ``unmask.config.SCHEDULE_NAMES`` (tested)."""


def get_schedule(name: str = "linear", *, eps: float = 1e-3) -> Schedule:
    """The schedule ``name`` with the mask-probability floor ``eps``."""
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](eps)


def schedule_of(config: Any) -> Schedule:
    """The schedule a model was trained with, from its config (``ModelConfig.schedule`` and
    ``schedule_eps``; linear for configs without them), so a sampler follows the checkpoint."""
    name = getattr(config, "schedule", None) or "linear"
    return get_schedule(name, eps=getattr(config, "schedule_eps", 1e-3))
