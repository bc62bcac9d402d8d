"""Masked diffusion objectives: ``mdlm`` (pretraining on token windows, optionally with
``[EMPTY]`` runs for variable-length gaps) and ``sft`` (LLaDA's supervised fine-tuning on
prompt/response pairs, the prompt never masked). Both are sampled by the LLaDA loop.

Inside: ``random_length_cut``, ``EMPTY_MAX_RUN``, ``insert_empty``, ``mdlm``, ``sft``.
"""

from __future__ import annotations

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
    predicted,
    register_objective,
    unshift,
)


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
    """Rows with a run of ``[EMPTY]`` tokens inserted, for variable-length gaps (shape of ``x0``).

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
    valid = (
        torch.ones_like(x0, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    )
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
    u: Tensor | None = None,
    keep_terms: bool = False,
) -> LossParts:
    """Masked-diffusion ELBO (Sahoo et al. 2024, eq. 10; Nie et al. 2025, eq. 3).

    t ~ U(0, 1) per row, p_mask = (1 - eps)·(1 - α(t)) + eps, every non-pad token masked with
    prob p_mask, cross-entropy on masked positions weighted by the schedule's ELBO weight
    -α'(t)/p_mask (1/p_mask for the linear one, LLaDA's), summed and normalised by the number
    of non-pad tokens. Padding (``attention_mask`` False) is never masked and never counted;
    nor is, for a Dream-style model (``config.logit_shift``), a token that no logits predict
    (position 0, or one after padding: ``predicted``). Random draws happen on CPU from
    ``generator`` so a batch's noise is the same on every device. With
    ``options.empty_rate`` > 0 rows first get ``[EMPTY]`` runs (``insert_empty``, with
    ``config.empty_id``), which are then masked and predicted like any token. ``t`` (B,) and
    ``u`` (B, L), the masking draws (``Schedule.mask``), replace the random ones when given.
    ``keep_terms``: also return each position's weighted cross-entropy (``LossParts.terms``).
    """
    if config.attention != "bidirectional":
        raise UserError(
            f"objective 'mdlm' needs attention='bidirectional', not {config.attention!r}"
        )
    x0 = random_length_cut(x0, generator, options.random_length_frac)
    if attention_mask is not None:
        attention_mask = attention_mask[:, : x0.shape[1]].bool()
    if options.empty_rate > 0:
        if getattr(config, "empty_id", None) is None:
            raise UserError("empty_rate > 0 needs a model config with empty_id (the [EMPTY] token)")
        x0 = insert_empty(
            x0,
            generator,
            rate=options.empty_rate,
            empty_id=config.empty_id,
            attention_mask=attention_mask,
        )
    B = x0.shape[0]
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    p_mask = options.schedule.p_mask(t)  # (B,)
    real = attention_mask if attention_mask is not None else torch.ones_like(x0, dtype=torch.bool)
    valid = predicted(real, config)  # (B, L): a Dream-style model predicts no position 0
    xt, masked = options.schedule.mask(
        x0, p_mask, mask_id=config.mask_id, generator=generator, maskable=valid, u=u
    )
    logits = unshift(model(xt, attention_mask=attention_mask), config)  # (B, L, V)
    w = options.schedule.weight(t).to(x0.device)[:, None].expand_as(masked)[masked]  # (M,)
    ce = F.cross_entropy(at_least_fp32(logits[masked]), x0[masked], reduction="none")  # (M,)
    terms = None
    if keep_terms:
        terms = torch.zeros(masked.shape, dtype=ce.dtype, device=ce.device)
        terms[masked] = ce * w
    return LossParts(loss_sum=(ce * w).sum(), n_tokens=valid.sum(), terms=terms)


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
    schedule (-α'(t)/p_mask: 1/p_mask for the linear one) and divided by the row's answer
    length (response + EOS padding), as in LLaDA's SFT guidelines. ``loss_sum`` is the sum
    over rows and ``n_tokens`` the number of rows, so the training loop reports the mean
    per-row answer loss (nats per answer token).
    """
    if config.attention != "bidirectional":
        raise UserError(
            f"objective 'sft' needs attention='bidirectional', not {config.attention!r}"
        )
    if prompt_mask is None:
        raise UserError("objective 'sft' needs prompt_mask (SFT data from unmask.sft.SFTData)")
    B = x0.shape[0]
    real = torch.ones_like(x0, dtype=torch.bool)
    if attention_mask is not None:
        real = attention_mask.bool()
    answer = ~prompt_mask.bool() & predicted(real, config)  # (B, L)
    answer_len = answer.sum(dim=1).clamp_min(1)  # (B,)
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    p_mask = options.schedule.p_mask(t)  # (B,)
    xt, masked = options.schedule.mask(
        x0, p_mask, mask_id=config.mask_id, generator=generator, maskable=answer
    )
    logits = unshift(model(xt, attention_mask=attention_mask), config)  # (B, L, V)
    w_row = options.schedule.weight(t).to(x0.device)[:, None] / answer_len[:, None]  # (B, 1)
    w = w_row.expand_as(masked)[masked]  # (M,)
    ce = F.cross_entropy(at_least_fp32(logits[masked]), x0[masked], reduction="none")  # (M,)
    return LossParts(loss_sum=(ce * w).sum(), n_tokens=torch.tensor(B, device=x0.device))


