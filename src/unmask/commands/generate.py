"""``unmask generate``: sample from a checkpoint, one or many prompts, with a live view.

Sampling flags are generated from ``SampleConfig`` (see docs/sampling.md). The decoder is the
checkpoint's own (``--decoder auto``: LLaDA's loop for masked diffusion, block by block for
BD3-LM, SEDD's sampler for SEDD, token by token with a KV cache for causal models), chosen
by ``unmask.api`` (``unmask.sampling.choose_decoder``), which refuses options a checkpoint
cannot use. With ``--chat`` each prompt is one user message rendered through the model's
chat template (``unmask.chat``) and only the reply is printed. A ``[MASK]`` written in a
prompt is filled too, and the prompt is printed as it ended (``prompt`` in ``--json``).
``--stop TEXT`` ends each text before the first such text in it (``api.generate``'s
``stop``, the server's rule: ``unmask.chat.text_end``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from unmask.commands import (
    add_json_flag,
    add_model_flag,
    add_no_live_flag,
    add_quantize_flag,
    add_runtime_flags,
    check_model_exists,
    check_template_given,
    given_fields,
    positive_int,
    template_name_or_path,
)
from unmask.commands.sample_options import (
    add_draft_flag,
    add_sample_flags,
    add_stop_flag,
    check_given_blocks,
    check_given_options,
    check_lengths,
    check_sample_flags,
    load_draft,
    note_empty_steps,
    sample_config_from_args,
    with_seed,
)
from unmask.config import SampleConfig, resolve_device
from unmask.errors import UserError
from unmask.files import read_json, require_stdout, text_lines
from unmask.messages import plural
from unmask.terminal import json_text, shown_text

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
                   type=template_name_or_path,
                   help="with --chat: the chat template to use instead of the model's (as in "
                        "unmask chat)")
    p.add_argument("--n", type=positive_int, default=1, metavar="N",
                   help="texts per prompt (as the server's n): prompt k's choice j is text "
                        "k*N+j; when sampling, choice j is seeded SEED+j (SEED drawn unless "
                        "--seed is given), so a prompt writes the same texts alone or beside "
                        "others; a count whose rows cannot fit the free memory is refused "
                        "(UNMASK_NO_FIT_CHECK=1 skips it) (default 1)")
    add_stop_flag(p, what="each text")
    add_draft_flag(p)
    add_sample_flags(p)
    add_json_flag(p, what="per prompt and choice: text and tokens; plus nfe, steps, seconds, "
                          "n_tokens (every text's), decoded_tokens (identical texts of a run "
                          "that draws nothing decoded once), tokens_per_s (of those decoded), "
                          "dtype, and config: the options that ran, its seed included")
    add_no_live_flag(p)
    add_runtime_flags(p, decodes=True)
    add_quantize_flag(p)
    p.set_defaults(func=run, check_flags=check_flags)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that are wrong whatever the model, without importing torch (the command
    line runs it before torch loads: ``--temperature -1`` took seconds to refuse): the
    sampling flags (``check_sample_flags``), and ``--system`` or ``--template`` without
    ``--chat``; blocks that do not divide the length (``check_given_blocks``); a
    ``--prompt-file``, ``--model`` or ``--draft`` that does not exist; a ``--template`` that
    cannot be read or rendered (``check_template_given``). The checks that need the decoders'
    rules follow in ``run``."""
    check_sample_flags(args)
    if (args.system is not None or args.template is not None) and not args.chat:
        raise UserError("--system and --template apply to --chat")
    check_given_blocks(args)
    if args.prompt_file and args.prompt_file != "-" and (
            not os.path.exists(args.prompt_file) or os.path.isdir(args.prompt_file)):
        from unmask.files import read_user_text  # its refusal (a file there is read in run,

        read_user_text(Path(args.prompt_file), "prompt file")  # once: a pipe, <(...), too)
    check_model_exists(args)
    check_template_given(args)


