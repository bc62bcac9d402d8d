"""Autoregressive decoding with a KV cache, for ``attention="causal"`` models (the AR baseline).

Inside:

- ``generate_ar``: left-padded batches of prompts, greedy / temperature / top-k / top-p
  sampling; the prompt runs once, then every new token costs one forward of one position
  against the cached keys/values (``unmask.model.KVCache``).
- ``filter_logits``: top-k and top-p (nucleus; Holtzman et al. 2020, arXiv:1904.09751).
- ``sample_token``: one token per row from (B, V) logits.

Returns the same ``GenerateResult`` as the diffusion sampler, so callers (and
``unmask generate``) treat both alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.errors import UserError
from unmask.sampling.cache import call_model, supports_kv_cache
from unmask.sampling.loop import GenerateResult, _model_device
from unmask.sampling.policies import _rand

ARStepCallback = Callable[[int, Tensor], None]
"""``callback(step, tokens)``: after each new token, ``tokens`` = (B, P + step) prompt and
tokens so far. Do not modify ``tokens``."""


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to ``-inf`` the logits (B, V) outside the ``top_k`` largest and outside the smallest
    set whose probability reaches ``top_p`` (nucleus sampling); the top token always stays."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        p = F.softmax(sorted_logits.to(torch.float64), dim=-1)  # (B, V)
        drop_sorted = p.cumsum(dim=-1) - p >= top_p  # mass before this token already reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_token(
    logits: Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B,) token ids from (B, V) logits: argmax at temperature 0, else a draw from
    ``softmax(filter_logits(logits / temperature))`` by inverting the CDF at one uniform per row."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.to(torch.float64) / temperature, top_k, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    cdf = probs.cumsum(dim=-1)
    u = _rand((probs.shape[0], 1), torch.float64, probs.device, generator) * cdf[:, -1:]
    idx = (cdf <= u).sum(dim=-1)  # first token whose CDF passes u; zero-probability ones never do
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).long().argmax(dim=-1)  # guards rounding at the top
    return torch.minimum(idx, last)


def _rows(prompts: Sequence[Sequence[int]] | Sequence[int] | Tensor) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.dim() not in (1, 2):
            raise UserError(f"prompt tensor must be 1-D or 2-D, got shape {tuple(prompts.shape)}")
        return [prompts.tolist()] if prompts.dim() == 1 else prompts.tolist()
    prompts = list(prompts)
    if not prompts:
        return [[]]
    if all(isinstance(p, int) or (isinstance(p, Tensor) and p.dim() == 0) for p in prompts):
        return [[int(t) for t in prompts]]
    if any(isinstance(p, int) for p in prompts):
        raise UserError("prompts mix token ids and lists of token ids")
    return [[int(t) for t in p] for p in prompts]


def generate_ar(
    model: Any,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None,
    pad_id: int | None = None,
    start_id: int | None = None,
    generator: torch.Generator | None = None,
    step_callback: ARStepCallback | None = None,
) -> GenerateResult:
    """Decode up to ``max_new_tokens`` tokens after each prompt with a causal model and a KV cache.

    ``prompt_ids``: one prompt, a list of prompts (left-padded with ``pad_id``, default
    ``model.config.pad_id``, with an attention mask; RoPE is relative, so a padded row
    decodes as it would alone), or a 2-D tensor of equal-length prompts. An empty prompt
    starts from ``start_id`` (default ``eos_id``, the document separator of our training
    data). The prompt runs once (1 NFE); every further token is one forward of one
    position (1 NFE). A row that emits ``eos_id`` is finished: its later positions hold
    ``pad_id``; decoding stops when every row is finished.

    Returns a ``GenerateResult`` with ``tokens`` (B, P + max_new_tokens), ``region`` =
    (P, P + max_new_tokens), ``nfe`` and ``steps`` = tokens decoded per row.
    """
    mcfg = getattr(model, "config", None)
    attention = getattr(mcfg, "attention", "causal")
    if attention != "causal":
        raise UserError(f"autoregressive decoding needs a causal model, not attention={attention!r}")
    if not supports_kv_cache(model):
        raise UserError("autoregressive decoding needs a model with a KV cache (unmask.model.Transformer)")
    if max_new_tokens <= 0:
        raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    pad_id = pad_id if pad_id is not None else getattr(mcfg, "pad_id", eos_id)
    start_id = start_id if start_id is not None else eos_id
    rows = _rows(prompt_ids)
    if any(not r for r in rows):
        if start_id is None:
            raise UserError("an empty prompt needs a start token (start_id or eos_id)")
        rows = [r or [start_id] for r in rows]
    if pad_id is None and len({len(r) for r in rows}) > 1:
        raise UserError("prompts of different lengths need a pad id")
    B, P = len(rows), max(len(r) for r in rows)
    max_seq_len = getattr(mcfg, "max_seq_len", None)
    if max_seq_len is not None and P + max_new_tokens > max_seq_len:
        raise UserError(
            f"prompt ({P} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"max_seq_len ({max_seq_len}); use at most {max(max_seq_len - P, 0)} new tokens or a shorter prompt"
        )

    device = _model_device(model) or torch.device("cpu")
    prompt = torch.full((B, P), pad_id if pad_id is not None else 0, dtype=torch.long)
    real = torch.zeros(B, P, dtype=torch.bool)
    for i, r in enumerate(rows):
        prompt[i, P - len(r) :] = torch.tensor(r, dtype=torch.long)
        real[i, P - len(r) :] = True
    prompt, real = prompt.to(device), real.to(device)
    attn = None if bool(real.all()) else real  # (B, P), grows by one column per token

    from unmask.model import KVCache

    fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    gen = torch.full((B, max_new_tokens), fill, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    kv = KVCache()
    nfe = steps = 0
    with torch.no_grad():
        logits = call_model(model, prompt, attn, cache=kv, start=0)[:, -1]  # (B, V): predicts position P
        nfe += 1
        for t in range(max_new_tokens):
            nxt = sample_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            nxt = torch.where(done, torch.full_like(nxt, fill), nxt)  # (B,)
            gen[:, t] = nxt
            steps += 1
            if eos_id is not None:
                done |= nxt == eos_id
            if step_callback is not None:
                step_callback(steps, torch.cat([prompt, gen[:, :steps]], dim=1))
            if steps == max_new_tokens or bool(done.all()):
                break
            if attn is not None:
                attn = torch.cat([attn, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1)  # (B, P + t + 1)
            logits = call_model(model, nxt[:, None], attn, cache=kv, start=P + t)[:, -1]  # (B, V)
            nfe += 1
    return GenerateResult(
        tokens=torch.cat([prompt, gen], dim=1),
        region=(P, P + max_new_tokens),
        nfe=nfe,
        steps=steps,
        eos_id=eos_id,
        attention_mask=None if attn is None else torch.cat([real, torch.ones_like(gen, dtype=torch.bool)], dim=1),
    )
