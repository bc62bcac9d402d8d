"""Block diffusion (BD3-LM; Arriola et al. 2025, arXiv:2503.09573): masked diffusion inside
blocks, autoregressive across them, trained in one pass over ``[x_t ; x_0]``.

Inside: ``bd3lm_attention_bias``, ``bd3lm_logits``, ``bd3lm``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import ModelConfig, TrainConfig
from unmask.errors import UserError
from unmask.model import at_least_fp32
from unmask.objectives.spec import (
    LossParts,
    MaskPredictor,
    ObjectiveOptions,
    ObjectiveSpec,
    register_objective,
)


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
    none = torch.zeros(L, L, dtype=torch.bool, device=device)
    bottom = torch.cat([none, k <= q], dim=1)  # (L, 2L): clean queries
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
    BD3-LM's clipped "data-driven" noise schedules are not implemented, nor is a model
    conditioned on the noise level (``time_conditioning`` other than ``sigma_input='zero'``:
    refused, ``time_conditioning_problem``).
    """
    if config.attention != "block-causal" or not config.block_size:
        raise UserError(
            "objective 'bd3lm' needs attention='block-causal' with block_size, "
            f"not {config.attention!r}"
        )
    why = time_conditioning_problem(config, "bd3lm")
    if why is not None:
        raise UserError(why)
    if attention_mask is not None:
        raise UserError("objective 'bd3lm' does not support padded batches (attention_mask)")
    B, L = x0.shape
    bs = config.block_size
    if L % bs:
        raise UserError(f"block_size={bs} must divide the sequence length {L}")
    n_blocks = L // bs
    if t is None:
        t = options.schedule.sample_t(B * n_blocks, generator, antithetic=options.antithetic).view(
            B, n_blocks
        )
    t_pos = t.repeat_interleave(bs, dim=1)  # (B, L): each token carries its block's time
    p_mask = options.schedule.p_mask(t_pos).to(x0.device)  # (B, L)
    u = torch.rand(x0.shape, generator=generator).to(x0.device)  # same draw as Schedule.mask
    masked = u < p_mask  # (B, L)
    xt = torch.where(masked, torch.full_like(x0, config.mask_id), x0)
    logits = bd3lm_logits(model, xt, x0, block_size=bs)  # (B, L, V)
    w = options.schedule.weight(t_pos).to(x0.device)[masked]  # (M,)
    ce = F.cross_entropy(at_least_fp32(logits[masked]), x0[masked], reduction="none")  # (M,)
    return LossParts(loss_sum=(ce * w).sum(), n_tokens=torch.tensor(B * L, device=x0.device))


def time_conditioning_problem(config: ModelConfig, objective: str = "bd3lm") -> str | None:
    """Why ``objective`` (``bd3lm`` or ``hybrid``: ``UNTIMED``) cannot train a model with
    ``config``'s time conditioning, or None.

    bd3lm: every block has its own noise level t_b, but the model's conditioning is one level
    per row: read off the canvas (``sigma_input='masked_fraction'``) in the ``[x_t ; x_0]``
    pass it is the masked share of both halves (half of x_t's, the clean half holding no
    mask), which sampling, on one canvas, never shows it; no per-row ``sigma`` the loss could
    pass is right either. hybrid: the clean causal tokens carry no noise and the draft blocks
    are all masks, so no level means anything; read off the ``[x ; draft blocks]`` pass it is
    the share of draft columns, which decoding's rounds (a few new tokens and one block) never
    show. A ``zero`` level (conditioning off, as MDLM's released checkpoints) is fine.
    """
    return _time_problem(bool(config.time_conditioning), config.sigma_input, objective)


UNTIMED: dict[str, str] = {
    "bd3lm": "gives every block its own noise level, which one level per row cannot carry",
    "hybrid": "trains clean causal tokens and all-mask draft blocks, which have no noise "
    "level to condition on",
}
"""The objectives that refuse a time-conditioned model, and why (``time_conditioning_problem``;
their specs' ``check`` and ``needs`` are ``check_untimed`` and ``needs_untimed``)."""


def _time_problem(time_conditioning: bool, sigma_input: str, objective: str) -> str | None:
    if time_conditioning and sigma_input != "zero":
        return (
            f"objective {objective!r} {UNTIMED[objective]}: a time-conditioned model "
            f"(sigma_input={sigma_input!r}) cannot be trained by it; "
            "leave time conditioning off (or --model-set sigma_input=zero)"
        )
    return None


def check_untimed(objective: str, cfg: TrainConfig) -> None:
    """For the ``check`` of an ``UNTIMED`` objective: refuses ``--model-set
    time_conditioning=true`` (sigma_input other than ``zero``) before a fresh run."""
    overrides = cfg.model_overrides
    why = _time_problem(
        bool(overrides.get("time_conditioning")), overrides.get("sigma_input", "given"), objective
    )
    if why is not None:
        raise UserError(why)


def needs_untimed(objective: str, model: ModelConfig, cfg: TrainConfig) -> str | None:
    """For the ``needs`` of an ``UNTIMED`` objective: why an ``--init`` model with time
    conditioning cannot continue under it, or None."""
    return time_conditioning_problem(model, objective)


register_objective(
    ObjectiveSpec(
        name="bd3lm",
        loss=bd3lm,
        attention="block-causal",
        decoder="bd3lm",
        blocks=True,
        options=("block_size", "schedule", "eps"),
        check=functools.partial(check_untimed, "bd3lm"),
        needs=functools.partial(needs_untimed, "bd3lm"),
        summary="block diffusion NELBO (BD3-LM)",
    )
)

__all__ = [
    "UNTIMED",
    "bd3lm",
    "bd3lm_attention_bias",
    "bd3lm_logits",
    "check_untimed",
    "needs_untimed",
    "time_conditioning_problem",
]