def _read_prompts(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The prompts given, and what to call each in a refusal: "prompt 2 of 3", or for one
    read from ``--prompt-file`` (blank lines skipped) "prompt on line 5 of FILE"."""
    prompts = [*args.prompt, *args.prompt_flags]
    lines: list[int] = []
    if args.prompt_file:
        if args.prompt_file == "-":
            from unmask.files import read_user_stdin

            text = read_user_stdin("unmask generate: reading the prompts, one a line,")
        else:
            from unmask.files import read_user_text

            text = read_user_text(Path(args.prompt_file), "prompt file")
        numbered = [(k + 1, line) for k, line in enumerate(text_lines(text)) if line.strip()]
        lines, from_file = [k for k, _ in numbered], [line for _, line in numbered]
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
    given = len(prompts) - len(lines)
    where = "standard input" if args.prompt_file == "-" else args.prompt_file
    names = [f"prompt {k + 1} of {len(prompts)}" for k in range(given)]
    return prompts, names + [f"prompt on line {line} of {where}" for line in lines]


def _stdin_is_terminal() -> bool:
    """Whether standard input is a terminal (or absent): where it is not, a run given no prompt
    was likely meant to read it (``echo hi | unmask generate ...``)."""
    from unmask.terminal import is_tty

    return is_tty(sys.stdin, default=True)


def run(args: argparse.Namespace) -> int:
    from unmask import api
    from unmask.chat import TemplateRejected
    from unmask.commands.sample_options import make_live

    require_stdout("the generated text")
    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    check_given_options(args)
    prompts, names = _read_prompts(args)
    device = str(resolve_device(args.device))
    loaded = api.load_for_decoding(args.model, device=device, dtype=args.dtype,
                                    quantize=args.quantize)
    loaded.model.eval()
    given = given_fields(SampleConfig, args)
    # the whole run's lengths under the policy it takes (the checkpoint's where --policy is
    # not given), before a drafter loads and before a segment's lengths are checked
    check_lengths(api.sample_config(loaded, given, drafter=args.draft is not None))
    draft = load_draft(args.draft, device, args.dtype)
    template = api.chat_template(loaded, args.template) if args.chat else None
    # flags not given take the checkpoint's recommended sampling options (sample_defaults);
    # steps not given fit the blocks the prompts leave (api.generate's, the server's)
    try:
        ids = api.prompt_ids(loaded, prompts, template=template, system=args.system)
    except TemplateRejected as e:  # named messages[0], which the user never wrote
        if args.system is None:
            raise
        api.prompt_ids(loaded, prompts, template=template)  # it rejects a prompt: said as is
        raise UserError(f"--system: {e}") from None  # it rejects --system (as unmask chat's)
    lengths = [len(i) for i in ids]
    config = api.sample_config(loaded, given, prompt_lengths=lengths,
                               drafter=draft is not None)
    # refuse what the checkpoint cannot do, before sampling
    decoder = api.choose(loaded, config, draft=draft)
    config = with_seed(config, decoder)  # a sampled run reports the seed that repeats it
    api.check_prompts_fit(loaded, ids, config, decoder, draft, names=names)  # the file's line
    apart = api.row_runs(loaded, ids, config, seeded=False, draft=draft).apart
    api.check_rows_fit(loaded, lengths, config, args.n, device, decoder, draft, apart,
                       count="--n {}")  # first, in the flag's words (api.generate checks too)
    if args.n > 1 and not api.draws_noise(decoder, config):
        print(f"unmask generate: note: --n {args.n} of a run that draws nothing (decoder "
              f"{decoder}, temperature {config.temperature:g}): every choice is the same "
              "(decoded once); sample (--temperature above 0) for different ones", file=sys.stderr)
    note_empty_steps("unmask generate", config, decoder, ids, loaded.tokenizer.mask_id)

    live = None if args.no_live or args.json else make_live(loaded.tokenizer, config, decoder)
    try:
        # the options as given (and the seed drawn), which api.generate makes this config
        # of: a LLaDA 2.x checkpoint's prompts of unequal lengths modulo its blocks decode in
        # groups, steps not given fitted to each group's blocks as each prompt alone
        options = {**given, **({} if config.seed is None else {"seed": config.seed})}
        out = api.generate(loaded, prompts, config=options, n=args.n, template=template,
                           system=args.system, step_callback=live, draft=draft,
                           stop=args.stop)
    finally:
        if live is not None:
            live.close(clear=True)
    # the ids returned, each row's through its EOS or stop (api.Generation.n_tokens, the
    # server's usage), and those decoded: an identical greedy row is decoded once
    n_tokens, decoded, tokens_per_s = out.n_tokens, out.decoded_tokens, out.tokens_per_s

    if args.json:
        result: dict[str, Any] = {
            "results": [
                {"prompt": p, "choice": k % args.n, "text": t, "tokens": ids,
                 "filled_prompt": shown, "steps": cfg.steps}  # its own run's (groups)
                for k, (p, t, ids, shown, cfg) in enumerate(zip(
                    [p for p in prompts for _ in range(args.n)], out.texts, out.ids,
                    out.prompts, out.configs, strict=True))
            ],
            "decoder": out.decoder,
            "nfe": out.nfe,
            "steps": out.steps,
            "seconds": round(out.seconds, 4),
            "n_tokens": n_tokens,  # each row's through EOS or stop: the server's usage
            "decoded_tokens": decoded,  # less the copies of identical rows: tokens_per_s's
            "tokens_per_s": round(tokens_per_s, 2),
            "dtype": api.weights_dtype(loaded),
            "config": dataclasses.asdict(out.config),  # the options that ran (seeded above)
        }
        if hasattr(out.result, "acceptance_stats"):  # speculative, hybrid: drafts and forwards
            result.update(out.result.acceptance_stats())
        if args.stop:
            result["stop"] = args.stop
        if draft is not None:
            result["drafter_dtype"] = api.weights_dtype(draft)
        print(json_text(result))
        return 0
    for i, text in enumerate(out.texts):
        if len(out.texts) > 1:
            print(f"--- [{i}]")
        # a reply, or the prompt (as it ended: its [MASK]s filled) and its continuation
        print(shown_text(text if template is not None else out.prompts[i] + text))
    how = f"decoder {out.decoder}"
    # the commit loop's parallelism: positions committed per step (EOS filled after EOS too)
    per_step = positions_per_step(out.result)
    if out.decoder in ("llada", "bd3lm"):  # the commit loop: which policy and cache ran
        how += "".join(f", {name} {value}" for name, value, default in (
            ("policy", config.policy, "llada"), ("cache", config.cache, "none"))
            if value != default)  # fmt: skip
        how += f", {per_step:.2f} tokens/step"
    once = f" ({decoded} decoded: identical texts decoded once)" if decoded != n_tokens else ""
    print(
        f"{plural(n_tokens, 'token')}{once}, {plural(out.steps, 'step')}, {out.nfe} NFE in "
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


def positions_per_step(result: Any) -> float:
    """The commit loop's parallelism: the positions of the generation region the run's steps
    decoded, per running row per step (``decoded_work``); the EOS a diffusion decoder fills
    after EOS counts (it was committed)."""
    positions, row_steps = decoded_work(result)
    return positions / max(row_steps, 1)


def decoded_work(result: Any) -> tuple[int, int]:
    """The positions of the generation region that ``result``'s steps decoded, over all its
    rows, and the row-steps that decoded them (each run's rows × its steps): in a run in
    segments each segment's own region and rows (``result.segments``: a row that ended in an
    earlier segment holds padding in the later ones, which no step wrote, and takes no part
    in their steps), in rows run apart or in groups each run's own (``result.runs``: a run
    that stopped early is padded to the widest). Counting padding over all rows and steps
    said 25 tokens/step for a BD3-LM run that ended in its first segment of 20, 0.83 for a
    LLaDA run of one token a step whose rows ended in different segments. A commit loop that
    stopped after every row's EOS (``ended_at``) decoded the columns before it alone."""
    parts = getattr(result, "runs", None) or getattr(result, "segments", None)
    if parts:
        counts = [decoded_work(part) for part in parts]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
    start, end = result.region
    if getattr(result, "ended_at", None) is not None:  # stopped after every row's EOS
        end = min(end, result.ended_at)
    rows = len(result.tokens)
    return rows * (end - start), rows * result.steps


def _distilled(model: str) -> bool:
    """Whether the checkpoint at ``model`` was trained by ``unmask distill`` (its trainer
    state names objective ``distill``)."""
    from unmask.checkpoint import checkpoint_dir

    try:
        meta = read_json(checkpoint_dir(model) / "trainer.json")
    except (UserError, OSError):  # missing, not UTF-8, not a JSON object: all UserErrors
        return False
    return meta.get("objective") == "distill"
