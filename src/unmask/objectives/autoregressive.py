"""The autoregressive baseline: next-token cross-entropy with the same transformer in causal
mode (``ar``), optionally on fill-in-the-middle rows (``fim_rearrange``; Bavarian et al. 2022).

Inside: ``FIM_EXTRA``, ``fim_rearrange``, ``ar``.
"""

from __future__ import annotations

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
        raise UserError(
            f"fill-in-the-middle needs rows of at least {FIM_EXTRA + 1} tokens, got {L}"
        )
    coin = torch.rand(B, generator=generator) < rate  # (B,)
    cuts = torch.randint(0, n + 1, (B, 2), generator=generator).sort(dim=1).values  # (B, 2)
    out = x0.clone()
    sentinels = torch.tensor(
        [prefix_id, suffix_id, middle_id, eos_id], dtype=x0.dtype, device=x0.device
    )
    for b in coin.nonzero().flatten().tolist():
        i, j = cuts[b].tolist()
        row = x0[b]
        out[b] = torch.cat(
            [
                sentinels[0:1],
                row[:i],
                sentinels[1:2],
                row[j:n],
                sentinels[2:3],
                row[i:j],
                sentinels[3:4],
            ]
        )
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
            raise UserError(
                "fim_rate > 0 needs a model config with fim_prefix_id/fim_suffix_id/fim_middle_id"
            )
        if attention_mask is not None:
            raise UserError("fim_rate > 0 does not support padded batches (attention_mask)")
        x0 = fim_rearrange(
            x0,
            generator,
            rate=options.fim_rate,
            prefix_id=config.fim_prefix_id,
            suffix_id=config.fim_suffix_id,
            middle_id=config.fim_middle_id,
            eos_id=config.eos_id,
        )
    logits = model(x0, attention_mask=attention_mask)  # (B, L, V)
    targets = x0[:, 1:]
    valid = torch.ones_like(targets, dtype=torch.bool)
    if attention_mask is not None:
        valid = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    ce = F.cross_entropy(logits[:, :-1][valid].float(), targets[valid], reduction="none")
    return LossParts(loss_sum=ce.sum(), n_tokens=valid.sum())


def _check_ar(cfg: TrainConfig) -> None:
    """The FIM rate, and rows with a token to predict (a FIM row's sentinels and one more):
    at ``seq_len`` 1 the step divided by zero tokens (a traceback), a FIM row too short
    failed only at the first step."""
    if not 0.0 <= cfg.fim_rate <= 1.0:
        raise UserError(f"fim_rate={cfg.fim_rate} must be in [0, 1]")
    if cfg.fim_rate > 0 and cfg.seq_len < FIM_EXTRA + 1:
        raise UserError(
            f"seq_len={cfg.seq_len}: fill-in-the-middle needs rows of at least "
            f"{FIM_EXTRA + 1} tokens"
        )
    if cfg.seq_len < 2:
        raise UserError(
            f"seq_len={cfg.seq_len}: objective 'ar' predicts each token from the ones before "
            "it, so rows need at least 2 tokens"
        )


def _with_fim(tokenizer: object, cfg: TrainConfig) -> object:
    from unmask.tokenizer import with_fim_tokens

    return with_fim_tokens(tokenizer) if cfg.fim_rate > 0 else tokenizer


def _needs_fim(model: ModelConfig, cfg: TrainConfig) -> str | None:
    if cfg.fim_rate > 0 and not model.has_fim:
        return "the model has no fill-in-the-middle sentinels, so fim_rate > 0 cannot continue it"
    return None


CAUSAL_SAMPLE_DEFAULTS: tuple[tuple[str, float], ...] = (
    ("temperature", 0.0), ("repetition_penalty", 1.15), ("no_repeat_ngram_size", 4),
)
"""What a causal checkpoint (``ar``, ``hybrid``) recommends: ``benchmarks/defaults.py`` on the
demo's AR twin (held-out prompts of 12 and of 2 words, 64 tokens, and of 12 words, 232
tokens): plain greedy decoding repeats itself (distinct-2 0.54 / 0.45 / 0.22 against the
held-out text's 0.95 / 0.96 / 0.91); greedy with repetition penalty 1.15 holds for 64 tokens
(gen ppl 14.5 / 16.2, distinct-2 0.87 / 0.88) but loops again over 232 (0.68, 18% of its word
4-grams repeat); adding the 4-gram ban holds at every length (16.7 / 17.7 / 12.2 at 0.93 /
0.92 / 0.85). The 3-gram ban alone scored a little more fluent (15.3 / 17.1 / 12.2) but bans
every repeated 3-token sequence, common in code and data, and costs the hybrid decoder more
accepted drafts (docs/sampling.md, "Long outputs")."""

register_objective(
    ObjectiveSpec(
        name="ar",
        loss=ar,
        attention="causal",
        decoder="ar",
        options=("fim_rate",),
        check=_check_ar,
        tokenizer=_with_fim,
        needs=_needs_fim,
        summary="next-token cross-entropy (autoregressive baseline, optional FIM)",
        sample_defaults=CAUSAL_SAMPLE_DEFAULTS,
    )
)

__all__ = ["CAUSAL_SAMPLE_DEFAULTS", "FIM_EXTRA", "ar", "fim_rearrange"]
