"""Evaluation: the ELBO perplexity bound and bits per byte on held-out data.

For a masked-diffusion model the ``mdlm`` loss is an upper bound on the negative
log-likelihood per token (Sahoo et al. 2024; Nie et al. 2025), so ``exp(loss)`` bounds
the perplexity; for an ``ar`` model the loss is the exact NLL. Bits per byte divides
the nats per token by ln 2 and by the corpus' UTF-8 bytes per token, so numbers are
comparable across tokenizers.

Inside: ``EvalResult``, ``evaluate_loss`` (``untimed_bound``: the one-line refusal of a
time-conditioned model by ``bd3lm`` / ``hybrid``, which have no bound for it),
``sequence_elbo`` (the same bound per sequence,
for scoring candidate texts, e.g. gap lengths in ``unmask.infill``) and
``sequence_elbo_terms`` (that bound's terms per position).

Log-likelihood of a continuation given a context (what lm-evaluation-harness asks of a
model; ``unmask.lm_eval``): ``LogLikelihood``, ``elbo_loglikelihood`` (LLaDA's Monte Carlo
estimate of the masked-diffusion bound, stratified mask counts, with its standard error),
``block_elbo_loglikelihood`` (the same for a block-diffusion model, block by block given the
clean blocks before), ``exact_elbo`` (the bound summed over every mask pattern, for tiny
checks) and
``ar_loglikelihood`` (the exact log-likelihood of a causal model, batched).

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

from unmask.errors import UserError
from unmask.flag_checks import (  # noqa: F401  (moved there; kept importable)
    MAX_MC_SAMPLES,
    check_limit,
    check_mc_samples_count,
)
from unmask.objectives import ObjectiveOptions, get_objective, objective_spec
from unmask.schedules import get_schedule
from unmask.scoring import perplexity

if TYPE_CHECKING:
    from unmask.scoring import ReferenceScorer

DEFAULT_MC_SAMPLES = 64
"""Monte Carlo samples of ``elbo_loglikelihood`` by default: chosen from the measured curve of
its standard error against the number of samples (docs/evaluation.md); LLaDA uses 128."""
MC_DRAW_ROWS = 1024
"""Samples whose masking draws are made at once, whatever the batch size: the draws of one
estimate take ``MC_DRAW_ROWS`` by the target's length at most (all of them were drawn up front,
so 10**11 samples asked for 800 GB). A count up to this draws as it always did."""


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
    likelihood: bool = True
    """``loss`` bounds a negative log-likelihood (``ObjectiveSpec.likelihood``); when False,
    ``ppl`` and ``bpb`` are NaN: the objective's loss is only a training loss."""
    exact: bool = False
    """``loss`` is the exact likelihood (a causal model), not a Monte Carlo bound: it does
    not depend on the noise seed."""
    noise_draws: int = 1
    """Independent noise draws averaged (``unmask.report.heldout_bound``)."""
    bpb_se: float | None = None
    """Standard error of ``bpb`` over those draws (None: one draw, an exact likelihood, or an
    objective with no bound, whose ``bpb`` is NaN)."""
    loss_se: float | None = None
    """Standard error of ``loss`` over those draws (None: one draw, or an exact likelihood)."""

    def as_dict(self, prefix: str = "val_") -> dict[str, float]:
        """The metrics record: loss, perplexity and bits per byte; the loss alone for an
        objective whose loss is no likelihood bound."""
        if not self.likelihood:
            return {f"{prefix}loss": self.loss}
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
    """Average objective over the first ``max_batches`` batches of sequential windows
    (``None`` or 0: every window of the split, as ``unmask eval --batches 0`` and a run's
    ``eval_batches: 0`` read it; a negative count is a ``ValueError``).

    The noise of the diffusion bound comes from a generator seeded with ``seed`` and the
    times are antithetic, so two evaluations of one model give the same number.
    """
    if max_batches is not None and max_batches < 0:
        raise ValueError(f"max_batches must be 0 (the whole split) or more, got {max_batches}")
    if batch_size < 1:  # 0 put the whole split in one batch, and max_batches limited nothing
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    max_batches = max_batches or None  # 0 was one batch: the first flush already reached it
    untimed_bound(getattr(model, "config", None), objective)
    fn = get_objective(objective)
    spec = objective_spec(objective)
    options = ObjectiveOptions(schedule=get_schedule("linear", eps=eps), antithetic=True)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    batch: list[torch.Tensor] = []
    n_batches = 0
    byte_len = getattr(dataset, "token_byte_lengths", None) if spec.likelihood else None
    byte_len = torch.from_numpy(byte_len()) if byte_len is not None else None  # bpb only
    window_bytes, window_tokens = 0, 0  # of the windows scored: their own bytes per token
    # a causal objective, and a shifted (Dream-style, ``logit_shift``) model's bound, predict
    # positions 1..L-1 of a window: its first token's bytes are context, not scored (counted,
    # a window opening on a long token lowered the bits/byte)
    first = 1 if spec.attention == "causal" or _shifted(model) else 0

    def flush() -> None:
        nonlocal total, count, n_batches, window_bytes, window_tokens
        x0 = torch.stack(batch)
        if byte_len is not None:
            window_bytes += int(byte_len[x0[:, first:]].sum())
            window_tokens += x0[:, first:].numel()
        x0 = x0.to(device)
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
    if count == 0 and n_batches:  # windows, but nothing in them to predict
        raise UserError(
            f"windows of seq_len={seq_len} tokens leave objective {objective} no token to "
            "score" + (" (a causal model predicts each token from the ones before it: "
                       "seq_len must be at least 2)" if spec.attention == "causal" else
                       " (no logits of a Dream-style model, logit_shift, predict a window's "
                       "first token: seq_len must be at least 2)" if first else "")
        )
    if count == 0:
        raise UserError(f"validation split has fewer than seq_len={seq_len} tokens")
    loss = total / count
    # the split's average would be off by ~0.5% where the windows scored are part of it
    bytes_per_token = window_bytes / window_tokens if window_bytes else dataset.bytes_per_token
    if not spec.likelihood:
        return EvalResult(loss=loss, ppl=math.nan, bpb=math.nan, n_tokens=count, likelihood=False)
    return EvalResult(
        loss=loss,
        ppl=perplexity(loss),
        bpb=loss / math.log(2) / bytes_per_token,
        n_tokens=count,
        exact=spec.attention == "causal",
    )


