"""Training objectives as pure functions in a registry.

Each objective maps (model, clean batch x0, ...) to ``LossParts``: the *sum* of the
per-token losses and the number of tokens it is normalised by. The training loop
divides by the token count summed over micro-batches and processes, so gradient
accumulation and data parallelism give exactly the loss of one big batch.

- ``mdlm``: continuous-time masked-diffusion ELBO as LLaDA and MDLM train it.
- ``ar``: next-token cross-entropy with the same transformer in causal mode; with
  ``fim_rate`` > 0 a fraction of rows is first rearranged for fill-in-the-middle
  (``fim_rearrange``, PSM; Bavarian et al. 2022).
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
    fim_rate: float = 0.0
    """``ar`` only: fraction of rows rearranged by ``fim_rearrange`` (0 = plain AR)."""


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


FIM_EXTRA = 4
"""Tokens a FIM row adds: the three sentinels and the EOS that ends the middle."""


def fim_rearrange(
    x0: Tensor,
    generator: torch.Generator,
    *,
    rate: float,
    prefix_id: int,
    suffix_id: int,
    middle_id: int,
    eos_id: int,
) -> Tensor:
    """Fill-in-the-middle rows in PSM order (Bavarian et al. 2022, arXiv:2207.14255, §3).

    Each row of ``x0`` (B, L) is rearranged with probability ``rate``: its first
    ``n = L - 4`` tokens are cut at two points drawn uniformly from ``{0..n}`` (sorted, so
    any part may be empty) into prefix, middle and suffix, and the row becomes

        [FIM_PREFIX] prefix [FIM_SUFFIX] suffix [FIM_MIDDLE] middle [EOS]

    (still L tokens; its last 4 tokens are dropped). The EOS teaches the model to end the
    middle, which is how decoding knows where to stop. Other rows are unchanged. Split
    points are token positions (the paper draws characters), and the cut is per training
    window (context-level FIM). All draws come from ``generator`` on CPU (one coin and two
    cuts per row, drawn for every row), so a step is reproducible and resumable.
    """
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"fim_rate must be in [0, 1], got {rate}")
    B, L = x0.shape
    n = L - FIM_EXTRA
    if n < 1:
        raise UserError(f"fill-in-the-middle needs rows of at least {FIM_EXTRA + 1} tokens, got {L}")
    coin = torch.rand(B, generator=generator) < rate  # (B,)
    cuts = torch.randint(0, n + 1, (B, 2), generator=generator).sort(dim=1).values  # (B, 2)
    out = x0.clone()
    sentinels = torch.tensor([prefix_id, suffix_id, middle_id, eos_id], dtype=x0.dtype, device=x0.device)
    for b in coin.nonzero().flatten().tolist():
        i, j = cuts[b].tolist()
        row = x0[b]
        out[b] = torch.cat([sentinels[0:1], row[:i], sentinels[1:2], row[j:n], sentinels[2:3], row[i:j], sentinels[3:4]])
    return out


def ar(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
) -> LossParts:
    """Next-token cross-entropy; the model must be in causal mode.

    With ``options.fim_rate`` > 0 (and no ``attention_mask``) rows are first rearranged by
    ``fim_rearrange`` with the sentinel ids of ``config``; the loss then covers every
    position of the rearranged rows, sentinels included, as in Bavarian et al. 2022.
    """
    if config.attention != "causal":
        raise UserError(f"objective 'ar' needs attention='causal', not {config.attention!r}")
    if options.fim_rate > 0:
        if not getattr(config, "has_fim", False):
            raise UserError("fim_rate > 0 needs a model config with fim_prefix_id/fim_suffix_id/fim_middle_id")
        if attention_mask is not None:
            raise UserError("fim_rate > 0 does not support padded batches (attention_mask)")
        x0 = fim_rearrange(
            x0, generator, rate=options.fim_rate, prefix_id=config.fim_prefix_id,
            suffix_id=config.fim_suffix_id, middle_id=config.fim_middle_id, eos_id=config.eos_id,
        )
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
    "FIM_EXTRA",
    "OBJECTIVES",
    "OBJECTIVE_ATTENTION",
    "LinearSchedule",
    "LossParts",
    "ObjectiveOptions",
    "ar",
    "fim_rearrange",
    "get_objective",
    "mdlm",
]
