"""Evaluation: the ELBO perplexity bound and bits per byte on held-out data.

For a masked-diffusion model the ``mdlm`` loss is an upper bound on the negative
log-likelihood per token (Sahoo et al. 2024; Nie et al. 2025), so ``exp(loss)`` bounds
the perplexity; for an ``ar`` model the loss is the exact NLL. Bits per byte divides
the nats per token by ln 2 and by the corpus' UTF-8 bytes per token, so numbers are
comparable across tokenizers.

Inside: ``EvalResult``, ``evaluate_loss``, ``sequence_elbo`` (the same bound per sequence,
for scoring candidate texts, e.g. gap lengths in ``unmask.infill``).

Sample quality (of generated text rather than of the model): ``generative_perplexity``
(under an external autoregressive reference model, ``unmask.scoring``) and the diversity
metrics ``distinct_n`` and ``unigram_entropy``, which need no model. See docs/evaluation.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from unmask.objectives import ObjectiveOptions, get_objective
from unmask.schedules import get_schedule

if TYPE_CHECKING:
    from unmask.scoring import ReferenceScorer


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
        with torch.autocast(
            device_type=torch.device(device).type,
            dtype=autocast_dtype,
            enabled=autocast_dtype is not None,
        ):
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

    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    config = getattr(model, "config", None)
    cfg = SimpleNamespace(attention=getattr(config, "attention", "bidirectional"), mask_id=mask_id)
    shift = bool(getattr(config, "logit_shift", False))  # Dream: logits at i predict token i+1

    def predictor(x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = model(x, attention_mask=attention_mask)
        logits = getattr(out, "logits", out)  # (n, L, V)
        if shift:  # position i reads the logits produced at i - 1 (position 0 keeps its own)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

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


def generative_perplexity(
    texts: Sequence[str],
    *,
    prompts: Sequence[str] | None = None,
    scorer: ReferenceScorer | None = None,
    batch_size: int = 8,
) -> float:
    """Perplexity of generated ``texts`` under an autoregressive reference model (MDLM,
    Sahoo et al. 2024, arXiv:2406.07524, Sec. 4): exp(total NLL / total tokens), in the
    reference model's tokens. Lower = more fluent, but degenerate repetition scores low
    too: report ``unigram_entropy`` beside it.

    ``prompts`` (one per text): score each text as the continuation of its prompt.
    ``scorer`` defaults to ``ReferenceScorer.from_smollm2()`` (offline, cached; the
    optional ``score`` extra, docs/evaluation.md); ``UserError`` when it is not installed.
    """
    if scorer is None:
        from unmask.scoring import ReferenceScorer

        scorer = ReferenceScorer.from_smollm2()
    return scorer.perplexity(texts, prompts=prompts, batch_size=batch_size)


def _items(sample: str | Sequence[int] | Tensor) -> list[Any]:
    if isinstance(sample, str):
        return sample.split()
    if isinstance(sample, Tensor):
        return sample.reshape(-1).tolist()
    return [int(t) for t in sample]


def distinct_n(texts: Sequence[str] | Sequence[Sequence[int]] | Tensor, n: int) -> float:
    """Distinct-n (Li et al. 2016, arXiv:1510.03055): unique n-grams / all n-grams, pooled over
    ``texts``, in [0, 1]; 1 = no n-gram repeats anywhere in the set.

    Each item is a string, split on whitespace (words), or a sequence of token ids (a 2-D
    tensor = one sample per row). N-grams never cross from one sample to the next. Pooled,
    so N copies of one text score at most 1/N: it also catches samples that repeat each
    other. Returns 0.0 when no sample has ``n`` items (nothing generated = no diversity).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: Counter[tuple[Any, ...]] = Counter()
    for sample in texts:
        items = _items(sample)
        grams.update(tuple(items[i : i + n]) for i in range(len(items) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def unigram_entropy(token_ids: Sequence[Sequence[int]] | Tensor) -> float:
    """Mean over samples of the entropy (nats) of each sample's empirical token distribution:
    ``H = -sum_v (c_v / n) log(c_v / n)`` over the ``n`` ids of one sample.

    The sample-entropy metric of Zheng et al. 2024 (arXiv:2409.02908) and ReMDM (Wang et al.
    2025, arXiv:2503.00307): a sample that repeats one token has H = 0, one of n distinct
    tokens has H = log n, so a drop flags degenerate, repetitive generations that a low
    generative perplexity would hide. ``token_ids``: one sequence per sample (a 2-D tensor =
    one row per sample); cut them at EOS first if the padding after it should not count.
    An empty sample has H = 0; no samples give 0.0.
    """
    rows = [_items(s) for s in token_ids]
    if not rows:
        return 0.0
    total = 0.0
    for items in rows:
        n = len(items)
        total += -sum(c / n * math.log(c / n) for c in Counter(items).values()) if n else 0.0
    return total / len(rows)