def untimed_bound(config: Any, objective: str) -> None:
    """One-line ``UserError`` where ``objective`` (``bd3lm``, ``hybrid``: the objectives that
    refuse a time-conditioned model, ``unmask.objectives.blocks.UNTIMED``) has no bound for
    a model of ``config``: one trained with time conditioning before unmask refused it. Its
    loss says how to train another (training's advice); an evaluation says what is left."""
    from unmask.objectives.blocks import UNTIMED, time_conditioning_problem

    if config is None or objective not in UNTIMED:
        return
    if time_conditioning_problem(config, objective) is None:
        return
    raise UserError(
        f"objective {objective!r} {UNTIMED[objective]}: this time-conditioned model "
        f"(sigma_input={config.sigma_input!r}, trained before unmask refused it) has no bound "
        "by it to measure; its samples are still scored (the generative perplexity, lm-eval "
        "generation tasks), and a model trained with time conditioning off has a bound"
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
    noise_slots: Tensor | None = None,
) -> Tensor:
    """(B,) the masked-diffusion bound on -log p(x) per token, in nats, for each row of ``tokens``
    (NaN for a row without such tokens): ``sequence_elbo_terms`` summed over the row and
    divided by its real tokens that have a term (all but a Dream-style model's first one).
    Arguments as there."""
    terms = sequence_elbo_terms(model, tokens, mask_id=mask_id, n_samples=n_samples,
                                generator=generator, attention_mask=attention_mask,
                                noise_slots=noise_slots)
    n = (torch.ones(tokens.shape, dtype=torch.bool) if attention_mask is None
         else attention_mask.bool().cpu()).sum(1)
    if _shifted(model):
        n = (n - 1).clamp_min(0)  # the row's first real token has no term
    return torch.where(n > 0, terms.sum(1) / n.clamp_min(1), torch.nan)


