"""Training objectives as pure functions in a registry.

Each objective maps (model, clean batch x0, ...) to ``LossParts``: the *sum* of the
per-token losses and the number of tokens it is normalised by. The training loop
divides by the token count summed over micro-batches and processes, so gradient
accumulation and data parallelism give exactly the loss of one big batch.

- ``mdlm``: continuous-time masked-diffusion ELBO as LLaDA and MDLM train it.
- ``ar``: next-token cross-entropy with the same transformer in causal mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import ModelConfig
from unmask.errors import UserError
from unmask.schedules import LinearSchedule, Schedule

MaskPredictor = Callable[..., Tensor]


@dataclass
class LossParts:
    loss_sum: Tensor
    """Sum of per-token losses (scalar, differentiable)."""
    n_tokens: Tensor
    """Number of (non-pad) tokens the sum is normalised by (scalar)."""


@dataclass(kw_only=True)
class ObjectiveOptions:
    """Knobs shared by the objectives (from TrainConfig)."""

    schedule: Schedule
    antithetic: bool = True
    random_length_frac: float = 0.0


def random_length_cut(x0: Tensor, generator: torch.Generator, frac: float) -> Tensor:
    """With probability ``frac`` cut the whole batch to a length U{1..L} (LLaDA, §B.1)."""
    if frac > 0 and float(torch.rand(1, generator=generator)) < frac:
        n = int(torch.randint(1, x0.shape[1] + 1, (1,), generator=generator))
        return x0[:, :n]
    return x0


def mdlm(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    t: Tensor | None = None,
) -> LossParts:
    """Masked-diffusion ELBO (Sahoo et al. 2024, eq. 10; Nie et al. 2025, eq. 3).

    t ~ U(0, 1) per row, p_mask = (1 - eps)·t + eps, every non-pad token masked with
    prob p_mask, cross-entropy on masked positions weighted by the schedule (1/p_mask),
    summed and normalised by the number of non-pad tokens. Padding (``attention_mask``
    False) is never masked and never counted. Random draws happen on CPU from
    ``generator`` so a batch's noise is the same on every device.
    """
    if config.attention != "bidirectional":
        raise UserError(f"objective 'mdlm' needs attention='bidirectional', not {config.attention!r}")
    x0 = random_length_cut(x0, generator, options.random_length_frac)
    if attention_mask is not None:
        attention_mask = attention_mask[:, : x0.shape[1]].bool()
    B = x0.shape[0]
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    p_mask = options.schedule.p_mask(t)  # (B,)
    valid = attention_mask if attention_mask is not None else torch.ones_like(x0, dtype=torch.bool)
    xt, masked = options.schedule.mask(x0, p_mask, mask_id=config.mask_id, generator=generator, maskable=valid)
    logits = model(xt, attention_mask=attention_mask)  # (B, L, V)
    w = options.schedule.weight(t).to(x0.device)[:, None].expand_as(masked)[masked]  # (M,)
    ce = F.cross_entropy(logits[masked].float(), x0[masked], reduction="none")  # (M,)
    return LossParts(loss_sum=(ce * w).sum(), n_tokens=valid.sum())


def ar(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
) -> LossParts:
    """Next-token cross-entropy; the model must be in causal mode."""
    if config.attention != "causal":
        raise UserError(f"objective 'ar' needs attention='causal', not {config.attention!r}")
    logits = model(x0, attention_mask=attention_mask)  # (B, L, V)
    targets = x0[:, 1:]
    valid = torch.ones_like(targets, dtype=torch.bool)
    if attention_mask is not None:
        valid = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    ce = F.cross_entropy(logits[:, :-1][valid].float(), targets[valid], reduction="none")
    return LossParts(loss_sum=ce.sum(), n_tokens=valid.sum())


Objective = Callable[..., LossParts]

OBJECTIVES: dict[str, Objective] = {"mdlm": mdlm, "ar": ar}

# The attention mode each objective trains.
OBJECTIVE_ATTENTION: dict[str, str] = {"mdlm": "bidirectional", "ar": "causal"}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_ATTENTION",
    "LinearSchedule",
    "LossParts",
    "ObjectiveOptions",
    "ar",
    "get_objective",
    "mdlm",
]
