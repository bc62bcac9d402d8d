"""Training objectives as pure functions in a registry.

Each objective maps (model, clean batch x0, ...) to ``LossParts``: the *sum* of the
per-token losses and the number of tokens it is normalised by. The training loop
divides by the token count summed over micro-batches and processes, so gradient
accumulation and data parallelism give exactly the loss of one big batch.

- ``mdlm``: continuous-time masked-diffusion ELBO as LLaDA and MDLM train it; with
  ``empty_rate`` > 0 rows first get runs of ``[EMPTY]`` inserted (``insert_empty``), which
  teaches the filler of unused variable-length gap slots.
- ``ar``: next-token cross-entropy with the same transformer in causal mode; with
  ``fim_rate`` > 0 a fraction of rows is first rearranged for fill-in-the-middle
  (``fim_rearrange``, PSM; Bavarian et al. 2022).
- ``bd3lm``: block diffusion (Arriola et al. 2025): masked diffusion inside blocks,
  autoregressive across them, trained in one pass over ``[x_t ; x_0]``
  (``bd3lm_attention_bias``, ``bd3lm_logits``).
- ``sft``: LLaDA's supervised fine-tuning loss: prompt never masked, per-row loss divided by
  the answer length (data: ``unmask.sft``).
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
    empty_rate: float = 0.0
    """``mdlm`` only: fraction of rows given a run of ``[EMPTY]`` by ``insert_empty`` (0 = off)."""


def random_length_cut(x0: Tensor, generator: torch.Generator, frac: float) -> Tensor:
    """With probability ``frac`` cut the whole batch to a length U{1..L} (LLaDA, §B.1)."""
    if frac > 0 and float(torch.rand(1, generator=generator)) < frac:
        n = int(torch.randint(1, x0.shape[1] + 1, (1,), generator=generator))
        return x0[:, :n]
    return x0


EMPTY_MAX_RUN = 32
"""Longest run of ``[EMPTY]`` tokens ``insert_empty`` inserts."""


def insert_empty(
    x0: Tensor,
    generator: torch.Generator,
    *,
    rate: float,
    empty_id: int,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Rows with a run of ``[EMPTY]`` tokens inserted, for variable-length gaps (same shape as ``x0``).

    Each row of ``x0`` (B, L) is changed with probability ``rate``: with n real tokens
    (``attention_mask`` True; all when None), a run length k ~ U{1..min(EMPTY_MAX_RUN, n - 2)}
    and a position p ~ U{1..n - k - 1} are drawn, k ``empty_id`` are inserted before real
    token p, and the last k real tokens fall off the end, so the row keeps its length and at
    least one real token stays on either side of the run. Padding positions are never
    touched (real tokens are shifted along the real positions only). The text reads on
    across the run, which is what an infilled gap looks like when its unused trailing slots
    hold ``[EMPTY]`` (``unmask.infill``, length mode ``empty``); masked like any token, the
    run teaches the model to predict ``[EMPTY]`` exactly where the text needs no more
    tokens. DreamOn (Wu et al. 2025, arXiv:2602.01326) inserts its ``[delete]`` state the
    same way. Rows with n < 3 are left alone. All draws come from ``generator`` on CPU (one
    coin, run and position per row, drawn for every row), so a step is reproducible.
    """
    if not 0.0 <= rate < 1.0:
        raise UserError(f"empty_rate must be in [0, 1), got {rate}")
    B, L = x0.shape
    u = torch.rand(B, 3, generator=generator)  # (B, 3): coin, run, position
    out = x0.clone()
    valid = torch.ones_like(x0, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    for b in (u[:, 0] < rate).nonzero().flatten().tolist():
        pos = valid[b].nonzero().flatten()  # real positions, in order
        n = len(pos)
        if n < 3:
            continue
        k = 1 + int(u[b, 1] * min(EMPTY_MAX_RUN, n - 2))
        p = 1 + int(u[b, 2] * (n - k - 1))
        real = x0[b, pos]
        run = torch.full((k,), empty_id, dtype=x0.dtype, device=x0.device)
        out[b, pos] = torch.cat([real[:p], run, real[p : n - k]])
    return out


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
    ``generator`` so a batch's noise is the same on every device. With
    ``options.empty_rate`` > 0 rows first get ``[EMPTY]`` runs (``insert_empty``, with
    ``config.empty_id``), which are then masked and predicted like any token.
    """
    if config.attention != "bidirectional":
        raise UserError(f"objective 'mdlm' needs attention='bidirectional', not {config.attention!r}")
    x0 = random_length_cut(x0, generator, options.random_length_frac)
    if attention_mask is not None:
        attention_mask = attention_mask[:, : x0.shape[1]].bool()
    if options.empty_rate > 0:
        if getattr(config, "empty_id", None) is None:
            raise UserError("empty_rate > 0 needs a model config with empty_id (the [EMPTY] token)")
        x0 = insert_empty(x0, generator, rate=options.empty_rate, empty_id=config.empty_id,
                          attention_mask=attention_mask)
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


def bd3lm_attention_bias(L: int, block_size: int, device: torch.device | str = "cpu") -> Tensor:
    """Boolean attention mask (1, 1, 2L, 2L) of BD3-LM's vectorised pass over ``[x_t ; x_0]``.

    Arriola et al. 2025 (arXiv:2503.09573, §3.2 and Fig. 2), with b(i) = i // block_size:

    - noisy query i → noisy key j iff b(j) == b(i) (block-diagonal: bidirectional in its block),
    - noisy query i → clean key j iff b(j) < b(i) (the clean blocks before it; offset block-causal),
    - clean query i → clean key j iff b(j) <= b(i) (block-causal, as at sampling time),
    - clean queries never see noisy keys.

    So the x_t half sees exactly what block b sees when it is denoised after blocks < b are
    finished, and the x_0 half computes the keys/values of those finished blocks.
    """
    blk = torch.arange(L, device=device) // block_size  # (L,)
    q, k = blk[:, None], blk[None, :]  # (L, 1), (1, L)
    top = torch.cat([k == q, k < q], dim=1)  # (L, 2L): noisy queries
    bottom = torch.cat([torch.zeros(L, L, dtype=torch.bool, device=device), k <= q], dim=1)  # clean queries
    return torch.cat([top, bottom], dim=0)[None, None]  # (1, 1, 2L, 2L)


def bd3lm_logits(model: MaskPredictor, xt: Tensor, x0: Tensor, *, block_size: int) -> Tensor:
    """Logits (B, L, V) of the noisy half of one BD3-LM pass over ``[x_t ; x_0]`` (B, 2L).

    The x_0 half reuses the RoPE positions 0..L-1 of the x_t half, so a noisy block and the
    clean copy of the same block sit at the same positions; ``bd3lm_attention_bias`` gives
    each half its view. Equal to running every block b alone on ``x0[:, :b·bs] ++ xt-block``
    with block-causal attention (tested), in one pass.
    """
    L = xt.shape[1]
    positions = torch.arange(L, device=xt.device).repeat(2)  # (2L,)
    bias = bd3lm_attention_bias(L, block_size, xt.device)
    logits = model(torch.cat([xt, x0], dim=1), positions=positions, attn_bias=bias)  # (B, 2L, V)
    return logits[:, :L]


def bd3lm(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    t: Tensor | None = None,
) -> LossParts:
    """Block diffusion NELBO (BD3-LM; Arriola et al. 2025, arXiv:2503.09573, eq. 8).

    The sequence is cut into blocks of ``config.block_size``; each block b is a masked
    diffusion conditioned on the clean blocks before it. Every block draws its own time
    t_b ~ U(0, 1) (as BD3-LM does; antithetic over all B·n_blocks draws), tokens are masked
    with p_mask(t_b), and the ``mdlm`` cross-entropy on masked tokens, weighted by the
    schedule, is summed and normalised by the number of tokens. All blocks are trained in
    one vectorised pass over ``[x_t ; x_0]`` (``bd3lm_logits``). ``t`` (B, n_blocks) may be
    given. The model must be ``block-causal`` (how it samples); with one block spanning the
    sequence this is exactly ``mdlm``, with ``block_size`` 1 every masked token is predicted
    from the clean tokens before it (next-token prediction). Padded batches are not supported.
    BD3-LM's clipped "data-driven" noise schedules are not implemented.
    """
    if config.attention != "block-causal" or not config.block_size:
        raise UserError(f"objective 'bd3lm' needs attention='block-causal' with block_size, not {config.attention!r}")
    if attention_mask is not None:
        raise UserError("objective 'bd3lm' does not support padded batches (attention_mask)")
    B, L = x0.shape
    bs = config.block_size
    if L % bs:
        raise UserError(f"block_size={bs} must divide the sequence length {L}")
    n_blocks = L // bs
    if t is None:
        t = options.schedule.sample_t(B * n_blocks, generator, antithetic=options.antithetic).view(B, n_blocks)
    t_pos = t.repeat_interleave(bs, dim=1)  # (B, L): each token carries its block's time
    p_mask = options.schedule.p_mask(t_pos).to(x0.device)  # (B, L)
    u = torch.rand(x0.shape, generator=generator).to(x0.device)  # same draw as Schedule.mask
    masked = u < p_mask  # (B, L)
    xt = torch.where(masked, torch.full_like(x0, config.mask_id), x0)
    logits = bd3lm_logits(model, xt, x0, block_size=bs)  # (B, L, V)
    w = options.schedule.weight(t_pos).to(x0.device)[masked]  # (M,)
    ce = F.cross_entropy(logits[masked].float(), x0[masked], reduction="none")  # (M,)
    return LossParts(loss_sum=(ce * w).sum(), n_tokens=torch.tensor(B * L, device=x0.device))


def sft(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    prompt_mask: Tensor | None = None,
    t: Tensor | None = None,
) -> LossParts:
    """Masked-diffusion SFT loss (LLaDA, Nie et al. 2025, arXiv:2502.09992, §2.4, eq. 5; App. B.1).

    ``x0`` (B, L) = prompt, response, EOS padding (``unmask.sft.SFTData``); ``prompt_mask``
    (B, L) marks the prompt, which is never masked. t ~ U(0, 1) per row, response tokens (the
    EOS padding included) masked with p_mask(t), cross-entropy on masked tokens weighted by the
    schedule (1/p_mask) and divided by the row's answer length (response + EOS padding), as in
    LLaDA's SFT guidelines. ``loss_sum`` is the sum over rows and ``n_tokens`` the number of
    rows, so the training loop reports the mean per-row answer loss (nats per answer token).
    """
    if config.attention != "bidirectional":
        raise UserError(f"objective 'sft' needs attention='bidirectional', not {config.attention!r}")
    if prompt_mask is None:
        raise UserError("objective 'sft' needs prompt_mask (SFT data from unmask.sft.SFTData)")
    B = x0.shape[0]
    answer = ~prompt_mask.bool()  # (B, L)
    if attention_mask is not None:
        answer &= attention_mask.bool()
    answer_len = answer.sum(dim=1).clamp_min(1)  # (B,)
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    p_mask = options.schedule.p_mask(t)  # (B,)
    xt, masked = options.schedule.mask(x0, p_mask, mask_id=config.mask_id, generator=generator, maskable=answer)
    logits = model(xt, attention_mask=attention_mask)  # (B, L, V)
    w = (options.schedule.weight(t).to(x0.device)[:, None] / answer_len[:, None]).expand_as(masked)[masked]  # (M,)
    ce = F.cross_entropy(logits[masked].float(), x0[masked], reduction="none")  # (M,)
    return LossParts(loss_sum=(ce * w).sum(), n_tokens=torch.tensor(B, device=x0.device))


Objective = Callable[..., LossParts]

OBJECTIVES: dict[str, Objective] = {"mdlm": mdlm, "ar": ar, "bd3lm": bd3lm, "sft": sft}

# The attention mode each objective trains.
OBJECTIVE_ATTENTION: dict[str, str] = {
    "mdlm": "bidirectional", "ar": "causal", "bd3lm": "block-causal", "sft": "bidirectional",
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


__all__ = [
    "EMPTY_MAX_RUN",
    "FIM_EXTRA",
    "OBJECTIVES",
    "OBJECTIVE_ATTENTION",
    "LinearSchedule",
    "LossParts",
    "ObjectiveOptions",
    "ar",
    "bd3lm",
    "bd3lm_attention_bias",
    "bd3lm_logits",
    "fim_rearrange",
    "get_objective",
    "insert_empty",
    "mdlm",
    "sft",
]

import unmask.sedd  # noqa: E402,F401  (registers objective "sedd"; at the end: it imports this module)