@torch.no_grad()
def sequence_elbo_terms(
    model: Any,
    tokens: Tensor,
    *,
    mask_id: int,
    n_samples: int,
    generator: torch.Generator,
    attention_mask: Tensor | None = None,
    noise_slots: Tensor | None = None,
) -> Tensor:
    """(B, L) float64: each position's term of the masked-diffusion bound on -log p(x) of its
    row, in nats (0 at padding); a row's terms sum to its whole bound.

    The ``mdlm`` objective (Sahoo et al. 2024, eq. 10; Nie et al. 2025, eq. 3) evaluated on
    ``n_samples`` noisy copies of each row (antithetic times): a position's term is the mean
    over the copies of its weighted cross-entropy where it was masked, so the sum is a
    Monte-Carlo estimate of the bound, lower = more likely. Only real tokens
    (``attention_mask`` True) are kept, masked and counted; for a Dream-style model
    (``config.logit_shift``) the first of a row's real tokens is neither masked nor counted
    (no logits predict it: ``unmask.objectives.predicted``, as the ``mdlm`` loss), so its
    term is 0 and the bound is of the tokens after it. Rows share their noise (common
    random numbers: differences between rows are not noise differences): the same
    ``n_samples`` times for every row, and one table of uniform masking draws, indexed by
    ``noise_slots`` (B, L; default: the position), so positions of the same slot are masked
    together in every row. Give the same slot to the same token in texts that differ
    elsewhere (the text around gaps of different lengths, ``unmask.infill``), and their
    difference is estimated with far less noise. ``generator`` (CPU) draws all of it.
    ``model`` is any mask predictor (``(B, L)`` ids → ``(B, L, V)`` logits or ``.logits``).
    """
    from unmask.objectives import mdlm

    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    B, L = tokens.shape
    real = torch.ones(B, L, dtype=torch.bool)
    if attention_mask is not None:
        real = attention_mask.bool().cpu()
    slots = torch.arange(L).expand(B, L) if noise_slots is None else noise_slots.long().cpu()
    if slots.shape != (B, L) or (slots[real] < 0).any():
        raise ValueError("noise_slots must be (B, L) non-negative slot ids")
    config = getattr(model, "config", None)
    cfg = SimpleNamespace(  # mdlm's own rules: the shift, and no term where no logits predict
        attention=getattr(config, "attention", "bidirectional"), mask_id=mask_id,
        logit_shift=_shifted(model),
    )

    def predictor(x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = model(x, attention_mask=attention_mask)
        return getattr(out, "logits", out)  # (n, L_b, V), as the model gives them

    options = ObjectiveOptions(schedule=get_schedule("linear"), antithetic=True)
    t = options.schedule.sample_t(n_samples, generator, antithetic=True)
    n_slots = int(slots[real].max()) + 1 if real.any() else 0
    # slot-major, so a slot's draws do not depend on how many slots there are
    table = torch.rand(n_slots, n_samples, generator=generator).T
    out = torch.zeros(B, L, dtype=torch.float64)
    for b in range(B):
        keep = real[b]
        if not keep.any():
            continue
        x0 = tokens[b][keep.to(tokens.device)][None].expand(n_samples, -1)  # (n, L_b)
        u = table[:, slots[b][keep]]
        parts = mdlm(predictor, cfg, x0, attention_mask=None, generator=generator,
                     options=options, t=t, u=u, keep_terms=True)
        out[b, keep] = parts.terms.double().mean(0).cpu()  # type: ignore[union-attr]
    return out


def _shifted(model: Any) -> bool:
    """Whether ``model`` is Dream-style (``config.logit_shift``: logits at i predict token
    i + 1, so a row's first token has no prediction)."""
    return bool(getattr(getattr(model, "config", None), "logit_shift", False))


def _check_context(model: Any, n_context: int) -> None:
    """``ValueError`` for a target with no context before it on a Dream-style model: no logits
    predict its first token (``_mask_predictor`` would score it with the logits meant for the
    next one). lm-eval's convention gives such a target a prefix token, the document
    separator (``unmask.lm_eval``)."""
    if n_context == 0 and _shifted(model):
        raise ValueError("a Dream-style (logit_shift) model predicts no token at position 0: "
                         "give at least one context token (e.g. the document separator)")


def _mask_predictor(model: Any) -> Any:
    """``x (n, L) -> logits (n, L, V)`` of ``model`` where position i predicts token i: Dream's
    shifted logits (``config.logit_shift``: logits at i predict token i + 1) are moved back."""
    shift = _shifted(model)

    def predictor(x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = model(x, attention_mask=attention_mask)
        logits = getattr(out, "logits", out)  # (n, L, V)
        if shift:  # position i reads the logits produced at i - 1 (position 0 keeps its own)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    return predictor


@dataclass
class LogLikelihood:
    """log p(continuation | context) in nats, as ``unmask.lm_eval`` reports it."""

    logprob: float
    """The estimate: exact for a causal model, else the Monte Carlo estimate of the ELBO (a
    lower bound on the log-likelihood, so comparisons between continuations are of bounds)."""
    stderr: float
    """Standard error of ``logprob`` over its Monte Carlo samples (0.0 when exact; NaN from
    one sample, whose spread cannot be estimated)."""
    n_samples: int
    """Monte Carlo samples behind the estimate (0 when exact)."""
    is_greedy: bool | None = None
    """Whether greedy decoding from the context gives the continuation (None: not checked)."""


def stratified_mask_counts(n: int, length: int, generator: torch.Generator) -> Tensor:
    """(n,) numbers of masked tokens in 1..``length``, one random offset and then evenly
    spaced (LLaDA's evaluation, Nie et al. 2025, App. B.6: ``k ~ U{1..L}``, the j-th sample
    masks ``k + j L / n`` wrapped into 1..L). Each count is uniform on 1..L, so the estimate
    stays unbiased, and the counts cover the range evenly, so it varies less. The offsets are
    floored, not rounded as in LLaDA's code: torch rounds halves to even, which makes some
    counts twice as frequent as others when ``n`` is a multiple of ``L``."""
    return _spaced_counts(_count_offset(length, generator), n, length, 0, n)


def _count_offset(length: int, generator: torch.Generator) -> int:
    """``stratified_mask_counts``' random offset ``k ~ U{1..length}``."""
    return int(torch.randint(1, length + 1, (1,), generator=generator))


def _spaced_counts(k: int, n: int, length: int, lo: int, hi: int) -> Tensor:
    """Samples ``lo..hi-1`` of ``stratified_mask_counts`` of offset ``k``: (hi - lo,)."""
    steps = torch.arange(lo, hi, dtype=torch.float64) * (length / n)
    x = torch.floor(k + steps).long()  # (hi - lo,)
    return (x - 1) % length + 1


@torch.no_grad()
def elbo_loglikelihood(
    model: Any,
    context: Sequence[int],
    target: Sequence[int],
    *,
    mask_id: int,
    n_samples: int = DEFAULT_MC_SAMPLES,
    batch_size: int = 32,
    generator: torch.Generator,
) -> LogLikelihood:
    """Monte Carlo estimate of the masked-diffusion ELBO of ``target`` given ``context``,
    the lower bound on log p(target | context) that LLaDA evaluates (Nie et al. 2025,
    arXiv:2502.09992, eq. 6 and App. B.6):

        log p(r0 | p0) >= E_{l ~ U{1..L}, r_l} [ (L / l) sum_{i: r_l^i = M} log p(r0^i | p0, r_l) ]

    where ``r_l`` masks ``l`` of the ``L`` target tokens chosen uniformly (the context is
    never masked). ``n_samples`` draws with stratified counts ``l``
    (``stratified_mask_counts``), run ``batch_size`` rows per forward. ``stderr`` is the
    sample standard deviation of the draws over sqrt(n): conservative, since it does not
    credit the stratification. ``model`` is any mask predictor (Dream's shifted logits are
    handled); positions beyond the model's context must be cut by the caller.
    """
    return _stratified_elbo(model, context, target, mask_id=mask_id, block_size=None,
                            n_samples=n_samples, batch_size=batch_size, generator=generator)


@torch.no_grad()
def block_elbo_loglikelihood(
    model: Any,
    context: Sequence[int],
    target: Sequence[int],
    *,
    mask_id: int,
    block_size: int,
    n_samples: int = DEFAULT_MC_SAMPLES,
    batch_size: int = 32,
    generator: torch.Generator,
) -> LogLikelihood:
    """Monte Carlo estimate of a block-diffusion (BD3-LM; Arriola et al. 2025,
    arXiv:2503.09573, eq. 8) model's ELBO of ``target`` given ``context``: the sum over the
    blocks of ``block_size`` (counted from the context's first token) of each block's
    masked-diffusion bound given the clean blocks before it, as the model trains and decodes.

    Each block draws its own stratified mask counts over its target tokens
    (``stratified_mask_counts``; the context is never masked), weighted ``L_b / l_b``; every
    block is scored in one pass over ``[x_t ; x_0]`` (``bd3lm_logits``). A plain forward
    over ``x_t`` (``elbo_loglikelihood``) would show a block the masks of the blocks before
    it, which it never saw in training. With one block spanning the whole sequence this is
    ``elbo_loglikelihood``, draw for draw. ``stderr`` as there.
    """
    untimed_bound(getattr(model, "config", None), "bd3lm")  # the bound is bd3lm's
    return _stratified_elbo(model, context, target, mask_id=mask_id, block_size=block_size,
                            n_samples=n_samples, batch_size=batch_size, generator=generator)


def _stratified_elbo(
    model: Any,
    context: Sequence[int],
    target: Sequence[int],
    *,
    mask_id: int,
    block_size: int | None,
    n_samples: int,
    batch_size: int,
    generator: torch.Generator,
) -> LogLikelihood:
    """``block_elbo_loglikelihood`` (``block_size``), or with one block holding the whole
    target and a plain forward, ``elbo_loglikelihood`` (``None``): the one estimator."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    L, P = len(target), len(context)
    if L == 0:  # log 1, exact: no samples drawn (counted as n, its 0.0 stderr pulled
        return LogLikelihood(0.0, 0.0, 0)  # the lm-eval summary's mean standard error down)
    _check_context(model, P)
    device = _model_device(model)
    seq = torch.tensor([*context, *target], dtype=torch.long)  # (P + L,)
    x0 = seq[P:]  # (L,)
    if block_size is None:
        blocks = [torch.arange(L)]
        predictor = _mask_predictor(model)

        def logits_of(xt: Tensor) -> Tensor:
            return predictor(xt.to(device))
    else:
        from unmask.objectives.blocks import bd3lm_logits

        # the target positions (0..L-1) of each block, in order
        blocks = [
            torch.arange(max(lo, P), min(lo + block_size, P + L)) - P
            for lo in range(P // block_size * block_size, P + L, block_size)
        ]

        def logits_of(xt: Tensor) -> Tensor:
            x0_rows = seq.repeat(len(xt), 1).to(device)
            return bd3lm_logits(model, xt.to(device), x0_rows, block_size=block_size)

    # each block's count offset, then the draws MC_DRAW_ROWS samples at a time, block by
    # block: the estimate does not depend on batch_size (drawn per batch, a target of several
    # blocks got other masks at another batch size), and the draws' memory not on n_samples
    offsets = [_count_offset(len(pos), generator) for pos in blocks]
    chunks = (
        [torch.rand(min(MC_DRAW_ROWS, n_samples - at), len(pos), generator=generator)
         for pos in blocks]
        for at in range(0, n_samples, MC_DRAW_ROWS)
    )
    draws = [torch.empty(0, len(pos)) for pos in blocks]  # the drawn rows not yet used
    values: list[Tensor] = []
    for lo in range(0, n_samples, batch_size):
        b = min(batch_size, n_samples - lo)
        while len(draws[0]) < b:
            draws = [torch.cat([u, more]) for u, more in zip(draws, next(chunks), strict=True)]
        masked = torch.zeros(b, L, dtype=torch.bool)
        weight = torch.zeros(b, L, dtype=torch.float64)  # L_b / l_b at each target position
        for pos, k, u in zip(blocks, offsets, draws, strict=True):
            ls = _spaced_counts(k, n_samples, len(pos), lo, lo + b)  # (b,)
            ranks = u[:b].argsort(dim=1).argsort(dim=1)  # (b, L_b)
            masked[:, pos] = ranks < ls[:, None]  # l_b uniformly chosen positions per row
            weight[:, pos] = (len(pos) / ls.double())[:, None]
        draws = [u[b:] for u in draws]
        xt = seq.repeat(b, 1)  # (b, P + L)
        xt[:, P:][masked] = mask_id
        logits = logits_of(xt)[:, P:]  # (b, L, V), where the model runs
        # log p of the masked positions alone, there: the whole (b, L, V) was normalised in
        # float32 on the CPU (copied off the device first), half of it for positions that
        # count nothing
        rows, cols = masked.nonzero(as_tuple=True)  # (k,) each
        at = (rows.to(logits.device), cols.to(logits.device))
        picked = logits[at].float()  # (k, V)
        true = picked.gather(-1, x0[cols].to(logits.device)[:, None])[:, 0]  # (k,)
        logp = torch.zeros(b, L, dtype=torch.float64)
        logp[rows, cols] = (true - torch.logsumexp(picked, dim=-1)).double().cpu()
        values.append((logp * weight).sum(dim=1))  # (b,)
    v = torch.cat(values)  # (n,)
    se = float(v.std(unbiased=True) / math.sqrt(n_samples)) if n_samples > 1 else float("nan")
    return LogLikelihood(float(v.mean()), se, n_samples)


@torch.no_grad()
def exact_elbo(model: Any, context: Sequence[int], target: Sequence[int], *, mask_id: int) -> float:
    """The bound ``elbo_loglikelihood`` estimates, summed over every mask pattern of the
    target (2^L - 1 forwards): the value its estimates average to. For tests and tiny
    targets only."""
    import itertools

    L, P = len(target), len(context)
    if L:
        _check_context(model, P)
    predictor = _mask_predictor(model)
    seq = torch.tensor([*context, *target], dtype=torch.long)
    total = 0.0
    for n_masked in range(1, L + 1):
        subsets = list(itertools.combinations(range(L), n_masked))
        inner = 0.0
        for subset in subsets:
            xt = seq.clone()
            xt[[P + i for i in subset]] = mask_id
            logp = torch.log_softmax(predictor(xt[None].to(_model_device(model)))[0].float(), -1)
            inner += sum(float(logp[P + i, seq[P + i]]) for i in subset)
        total += (L / n_masked) * inner / len(subsets)
    return total / L


@torch.no_grad()
def ar_loglikelihood(
    model: Any,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    start_id: int,
    max_length: int | None = None,
    batch_size: int = 16,
) -> list[LogLikelihood]:
    """Exact log p(target | context) of a causal model for each ``(context, target)``: the
    sum of the target tokens' log-probabilities under teacher forcing, with ``is_greedy``
    (every target token is the argmax). An empty context starts from ``start_id`` (the
    document separator, as ``unmask.sampling.ar`` starts an empty prompt). Rows longer than
    ``max_length + 1`` lose the start of their context (as lm-eval's Hugging Face model does);
    rows are right-padded into batches, which a causal model never sees. Batches are of rows
    of like length, longest first (as lm-eval batches them: a batch too large for memory fails
    at once), and the results come back in the order of ``requests``: in their own order, a
    batch was as wide as its longest row (a task of mixed lengths ran 2-3x the forward work)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = _model_device(model)
    rows: list[tuple[list[int], int]] = []
    for context, target in requests:
        seq = [*(list(context) or [start_id]), *target]
        if max_length is not None:
            seq = seq[-(max_length + 1) :]
        rows.append((seq, min(len(target), len(seq) - 1)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # stable: ties in order
    got: dict[int, LogLikelihood] = {}  # by place in ``requests``
    for lo in range(0, len(rows), batch_size):
        places = order[lo : lo + batch_size]
        chunk = [rows[i] for i in places]
        # at least one column: a chunk of ("", "") rows ([start_id] alone) had none to forward
        width = max(1, max(len(s) for s, _ in chunk) - 1)
        x = torch.full((len(chunk), width), start_id, dtype=torch.long)  # (B, T)
        for b, (seq, _) in enumerate(chunk):
            x[b, : len(seq) - 1] = torch.tensor(seq[:-1])
        logits = _mask_predictor(model)(x.to(device))  # (B, T, V)
        for b, (seq, n) in enumerate(chunk):
            end = len(seq) - 1
            # only the positions that predict the target tokens: the whole (B, T, V) was
            # copied to the CPU in float32 and normalised (5 GB for 16 rows of 600 tokens
            # over a 128k vocabulary)
            logp = torch.log_softmax(logits[b, end - n : end].float(), dim=-1).cpu()  # (n, V)
            tgt = torch.tensor(seq[end - n + 1 :])
            lp = logp.gather(-1, tgt[:, None])[:, 0]  # (n,)
            greedy = bool((logp.argmax(dim=-1) == tgt).all())
            got[places[b]] = LogLikelihood(float(lp.sum()), 0.0, 0, is_greedy=greedy)
    return [got[i] for i in range(len(rows))]


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


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


def _items(sample: str | Sequence[int] | Sequence[str] | Tensor) -> list[Any]:
    """A sample's items, as ``distinct_n`` and ``unigram_entropy`` count them: a string's
    whitespace-split words, a tensor's or a sequence's ids, a sequence of strings as given
    (each one item, not split again)."""
    if isinstance(sample, str):
        return sample.split()
    if isinstance(sample, Tensor):
        return sample.reshape(-1).tolist()
    if not hasattr(sample, "__iter__"):  # an id where a sample was due: a flat list of ids
        raise ValueError(f"each sample is a string or a sequence of ids, got {sample!r}; a "
                         "flat list of ids is one sample: wrap it in a list")
    # a pre-tokenized sample (a list of words) keeps its strings: int() of them was a
    # ValueError "invalid literal for int()"
    return [t if isinstance(t, str) else int(t) for t in sample]


def _samples(samples: Any, what: str) -> Any:
    """``samples`` as ``distinct_n`` and ``unigram_entropy`` read them, checked: one string
    (its characters were read as one-word samples) or a tensor not 2-D (its ids as one-id
    samples) scored 0 without a word."""
    if isinstance(samples, str):
        raise ValueError(f"{what} takes a list of samples, not one string: wrap it in a list")
    if isinstance(samples, Tensor) and samples.dim() != 2:
        raise ValueError(f"{what} takes a 2-D tensor (one row per sample), got shape "
                         f"{tuple(samples.shape)}")
    return samples


def distinct_n(
    texts: Sequence[str | Sequence[int] | Sequence[str]] | Tensor, n: int
) -> float:
    """Distinct-n (Li et al. 2016, arXiv:1510.03055): unique n-grams / all n-grams, pooled over
    ``texts``, in [0, 1]; 1 = no n-gram repeats anywhere in the set.

    Each sample is a string, split on whitespace (words), or a sequence of tokens: ids (a 2-D
    tensor = one sample per row) or strings (a sample already split: each string is one
    item, a word or a token's text, not split again at its spaces). N-grams
    never cross from one sample to the next. Pooled, so N copies of one text score at most
    1/N: it also catches samples that repeat each other. Returns 0.0 when no sample has
    ``n`` items (nothing generated = no diversity).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: Counter[tuple[Any, ...]] = Counter()
    for sample in _samples(texts, "distinct_n"):
        items = _items(sample)
        grams.update(tuple(items[i : i + n]) for i in range(len(items) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def unigram_entropy(token_ids: Sequence[str | Sequence[int] | Sequence[str]] | Tensor) -> float:
    """Mean over samples of the entropy (nats) of each sample's empirical token distribution:
    ``H = -sum_v (c_v / n) log(c_v / n)`` over the ``n`` ids of one sample.

    The sample-entropy metric of Zheng et al. 2024 (arXiv:2409.02908) and ReMDM (Wang et al.
    2025, arXiv:2503.00307): a sample that repeats one token has H = 0, one of n distinct
    tokens has H = log n, so a drop flags degenerate, repetitive generations that a low
    generative perplexity would hide. ``token_ids``: one sequence of ids per sample (a 2-D
    tensor = one row per sample); cut them at EOS first if the padding after it should not
    count. A sample may also be a string (its whitespace-split words) or a sequence of
    strings (each one item, as ``distinct_n`` reads them).
    An empty sample has H = 0; no samples give 0.0.
    """
    rows = [_items(s) for s in _samples(token_ids, "unigram_entropy")]
    if not rows:
        return 0.0
    total = 0.0
    for items in rows:
        n = len(items)
        total += -sum(c / n * math.log(c / n) for c in Counter(items).values()) if n else 0.0
    return total / len(rows)