def _check_empty_rate(cfg: TrainConfig) -> None:
    if not 0.0 <= cfg.empty_rate < 1.0:
        raise UserError(f"empty_rate={cfg.empty_rate} must be in [0, 1)")


def _with_empty(tokenizer: object, cfg: TrainConfig) -> object:
    from unmask.tokenizer import with_empty_token

    return with_empty_token(tokenizer) if cfg.empty_rate > 0 else tokenizer


def _needs_empty(model: ModelConfig, cfg: TrainConfig) -> str | None:
    if cfg.empty_rate > 0 and model.empty_id is None:
        return (
            "the model has no [EMPTY] token, so empty_rate > 0 cannot continue it; "
            "train a fresh model with empty_rate"
        )
    return None


MASKED_SAMPLE_DEFAULTS: tuple[tuple[str, float], ...] = (
    ("temperature", 0.0), ("block_length", 4), ("repetition_penalty", 1.3),
    ("no_repeat_ngram_size", 4),
)
"""What a masked diffusion checkpoint (``mdlm``) recommends; measured on the demo model
(``benchmarks/defaults.py``, docs/sampling.md "Defaults come from the checkpoint" and "Long
outputs"): the penalty alone loops again over 232 tokens (distinct-2 0.69 against the
held-out text's 0.91), with the 4-gram ban it does not (0.84)."""


register_objective(
    ObjectiveSpec(
        name="mdlm",
        loss=mdlm,
        attention="bidirectional",
        decoder="llada",
        options=("empty_rate", "schedule", "eps"),
        random_length=True,
        check=_check_empty_rate,
        tokenizer=_with_empty,
        needs=_needs_empty,
        summary="masked diffusion ELBO (MDLM / LLaDA pretraining)",
        # benchmarks/defaults.py on the demo model, 64 held-out prompts of 12 and of 2 words:
        # plain argmax repeats itself (distinct-2 0.43 vs 0.98 for held-out text); argmax in
        # blocks of 4 with repetition penalty 1.3 is the most fluent setting that does not
        # after both (gen ppl 21.0 / 23.5; the old temperature 0.8 in blocks of 2: 39.0 /
        # 38.2, and degenerate after 2-word prompts) for 64 tokens, and with the 4-gram ban
        # also for 232 (24.1 / 28.9 / 16.7); docs/sampling.md, "Defaults", "Long outputs"
        sample_defaults=MASKED_SAMPLE_DEFAULTS,
    )
)
register_objective(
    ObjectiveSpec(
        name="sft",
        loss=sft,
        attention="bidirectional",
        decoder="llada",
        batch="prompt_response",
        options=("schedule", "eps", "chat_template"),
        summary="LLaDA supervised fine-tuning: prompt kept, response masked",
    )
)

__all__ = [
    "EMPTY_MAX_RUN",
    "MASKED_SAMPLE_DEFAULTS",
    "insert_empty",
    "mdlm",
    "random_length_cut",
    "sft",
]
