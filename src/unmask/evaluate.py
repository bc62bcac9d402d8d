"""Evaluation: the ELBO perplexity bound and bits per byte on held-out data.

For a masked-diffusion model the ``mdlm`` loss is an upper bound on the negative
log-likelihood per token (Sahoo et al. 2024; Nie et al. 2025), so ``exp(loss)`` bounds
the perplexity; for an ``ar`` model the loss is the exact NLL. Bits per byte divides
the nats per token by ln 2 and by the corpus' UTF-8 bytes per token, so numbers are
comparable across tokenizers.

Inside: ``EvalResult``, ``evaluate_loss``, ``sequence_elbo`` (the same bound per sequence,
for scoring candidate texts, e.g. gap lengths in ``unmask.infill``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from unmask.objectives import ObjectiveOptions, get_objective
from unmask.schedules import get_schedule


@dataclass
class EvalResult:
    loss: float
    """Nats per token (an upper bound for diffusion objectives)."""
    ppl: float
    """exp(loss): the perplexity (bound)."""
    bpb: float
    """Bits per UTF-8 byte."""
    n_tokens: int
    """Tokens scored."""

    def as_dict(self, prefix: str = "val_") -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}ppl": self.ppl, f"{prefix}bpb": self.bpb}


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    dataset: Any,
    *,
    objective: str,
    seq_len: int,
    batch_size: int = 16,
    max_batches: int | None = 8,
    seed: int = 1234,
    eps: float = 1e-3,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Average objective over the first ``max_batches`` batches of sequential windows.

    The noise of the diffusion bound comes from a generator seeded with ``seed`` and the
    times are antithetic, so two evaluations of one model give the same number.
    """
    fn = get_objective(objective)
    options = ObjectiveOptions(schedule=get_schedule("linear", eps=eps), antithetic=True)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    batch: list[torch.Tensor] = []
    n_batches = 0

    def flush() -> None:
        nonlocal total, count, n_batches
        x0 = torch.stack(batch).to(device)
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            parts = fn(model, model.config, x0, attention_mask=None, generator=gen, options=options)
        total += float(parts.loss_sum)
        count += int(parts.n_tokens)
        n_batches += 1
        batch.clear()

    for window in dataset.windows(seq_len):
        batch.append(window)
        if len(batch) == batch_size:
            flush()
            if max_batches is not None and n_batches >= max_batches:
                break
    if batch and (max_batches is None or n_batches < max_batches):
        flush()
    if was_training:
        model.train()
    if count == 0:
        raise ValueError(f"validation split has fewer than seq_len={seq_len} tokens")
    loss = total / count
    return EvalResult(
        loss=loss,
        ppl=math.exp(min(loss, 50.0)),
        bpb=loss / math.log(2) / dataset.bytes_per_token,
        n_tokens=count,
    )


@torch.no_grad()
def sequence_elbo(
    model: Any,
    tokens: Tensor,
    *,
    mask_id: int,
    n_samples: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """(B,) the masked-diffusion bound on -log p(x) per token, in nats, for each row of ``tokens``.

    The ``mdlm`` objective (Sahoo et al. 2024, eq. 10; Nie et al. 2025, eq. 3) evaluated on
    ``n_samples`` noisy copies of each row (antithetic times): a Monte-Carlo estimate of the
    bound, lower = more likely. Only real tokens (``attention_mask`` True) are kept, masked
    and counted. ``generator`` (CPU) is rewound for every row, so rows see the same noise
    (common random numbers: differences between candidates are not noise differences).
    ``model`` is any mask predictor (``(B, L)`` ids → ``(B, L, V)`` logits or ``.logits``).
    """
    from unmask.objectives import mdlm
    from unmask.sampling import model_logit_shift, shift_logits

    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    config = getattr(model, "config", None)
    cfg = SimpleNamespace(attention=getattr(config, "attention", "bidirectional"), mask_id=mask_id)
    shift = model_logit_shift(model)

    def predictor(x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = model(x, attention_mask=attention_mask)
        logits = getattr(out, "logits", out)
        return shift_logits(logits) if shift else logits  # (n, L, V)

    options = ObjectiveOptions(schedule=get_schedule("linear"), antithetic=True)
    state = generator.get_state()
    out = torch.empty(tokens.shape[0], dtype=torch.float64)
    for b in range(tokens.shape[0]):
        row = tokens[b] if attention_mask is None else tokens[b][attention_mask[b].bool()]
        if row.numel() == 0:
            out[b] = float("nan")
            continue
        generator.set_state(state)
        x0 = row[None].expand(n_samples, -1)  # (n, L_b)
        parts = mdlm(predictor, cfg, x0, attention_mask=None, generator=generator, options=options)
        out[b] = float(parts.loss_sum) / float(parts.n_tokens)
    return out
