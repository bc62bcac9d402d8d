"""``unmask generate``: sample from a checkpoint, one or many prompts, with a live view.

Sampling flags are generated from ``SampleConfig`` (see docs/sampling.md). The decoder is the
checkpoint's own (``--decoder auto``: LLaDA's loop for masked diffusion, block by block for
BD3-LM, SEDD's sampler for SEDD, token by token with a KV cache for causal models), chosen
by ``unmask.api`` (``unmask.sampling.choose_decoder``), which refuses options a checkpoint
cannot use. With ``--chat`` each prompt is one user message rendered through the model's
chat template (``unmask.chat``) and only the reply is printed. A ``[MASK]`` written in a
prompt is filled too, and the prompt is printed as it ended (``prompt`` in ``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from unmask.commands import (
    add_json_flag,
    add_model_flag,
    add_no_live_flag,
    add_quantize_flag,
    add_runtime_flags,
    given_fields,
    name_or_path,
    positive_int,
    template_names,
)
from unmask.commands.sample_options import (
    add_draft_flag,
    add_sample_flags,
    check_draft_flags,
    check_given_options,
    load_draft,
    sample_config_from_args,
    with_seed,
)
from unmask.config import SampleConfig, resolve_device
from unmask.errors import UserError
from unmask.messages import plural

__all__ = ["add_sample_flags", "register", "run", "sample_config_from_args"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint",
        description=(
            "Generate text with a masked diffusion model (LLaDA sampling: scheduled "
            "low-confidence remasking, optional semi-autoregressive blocks and guidance; "
            "parallel threshold/factor/entropy policies and KV caches for speed). "
            "Causal (autoregressive) checkpoints are decoded token by token with a KV cache. "
            "Several prompts are sampled as one left-padded batch; a run that samples "
            "seeds each row on its own, as the server seeds it (a seed is drawn where "
            "--seed is not given, and --json reports it), so a prompt writes the same text "
            "alone or beside others."
            " Sampling flags not given take the checkpoint's recommended options "
            "(sample_defaults in its config.json, measured: argmax in blocks of 4 with "
            "repetition penalty 1.3 and no repeated 4-gram for mdlm models (3-gram for the "
            "demo), "
            "greedy with 1.15 and no repeated 4-gram for ar and hybrid ones), else the "
            "defaults shown below; --json prints the options that ran."
        ),
    )
    p.add_argument("prompt", nargs="*",
                   help="prompt text; several prompts form a batch ('' = unconditional)")
    add_model_flag(p)
    p.add_argument("--prompt", dest="prompt_flags", action="append", default=[], metavar="TEXT",
                   help="a prompt given as a flag (repeatable), added after the positional "
                        "prompts")
    p.add_argument("--prompt-file", metavar="FILE",
                   help="one prompt per line ('-' = stdin), added after the positional prompts")
    p.add_argument("--chat", action="store_true",
                   help="render each prompt as one user message through the model's chat "
                        "template (see unmask chat) and print only the reply")
    p.add_argument("--system", metavar="TEXT",
                   help="with --chat: a system message before each prompt")
    p.add_argument("--template", "--chat-template", dest="template", metavar="FILE|NAME",
                   type=name_or_path("chat template", template_names),
                   help="with --chat: the chat template to use instead of the model's (as in "
                        "unmask chat)")
    p.add_argument("--n", type=positive_int, default=1, metavar="N",
                   help="texts per prompt (as the server's n): prompt k's choice j is text "
                        "k*N+j; when sampling, choice j is seeded SEED+j (SEED drawn unless "
                        "--seed is given), so a prompt writes the same texts alone or beside "
                        "others; a count whose rows cannot fit the free memory is refused "
                        "(UNMASK_NO_FIT_CHECK=1 skips it) (default 1)")
    add_draft_flag(p)
    add_sample_flags(p)
    add_json_flag(p, what="per prompt and choice: text and tokens; plus nfe, steps, seconds, "
                          "n_tokens, tokens_per_s, dtype, and config: the options that ran, its "
                          "seed included")
    add_no_live_flag(p)
    add_runtime_flags(p, decodes=True)
    add_quantize_flag(p)
    p.set_defaults(func=run)


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = [*args.prompt, *args.prompt_flags]
    if args.prompt_file:
        if args.prompt_file == "-":
            from unmask.files import read_user_stdin

            text = read_user_stdin()
        else:
            from unmask.files import read_user_text

            text = read_user_text(Path(args.prompt_file), "prompt file")
        from_file = [line for line in text.splitlines() if line.strip()]
        if not from_file:  # the user gave prompts, in a file that holds none
            where = "stdin" if args.prompt_file == "-" else args.prompt_file
            raise UserError(f"--prompt-file {where}: no prompt in it (one prompt per line; "
                            "blank lines are skipped)")
        prompts += from_file
    if not prompts:
        piped = "" if _stdin_is_terminal() else "; standard input is read by "
        raise UserError(
            "no prompt: give one or more prompts (or --prompt TEXT), or --prompt-file FILE ('' for "
            "unconditional)" + (f"{piped}--prompt-file -" if piped else "")
        )
    return prompts


def _stdin_is_terminal() -> bool:
    """Whether standard input is a terminal (or absent): where it is not, a run given no prompt
    was likely meant to read it (``echo hi | unmask generate ...``)."""
    from unmask.terminal import is_tty

    return is_tty(sys.stdin, default=True)


def _note_empty_steps(config: SampleConfig, prompts: list[str], tokenizer: Any) -> None:
    """Say so when some step of the scheduled policy has no mask left to commit (it still
    runs the model). A block's schedule has ``steps / blocks`` steps for its ``block_length``
    masks, and the first block's also counts the prompt's ``[MASK]`` blanks (``prompt_masks``
    fill), so with one block those blanks take up the extra steps."""
    from unmask import api

    blocks = config.gen_length // (config.block_length or config.gen_length)
    blanks = 0
    if blocks == 1 and config.prompt_masks == "fill" and tokenizer.mask_id is not None:
        blanks = max(api.encode_prompt(tokenizer, p).count(tokenizer.mask_id) for p in prompts)
    if config.steps > config.gen_length + blanks:
        print(f"unmask generate: note: {config.steps} steps for {config.gen_length + blanks} "
              "masked tokens: a step past the last one commits nothing but still runs the model "
              "(--skip-empty-steps skips those)", file=sys.stderr)


_WHOLE_CANVAS = ("llada", "bd3lm", "sedd", "embed-diffusion", "latent-diffusion")
"""The decoders whose forward runs over the whole canvas (a segment of it, with
``segment_length``) and returns its logits, (B, L, V): ``bd3lm``'s last block sees the prompt
and every block before it, and its cache keeps logits as wide (``sampling.cache``)."""


def rows_bytes(loaded: Any, lengths: list[int], config: SampleConfig, n: int,
               decoder: str = "llada", *, rows_at_once: str = "batch") -> int:
    """A lower bound of the memory that ``n`` texts of each prompt (``lengths``: the prompts'
    token counts) take under ``decoder``: every row's canvas (int64 ids, and the result's
    list of them), and, per row of one forward, the larger of

    - one layer's activations over the positions the forward runs on (its input and output,
      keys and values, the MLP's two hidden projections; the prompt, for the decoders that
      read fewer columns than the canvas), and
    - the logits over the positions the decoder reads, in the weights' dtype (2 bytes a
      value below float32; SEDD's scores in float32): the whole canvas, or its segment, for
      ``llada``, ``bd3lm``, ``sedd`` and the continuous decoders, the next position for
      ``ar``, the draft columns for ``speculative`` and ``hybrid``; and the commit loop's
      float64 work on the block's columns (``llada``, ``bd3lm``): the Gumbel-perturbed
      logits when sampling and the cast and softmax of ``low_confidence``, or, when
      sampling, the noise it draws over every logit (``add_gumbel_noise``), the larger.

    ``rows_at_once``: ``"batch"``, every row in one forward and one step; ``"together"``,
    one forward over every row and each row's step (its float64 work) in turn (seeded rows
    in half precision, ``llada`` without a cache: ``unmask.api.run_rows``); ``"each"``, one
    row's forward at a time (other seeded rows there).

    Measured on the demo model (V 4096, 65 positions; --n 200 and 400, fp32 greedy and
    sampling, bf16 sampling) it is 54-98% of the peak memory the rows add; 96-99% for greedy
    runs over a 50k vocabulary; far less for ``"each"`` and ``ar`` (review rm30)."""
    from unmask.api import weights_dtype

    cfg = loaded.config
    width = max(lengths) + config.gen_length  # a row's canvas, left-padded to the longest
    rows = len(lengths) * n
    dtype = (weights_dtype(loaded) or "").split(" + ")[0]  # None: a stand-in, no parameters
    value = 4 if dtype in ("fp32", "float64") else 2
    vocab = getattr(cfg, "vocab_size", 0)  # a stand-in model's config may lack sizes
    seen = min(width, config.segment_length or width)  # the positions a forward runs on
    heads = getattr(cfg, "n_kv_heads", None) or getattr(cfg, "n_heads", 0)
    ffn = getattr(cfg, "ffn_hidden", 0) if not getattr(cfg, "n_experts", 0) else 0
    hidden = 2 * getattr(cfg, "d_model", 0) + 2 * heads * getattr(cfg, "head_dim", 0) + 2 * ffn
    sampling = config.temperature > 0
    if decoder in _WHOLE_CANVAS:
        read = seen
    elif decoder in ("speculative", "hybrid"):
        read = config.draft_length or getattr(cfg, "draft_block", None) or 1
    else:  # ar, or a registered decoder: the next position
        read = 1
    # the others' first forward runs on the prompt, later ones on the columns they read
    layer = (seen if decoder in _WHOLE_CANVAS else min(seen, max(max(lengths), read))
             ) * hidden * value
    if decoder == "sedd":
        value = 4  # its scores in float32 (``.float()``)
    logits = read * vocab * value
    if decoder in ("llada", "bd3lm"):  # the first block's columns
        block = config.block_length or (getattr(cfg, "block_size", None)
                                        if decoder == "bd3lm" else None) or config.gen_length
        window = min(block, config.gen_length, seen) * vocab * 8
        work = (window if sampling else 0) + (
            2 * window if config.remasking == "low_confidence" else 0)
        noise = seen * vocab * 8 + window if sampling else 0
        own = max(work, noise)  # the step's, after the forward
    else:
        own = 0
    canvases = rows * width * 16
    if rows_at_once == "each":
        return canvases + max(layer, logits + own)
    if rows_at_once == "together":
        return canvases + max(rows * layer, rows * logits + own)
    return canvases + rows * max(layer, logits + own)


FIT_MARGIN = 0.8
"""``_check_rows_fit`` refuses only where this share of the rows' bound is more than the free
memory: the bound came within 1-4% of the measured need of greedy runs on a 50k vocabulary
(review rm30), so a later change that frees one of its buffers sooner must not start refusing
runs that fit."""


def _check_rows_fit(loaded: Any, lengths: list[int], config: SampleConfig, n: int,
                    device: str, decoder: str, draft: Any = None,
                    apart: list[bool] | None = None) -> None:
    """Refuse, in one line, prompts × ``--n`` rows whose memory (``rows_bytes``, a lower
    bound; ``FIT_MARGIN`` of it) exceeds what ``device`` has free: ``--n 1000000000`` was
    killed by the system
    (status 137, no message) after filling the memory. ``apart``: per prompt, whether its
    rows run alone (``unmask.api.row_runs``: a prompt of [MASK]s, a [MASK] under a KV
    cache), one forward of one row at a time beside the others' runs (None: none). A length
    the model's context cannot take, or where one row alone would not fit, is left to the
    library's own checks, which name the length, not the count (``--gen-length 100000``:
    the model's max_seq_len; ``--gen-length 10**23 --segment-length 16``: at most 1048576
    tokens).
    ``UNMASK_NO_FIT_CHECK=1`` skips it, as it skips the check of the weights at load
    (``unmask.quantize.check_fits``)."""
    import os

    from unmask import api
    from unmask.quantize import SKIP_ENV, free_bytes, memory_refusal

    if os.environ.get(SKIP_ENV) == "1":
        return
    limit, _ = api.context_limit(loaded, draft)
    if (config.segment_length is None and limit is not None
            and max(*lengths, 1) + config.gen_length > limit):  # '' starts with a token
        return  # the length is at fault: the decoder's check names it
    if not api.draws_noise(decoder, config) or api.seeds_in_one_run(loaded, config, draft):
        at_once = "batch"  # one run of every row
    elif decoder == "llada" and config.cache == "none":
        at_once = "together"  # runs of a row each, stepped with one forward
    else:
        at_once = "each"  # runs of a row each, one after another
    flags = apart if apart is not None and len(lengths) * n > 1 else [False] * len(lengths)
    rest = [length for length, a in zip(lengths, flags, strict=True) if not a]
    alone = [length for length, a in zip(lengths, flags, strict=True) if a]

    def need_of(count: int) -> int:  # the others' runs, and those alone (their canvases and
        # one row's forward: a bound above the larger of the two forwards, never below)
        return ((rows_bytes(loaded, rest, config, count, decoder, rows_at_once=at_once)
                 if rest else 0)
                + (rows_bytes(loaded, alone, config, count, decoder, rows_at_once="each")
                   if alone else 0))

    need = need_of(n)
    free = free_bytes(device)
    if free is None or need * FIT_MARGIN <= free:
        return
    if rows_bytes(loaded, [max(lengths)], config, 1, decoder) * FIT_MARGIN > free:
        return  # one row alone: its length is at fault, which the decoder's checks name
    one = need_of(1)
    each = need_of(2) - one  # per --n
    most = int((free / FIT_MARGIN - (one - each)) // each)  # the most it lets run: more cannot
    fewer = f"more than --n {most} cannot fit" if most >= 1 else "give fewer prompts"
    if most >= 1 and len(lengths) > 1:
        fewer += " (or give fewer prompts)"
    raise memory_refusal(
        f"--n {n} × {plural(len(lengths), 'prompt')} ({len(lengths) * n:,} rows)", need, free,
        device, fewer, bound="at least")


def run(args: argparse.Namespace) -> int:
    from unmask import api
    from unmask.commands.sample_options import make_live

    check_given_options(args)
    if (args.system is not None or args.template is not None) and not args.chat:
        raise UserError("--system and --template apply to --chat")
    check_draft_flags(args)
    prompts = _read_prompts(args)
    device = str(resolve_device(args.device))
    loaded = api.load_for_decoding(args.model, device=device, dtype=args.dtype,
                                    quantize=args.quantize)
    loaded.model.eval()
    draft = load_draft(args.draft, device, args.dtype)
    template = api.chat_template(loaded, args.template) if args.chat else None
    # flags not given take the checkpoint's recommended sampling options (sample_defaults);
    # steps not given fit the blocks the prompts leave (api.generate's, the server's)
    ids = api.prompt_ids(loaded, prompts, template=template, system=args.system)
    lengths = [len(i) for i in ids]
    config = api.sample_config(loaded, given_fields(SampleConfig, args),
                               prompt_lengths=lengths)
    # refuse what the checkpoint cannot do, before sampling
    decoder = api.choose(loaded, config, draft=draft)
    config = with_seed(config, decoder)  # a sampled run reports the seed that repeats it
    apart = api.row_runs(loaded, ids, config, seeded=False, draft=draft).apart
    _check_rows_fit(loaded, lengths, config, args.n, device, decoder, draft, apart)  # first
    if args.n > 1 and not api.draws_noise(decoder, config):
        print(f"unmask generate: note: --n {args.n} of a run that draws nothing (decoder "
              f"{decoder}, temperature {config.temperature:g}): every choice is the same; "
              "sample (--temperature above 0) for different ones", file=sys.stderr)
    if decoder == "llada" and config.policy == "llada" and not config.skip_empty_steps:
        _note_empty_steps(config, prompts, loaded.tokenizer)

    live = None if args.no_live or args.json else make_live(loaded.tokenizer, config, decoder)
    try:
        out = api.generate(loaded, prompts, config=config, n=args.n, template=template,
                           system=args.system, step_callback=live, draft=draft)
    finally:
        if live is not None:
            live.close(clear=True)
    # the ids decoded, each row's up to and including its EOS (api.Generation.n_tokens)
    n_tokens, tokens_per_s = out.n_tokens, out.tokens_per_s

    if args.json:
        result: dict[str, Any] = {
            "results": [
                {"prompt": p, "choice": k % args.n, "text": t, "tokens": ids,
                 "filled_prompt": shown}
                for k, (p, t, ids, shown) in enumerate(zip(
                    [p for p in prompts for _ in range(args.n)], out.texts, out.ids,
                    out.prompts, strict=True))
            ],
            "decoder": out.decoder,
            "nfe": out.nfe,
            "steps": out.steps,
            "seconds": round(out.seconds, 4),
            "n_tokens": n_tokens,  # what tokens_per_s counts: each row's up to its EOS
            "tokens_per_s": round(tokens_per_s, 2),
            "dtype": api.weights_dtype(loaded),
            "config": dataclasses.asdict(out.config),  # the options that ran (seeded above)
        }
        if hasattr(out.result, "acceptance_stats"):  # speculative, hybrid: drafts and forwards
            result.update(out.result.acceptance_stats())
        if draft is not None:
            result["drafter_dtype"] = api.weights_dtype(draft)
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for i, text in enumerate(out.texts):
        if len(out.texts) > 1:
            print(f"--- [{i}]")
        # a reply, or the prompt (as it ended: its [MASK]s filled) and its continuation
        print(text if template is not None else out.prompts[i] + text)
    how = f"decoder {out.decoder}"
    # the commit loop's parallelism: positions committed per step (EOS filled after EOS too)
    per_step = sum(len(r) for r in out.ids) / len(out.ids) / max(out.steps, 1)
    if out.decoder in ("llada", "bd3lm"):  # the commit loop: which policy and cache ran
        how += "".join(f", {name} {value}" for name, value, default in (
            ("policy", config.policy, "llada"), ("cache", config.cache, "none"))
            if value != default)  # fmt: skip
        how += f", {per_step:.2f} tokens/step"
    print(
        f"{plural(n_tokens, 'token')}, {plural(out.steps, 'step')}, {out.nfe} NFE in "
        f"{out.seconds:.2f} s ({tokens_per_s:.1f} tokens/s, {how}"
        + (f", {dtype})" if (dtype := api.weights_dtype(loaded)) else ")"),
        file=sys.stderr,
    )
    if out.decoder in ("llada", "bd3lm") and config.policy != "llada" and per_step < 1.2:
        if _distilled(args.model):
            why = ("this distilled student is not yet confident about several masked tokens at "
                   "once; more distillation steps or trajectories may help (unmask distill "
                   "--resume --out RUN --steps N; docs/training.md)")
        else:
            why = ("this model is rarely confident about several masked tokens at once; a model "
                   "distilled for it (unmask distill) decodes in parallel (docs/sampling.md, "
                   "Fast decoding)")
        print(f"unmask generate: note: policy {config.policy} committed {per_step:.2f} tokens a "
              f"step: {why}", file=sys.stderr)
    return 0


def _distilled(model: str) -> bool:
    """Whether the checkpoint at ``model`` was trained by ``unmask distill`` (its trainer
    state names objective ``distill``)."""
    from unmask.checkpoint import checkpoint_dir

    try:
        meta = json.loads((checkpoint_dir(model) / "trainer.json").read_text())
    except (UserError, OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("objective") == "distill"
