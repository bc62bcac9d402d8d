"""``unmask generate``: sample from a checkpoint, one or many prompts, with a live view.

Sampling flags are generated from ``SampleConfig`` (see docs/sampling.md). A checkpoint
whose ``config.attention`` is ``causal`` (the autoregressive baseline) is decoded token by
token with a KV cache (``unmask.sampling.ar.generate_ar``); ``--gen-length``,
``--temperature``, ``--top-k``, ``--top-p`` and ``--seed`` apply to it. With ``--chat`` each
prompt is one user message rendered through the model's chat template (``unmask.chat``) and
only the reply is printed.

``make_live`` and ``run_sampler`` (the right sampler for the checkpoint's attention) are
shared with ``unmask chat``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from unmask.commands import (
    add_dataclass_flags,
    add_json_flag,
    add_model_flag,
    add_no_live_flag,
    add_runtime_flags,
    dataclass_from_args,
)
from unmask.config import SampleConfig, resolve_device
from unmask.errors import UserError
from unmask.messages import plural


def _sample_choices() -> dict[str, Callable[[], Iterable[str]]]:
    """The registries behind the sampling flags, read only when such a flag is given."""

    def registry(name: str) -> Callable[[], Iterable[str]]:
        def names() -> Iterable[str]:
            import unmask.sampling as sampling

            return getattr(sampling, name)

        return names

    return {
        "policy": registry("POLICIES"),
        "remasking": registry("REMASKING"),
        "confidence": registry("CONFIDENCES"),
        "cache": registry("CACHES"),
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
    p.add_argument("prompt", nargs="*",
                   help="prompt text; several prompts form a batch ('' = unconditional)")
    add_model_flag(p)
    p.add_argument("--prompt-file", metavar="FILE",
                   help="one prompt per line ('-' = stdin), added after the positional prompts")
    p.add_argument("--chat", action="store_true",
                   help="render each prompt as one user message through the model's chat "
                        "template (see unmask chat) and print only the reply")
    p.add_argument("--system", metavar="TEXT",
                   help="with --chat: a system message before each prompt")
    p.add_argument("--template", metavar="FILE|NAME",
                   help="with --chat: the chat template to use instead of the model's (as in "
                        "unmask chat)")
    add_sample_flags(p)
    add_json_flag(p, what="per prompt text and tokens, plus nfe, seconds, tokens_per_s")
    add_no_live_flag(p)
    add_runtime_flags(p)
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


def make_live(tok: Any, mcfg: Any, config: SampleConfig, *, start: int) -> Any:
    """A ``LiveView`` drawing the generation region (from column ``start``) when stdout is a
    terminal, else None; block models grow their canvas and are never drawn."""
    from unmask.sampling import LiveView

    if getattr(mcfg, "attention", None) == "block-causal":
        return None
    causal = getattr(mcfg, "attention", None) == "causal"
    live = LiveView(tok, start=start, total_steps=None if causal or config.policy != "llada" else config.steps)
    return live if live.enabled else None


def run_sampler(model: Any, prompt_ids: list[list[int]], config: SampleConfig, *, device: str,
                live: Any = None) -> Any:
    """Sample ``config.gen_length`` tokens after each prompt the way the checkpoint needs:
    token by token with a KV cache for causal models, block by block for block-causal ones,
    a SEDD sampler for policy ``sedd-euler`` / ``sedd-analytic`` (``unmask.sampling.sedd``),
    else LLaDA's reverse process (``unmask.sampling.generate``). ``live`` is a step callback
    (``make_live``). Returns the ``GenerateResult``."""
    import torch

    from unmask.sampling import (
        generate,
        generate_ar,
        generate_sedd,
        make_generator,
        sample_blocks,
        uses_sedd_sampler,
    )

    mcfg = model.config
    attention = getattr(mcfg, "attention", None)
    sedd = uses_sedd_sampler(config, mcfg)  # raises for a pairing that cannot work
    if attention == "causal" and config.cfg_scale > 0:
        raise UserError("cfg_scale applies to diffusion models; this checkpoint is autoregressive (causal)")
    if attention == "causal":
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
    elif attention == "block-causal":  # BD3-LM: block by block, stopping after the block with EOS
        result = sample_blocks(model, prompt_ids, config, mask_id=mcfg.mask_id, pad_id=mcfg.pad_id, eos_id=mcfg.eos_id)
    elif sedd:
        result = generate_sedd(
            model, prompt_ids, config, mask_id=mcfg.mask_id, pad_id=mcfg.pad_id, eos_id=mcfg.eos_id, step_callback=live
        )
    else:
        result = generate(
            model, prompt_ids, config, mask_id=mcfg.mask_id, pad_id=mcfg.pad_id, eos_id=mcfg.eos_id, step_callback=live
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result


def run(args: argparse.Namespace) -> int:
    from unmask.checkpoint import load
    from unmask.sampling import validate

    config = sample_config_from_args(args)
    validate(config)  # fail on impossible lengths before loading anything
    if (args.system is not None or args.template is not None) and not args.chat:
        raise UserError("--system and --template apply to --chat")
    prompts = _read_prompts(args)
    device = str(resolve_device(args.device))
    loaded = load(args.model, device=device)
    model, tok, mcfg = loaded.model, loaded.tokenizer, loaded.model.config
    model.eval()
    template = None
    if args.chat:
        from unmask.commands.chat import model_template

        template = model_template(loaded, args.template)
        system = [{"role": "system", "content": args.system}] if args.system else []
        prompt_ids = [template.prompt(tok, [*system, {"role": "user", "content": p}])[1] for p in prompts]
    else:
        prompt_ids = [tok.encode(p) for p in prompts]

    live = None if args.no_live or args.json else make_live(tok, mcfg, config, start=max(len(ids) for ids in prompt_ids))
    t0 = time.perf_counter()
    try:
        result = run_sampler(model, prompt_ids, config, device=device, live=live)
    finally:
        if live is not None:
            live.close(clear=True)
    seconds = time.perf_counter() - t0
    if template is not None:  # the reply ends at EOS or the template's end-of-turn token
        texts = [template.reply(tok, ids, mcfg.eos_id) for ids in result.gen_ids]
    else:
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
        print(text if template is not None else prompts[i] + text)  # a reply, or the prompt and its continuation
    print(
        f"{plural(n_tokens, 'token')}, {plural(result.steps, 'step')}, {result.nfe} NFE in "
        f"{seconds:.2f} s "
        f"({tokens_per_s:.1f} tokens/s)",
        file=sys.stderr,
    )
    return 0
