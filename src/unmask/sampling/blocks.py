"""Block-diffusion sampling (BD3-LM): denoise one block at a time, stop at EOS.

Arriola et al. 2025 (arXiv:2503.09573, §3.3, Alg. 2) sample a block-causal model block by
block: block b is a masked diffusion conditioned on the finished blocks before it, so the
sequence grows by ``block_size`` tokens per round and can stop as soon as a block holds an
end-of-sequence token (variable-length generation).

``sample_blocks`` runs each round through the one sampler loop (``unmask.sampling.loop.sample``)
on a canvas ``[prompt ; finished blocks ; one block of masks]``. The prompt is left-padded to
a multiple of ``block_size`` so that every generated block is one of the model's attention
blocks; then the ``prefix``/``dual`` KV caches of ``unmask.sampling.cache`` (K/V of the prompt
and the finished blocks computed once per round, only the block recomputed each step) give
exactly the uncached logits, because under block-causal attention nothing before the block can
see the block. Left padding does not move the real tokens relative to each other, and RoPE only
sees relative positions.

Inside: ``sample_blocks``, ``block_size_of``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import Canvas, _as_rows
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.loop import (
    GenerateResult,
    MaskPredictor,
    StepCallback,
    _model_device,
    make_generator,
    sample,
    validate,
)


def block_size_of(model: Any) -> int | None:
    """``model.config.block_size`` of a ``block-causal`` model, else None."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "attention", None) == "block-causal":
        return getattr(cfg, "block_size", None)
    return None


def sample_blocks(
    model: MaskPredictor,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    config: SampleConfig,
    *,
    mask_id: int,
    pad_id: int,
    eos_id: int | None,
    block_size: int | None = None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
) -> GenerateResult:
    """Generate up to ``config.gen_length`` tokens after each prompt, one block at a time (BD3-LM).

    ``block_size`` defaults to the model's (``config.block_size`` of a ``block-causal``
    model); ``config.gen_length`` must be a multiple of it and ``config.block_length`` None or
    equal to it. Each block gets ``config.steps / (gen_length / block_size)`` steps of the
    commit policy (dynamic policies: until it has no masks). A row whose generation holds
    ``eos_id`` is finished: its later blocks are filled with EOS and never run through the
    policy, and no new block is started once every row is finished, so the result may be
    shorter than ``gen_length``. ``config.cache`` ``prefix``/``dual`` is exact here (see the
    module docstring). Classifier-free guidance blanks only the prompt, as in LLaDA.

    The result's ``region`` covers the generated blocks; ``nfe``/``steps`` add up over blocks;
    ``history`` (when asked for) holds one canvas per step, each as long as the canvas then was.
    """
    bs = block_size if block_size is not None else block_size_of(model)
    if bs is None:
        raise UserError("sample_blocks needs a block-causal model (config.block_size) or an explicit block_size")
    if bs <= 0:
        raise UserError(f"block_size must be positive, got {bs}")
    if config.block_length is not None and config.block_length != bs:
        raise UserError(f"block_length={config.block_length} must equal the model's block_size={bs} (or be unset)")
    config = dataclasses.replace(config, block_length=bs)
    num_blocks, steps_per_block = validate(config)
    if config.top_k is not None or config.top_p is not None:
        raise UserError("top_k and top_p apply to autoregressive (causal) models only")

    rows = _as_rows(prompt_ids)
    if not rows:
        raise UserError("no prompts given")
    P = -(-max(len(r) for r in rows) // bs) * bs  # prompt columns, a multiple of the block size
    max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    if max_seq_len is not None and P + config.gen_length > max_seq_len:
        raise UserError(
            f"prompt ({P} tokens after padding to blocks of {bs}) + gen_length ({config.gen_length}) "
            f"exceeds the model's max_seq_len ({max_seq_len})"
        )
    B = len(rows)
    device = _model_device(model) or torch.device("cpu")
    x = torch.full((B, P), pad_id, dtype=torch.long)  # (B, P), left-padded prompts
    real = torch.zeros(B, P, dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            x[i, P - len(r) :] = torch.tensor(r, dtype=torch.long)
            real[i, P - len(r) :] = True
    x, real = x.to(device), real.to(device)
    prompt = real.clone()  # (B, P): what guidance blanks out
    if generator is None:
        generator = make_generator(config.seed, device)
    block_config = dataclasses.replace(config, gen_length=bs, block_length=None, steps=steps_per_block)

    done = torch.zeros(B, dtype=torch.bool, device=device)
    history: list[Tensor] | None = [] if return_history else None
    nfe = steps = 0
    for _ in range(num_blocks):
        if eos_id is not None and bool(done.all()):
            break
        L = x.shape[1]
        new = torch.full((B, bs), mask_id, dtype=torch.long, device=device)  # (B, bs)
        if eos_id is not None:
            new[done] = eos_id  # finished rows: EOS padding, nothing to denoise
        tokens = torch.cat([x, new], dim=1)  # (B, L + bs)
        attn = torch.cat([real, torch.ones(B, bs, dtype=torch.bool, device=device)], dim=1)
        canvas = Canvas.from_tokens(tokens, mask_id=mask_id, attention_mask=attn, region=(L, L + bs))
        prompt_index = torch.cat([prompt, torch.zeros(B, tokens.shape[1] - P, dtype=torch.bool, device=device)], dim=1)
        canvas = dataclasses.replace(canvas, prompt_index=prompt_index)
        callback = None
        if step_callback is not None:
            offset = steps

            def callback(step: int, toks: Tensor, _offset: int = offset) -> None:
                step_callback(_offset + step, toks)

        res = sample(
            model, canvas, block_config, eos_id=eos_id, generator=generator,
            return_history=return_history, step_callback=callback,
        )
        x, real = res.tokens, attn
        nfe += res.nfe
        steps += res.steps
        if history is not None and res.history is not None:
            history.extend(res.history)
        if eos_id is not None:
            done |= (x[:, L:] == eos_id).any(dim=1)
    return GenerateResult(
        tokens=x,
        region=(P, x.shape[1]),
        nfe=nfe,
        steps=steps,
        eos_id=eos_id,
        history=history,
        attention_mask=None if bool(real.all()) else real,
    )


__all__ = ["block_size_of", "sample_blocks"]
