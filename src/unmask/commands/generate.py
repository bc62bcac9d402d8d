"""``unmask generate``: sample from a checkpoint, one or many prompts, with a live view.

Sampling flags are generated from ``SampleConfig`` (see docs/sampling.md). A checkpoint
whose ``config.attention`` is ``causal`` (the autoregressive baseline) is decoded token by
token with a KV cache (``unmask.sampling.ar.generate_ar``); ``--gen-length``,
``--temperature``, ``--top-k``, ``--top-p`` and ``--seed`` apply to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from unmask.commands import add_dataclass_flags, dataclass_from_args
from unmask.config import SampleConfig, resolve_device
from unmask.errors import UserError


def _sample_choices() -> dict[str, list[str]]:
    from unmask.sampling.cache import CACHES
    from unmask.sampling.policies import CONFIDENCES, POLICIES, REMASKING

    return {
        "policy": sorted(POLICIES),
        "remasking": sorted(REMASKING),
        "confidence": sorted(CONFIDENCES),
        "cache": sorted(CACHES),
    }


def add_sample_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per ``SampleConfig`` field; unset flags keep the dataclass defaults."""
    add_dataclass_flags(parser, SampleConfig, choices=_sample_choices())


def sample_config_from_args(args: argparse.Namespace) -> SampleConfig:
    """A ``SampleConfig`` from the flags that were given (others keep their defaults)."""
    return dataclass_from_args(SampleConfig, args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint",
        description=(
            "Generate text with a masked diffusion model (LLaDA sampling: scheduled "
            "low-confidence remasking, optional semi-autoregressive blocks and guidance; "
            "parallel threshold/factor/entropy policies and KV caches for speed). "
            "Causal (autoregressive) checkpoints are decoded token by token with a KV cache. "
            "Several prompts are sampled as one left-padded batch."
        ),
    )
    p.add_argument("prompt", nargs="*", help="prompt text; several prompts form a batch ('' = unconditional)")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="run directory or checkpoint folder")
    p.add_argument("--prompt-file", metavar="FILE", help="one prompt per line ('-' = stdin), added after the positional prompts")
    add_sample_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: per prompt text and tokens, plus nfe, seconds, tokens_per_s")
    p.add_argument("--no-live", action="store_true", help="do not draw the canvas while it is denoised")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i] (default: auto)")
    p.set_defaults(func=run)


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        if args.prompt_file == "-":
            text = sys.stdin.read()
        else:
            path = Path(args.prompt_file)
            if not path.is_file():
                raise UserError(f"{path}: no such file")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}: not UTF-8 text") from None
        prompts += [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError("no prompt: give one or more prompts, or --prompt-file FILE ('' for unconditional)")
    return prompts


def _fixed_width(live: Any, gen_length: int, mask_id: int) -> Any:
    """Adapt the live view to autoregressive decoding: the tokens not decoded yet are drawn
    as masks, so every frame has the full width."""
    import torch

    def callback(step: int, tokens: Any) -> None:
        rest = torch.full((tokens.shape[0], gen_length - step), mask_id, dtype=tokens.dtype, device=tokens.device)
        live(step, torch.cat([tokens, rest], dim=1))

    return callback


def run(args: argparse.Namespace) -> int:
    import torch

    from unmask.checkpoint import load
    from unmask.sampling import (
        LiveView,
        generate,
        generate_ar,
        make_generator,
        sample_blocks,
        validate,
    )

    config = sample_config_from_args(args)
    validate(config)  # fail on impossible lengths before loading anything
    prompts = _read_prompts(args)
    device = str(resolve_device(args.device))
    loaded = load(args.model, device=device)
    model, tok, mcfg = loaded.model, loaded.tokenizer, loaded.model.config
    model.eval()
    prompt_ids = [tok.encode(p) for p in prompts]
    autoregressive = getattr(mcfg, "attention", None) == "causal"
    if autoregressive and config.cfg_scale > 0:
        raise UserError("cfg_scale applies to diffusion models; this checkpoint is autoregressive (causal)")

    blockwise = getattr(mcfg, "attention", None) == "block-causal"
    live: LiveView | None = None
    if not args.no_live and not args.json and not blockwise:  # block models grow their canvas
        total = None if autoregressive or config.policy != "llada" else config.steps
        live = LiveView(tok, start=max(len(ids) for ids in prompt_ids), total_steps=total)
        if not live.enabled:
            live = None

    t0 = time.perf_counter()
    try:
        if autoregressive:
            result = generate_ar(
                model,
                prompt_ids,
                max_new_tokens=config.gen_length,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                eos_id=mcfg.eos_id,
                pad_id=mcfg.pad_id,
                generator=make_generator(config.seed, device),
                step_callback=None if live is None else _fixed_width(live, config.gen_length, mcfg.mask_id),
            )
        elif blockwise:  # BD3-LM: block by block, stopping after the block with EOS
            result = sample_blocks(
                model, prompt_ids, config, mask_id=mcfg.mask_id, pad_id=mcfg.pad_id, eos_id=mcfg.eos_id
            )
        else:
            result = generate(
                model,
                prompt_ids,
                config,
                mask_id=mcfg.mask_id,
                pad_id=mcfg.pad_id,
                eos_id=mcfg.eos_id,
                step_callback=live,
            )
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    finally:
        if live is not None:
            live.close(clear=True)
    seconds = time.perf_counter() - t0
    texts = result.texts(tok)
    n_tokens = len(prompts) * config.gen_length
    tokens_per_s = n_tokens / seconds if seconds > 0 else float("inf")

    if args.json:
        out: dict[str, Any] = {
            "results": [
                {"prompt": p, "text": t, "tokens": ids}
                for p, t, ids in zip(prompts, texts, result.gen_ids, strict=True)
            ],
            "nfe": result.nfe,
            "steps": result.steps,
            "seconds": round(seconds, 4),
            "tokens_per_s": round(tokens_per_s, 2),
            "config": dataclasses.asdict(config),
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- [{i}]")
        print(prompts[i] + text)  # the prompt, then its continuation
    print(
        f"{n_tokens} tokens, {result.steps} steps, {result.nfe} NFE in {seconds:.2f} s "
        f"({tokens_per_s:.1f} tokens/s)",
        file=sys.stderr,
    )
    return 0
