"""``unmask eval RUN``: what a run did and how good its model is.

Reports, for a run directory or checkpoint folder: the training summary from
``metrics.jsonl``; the held-out ELBO bound and bits per byte on the run's validation split
(the same computation as training's ``val_bpb``); the generative perplexity of sampled
continuations when the offline scorer is installed (``unmask.scoring``), with their
unigram entropy; a loss-curve PNG written next to the run (matplotlib); with ``--tasks``,
lm-evaluation-harness tasks (``unmask.lm_eval``: its flags are lm-eval's); with
``--task-file``, the solve rate on planning / reversal items (``unmask.tasks``); with ``--gaps``,
infill exact match on a gap set (``unmask.gapset``). A part that
cannot be measured says so in one line and the rest still prints. Library code:
``unmask.report``; docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from unmask.commands import (
    add_json_flag,
    add_runtime_flags,
    add_seed_flag,
    given_fields,
    model_choice,
)
from unmask.commands.generate import add_sample_flags, sample_config_from_args
from unmask.errors import UserError, refuse
from unmask.messages import plural


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="report a run: held-out bound, bits per byte, generative perplexity, loss curve",
        description=(
            "Report a training run (or a checkpoint): its training summary from metrics.jsonl, "
            "the held-out ELBO bound and bits per byte on the run's validation split (as "
            "training computes val_bpb), the generative perplexity of sampled continuations "
            "of held-out prompts under the offline reference model when it is installed "
            "(docs/evaluation.md), and a loss-curve PNG written into the run directory."
        ),
    )
    p.add_argument("run", metavar="RUN", type=model_choice,
                   help="run directory or checkpoint folder")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="prepared dataset whose validation split to use (default: the run's; for the "
        "shipped demo, its own held-out text)",
    )
    p.add_argument(
        "--batches",
        type=int,
        default=None,
        metavar="N",
        help="validation batches (default: the run's eval_batches, so the number "
        "matches its logged val_bpb; 0 = the whole split)",
    )
    p.add_argument(
        "--noise-draws",
        type=int,
        default=None,
        metavar="K",
        help="average the diffusion bound over K noise draws and print its standard error "
        "(default 1, as training logs it; one draw moves by ~0.02 bits/byte on 32k tokens)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        metavar="N",
        help="window length of the held-out bound (default: the run's seq_len; 128, or less "
        "for a shorter context, for a checkpoint without a run)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="continuations sampled for the generative perplexity (default: 8)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        metavar="N",
        help="held-out tokens each sample continues (default: 8)",
    )
    p.add_argument(
        "--no-score",
        action="store_true",
        help="skip the generative perplexity (loading the scorer takes ~20 s)",
    )
    p.add_argument(
        "--plot", metavar="FILE", help="where to write the loss curve (default: RUN/loss_curve.png)"
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the loss curve")
    g = p.add_argument_group("lm-evaluation-harness (needs lm-eval: pip install lm-eval)")
    g.add_argument(
        "--tasks",
        metavar="LIST",
        help="comma-separated lm-eval tasks, groups or tags to run (e.g. "
        "arc_easy,lambada_openai); the datasets must be local or cached: "
        "unmask never downloads",
    )
    g.add_argument(
        "--num-fewshot",
        type=int,
        metavar="N",
        help="few-shot examples per prompt (default: each task's own)",
    )
    g.add_argument(
        "--limit",
        type=float,
        metavar="X",
        help="items per task (a whole number; a fraction of the task when below 1)",
    )
    g.add_argument("--include-path", metavar="DIR", help="a folder of extra task YAML files")
    g.add_argument(
        "--output-path",
        metavar="DIR",
        help="write lm-eval's results JSON there, as lm-eval's CLI does",
    )
    g.add_argument(
        "--log-samples",
        action="store_true",
        help="with --output-path, also write every item's prompt and answers",
    )
    g.add_argument(
        "--mc-samples",
        type=int,
        default=None,
        metavar="N",
        help="Monte Carlo samples per diffusion log-likelihood (default: "
        "unmask.evaluate.DEFAULT_MC_SAMPLES, 64; at most 1,048,576); causal models are exact",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="rows per forward pass (default: 16)",
    )
    g.add_argument(
        "--no-greedy-check",
        action="store_true",
        help="do not decode each continuation greedily for lm-eval's is_greedy (diffusion "
        "models: one forward per continuation token; skipped by itself where no task reads "
        "it, as a multiple-choice task scored by lm-eval's own acc)",
    )
    p.add_argument(
        "--task-file",
        metavar="FILE",
        help="an eval.jsonl of `python -m unmask.tasks` (or its folder): decode each "
        "item and report the solve rate (docs/evaluation.md)",
    )
    p.add_argument(
        "--gaps",
        metavar="FILE",
        help="a gap set (JSONL of prefix/middle/suffix; benchmarks/infill.py --write-gaps "
        "makes one): fill each gap with its true length and report the exact match "
        "(docs/evaluation.md)",
    )
    add_seed_flag(p, what="sampling", default=0)
    add_sample_flags(p)
    add_json_flag(p, what="the report's numbers, the notes and the sampled texts")
    add_runtime_flags(p)
    p.set_defaults(func=run, check_flags=check_flags,
                   model_given_as="the run or checkpoint is eval's first word: unmask eval "
                                  "{model}")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch (the command line runs it before torch loads: such a
    line took seconds), the flags that are wrong whatever the run (``_counts``, ``--plot``),
    and a RUN, ``--data``, ``--task-file`` or ``--gaps`` that is not there, each in the line
    that reading it says. The checks that need the run or the model follow in ``run``."""
    from unmask.flag_checks import missing_dataset
    from unmask.folders import missing_model

    _counts(args)
    if args.plot is not None:
        plot = Path(args.plot)
        if plot.suffix.lower() != ".png":
            raise UserError(f"--plot {args.plot}: the loss curve is a PNG; give a FILE.png")
        if not plot.parent.is_dir():
            raise UserError(f"--plot {args.plot}: no folder {plot.parent} to write it in")
    sample_config_from_args(args)  # what SampleConfig refuses (--temperature -1, ...)
    if args.task_file is not None and not os.path.exists(args.task_file):
        from unmask.tasks import read_items

        read_items(args.task_file)  # its refusal (a file there is read in run, once)
    if args.gaps is not None and not args.gaps.strip():  # Path("") is the current folder:
        # it read "--gaps : a folder, not a gap set"
        raise UserError("--gaps is empty: give a gap set (a JSONL of prefix/middle/suffix)")
    if args.gaps is not None and not Path(args.gaps).is_file():  # a folder is named one
        what = "a folder, not a" if Path(args.gaps).is_dir() else "no such"
        raise UserError(f"--gaps {args.gaps}: {what} gap set (a JSONL of prefix/middle/suffix)")
    refuse(missing_model(args.run))
    if args.data is not None:
        refuse(missing_dataset(args.data))


SAMPLES, PROMPT_TOKENS = 8, 8
"""``--samples`` and ``--prompt-tokens`` when not given."""


DRAFTER_ONLY = ("draft_steps", "draft_cache")
"""The sampling flags that set a drafter's work: no use without ``--draft``, which eval has
not (``--draft-length`` and ``--draft-threshold`` also set a hybrid checkpoint's drafts)."""


def _no_drafter(args: argparse.Namespace) -> None:
    """Refuse ``--decoder speculative`` and the drafter's own flags in one line that says what
    to do: eval samples with no drafter (``--draft`` is ``unmask generate``'s, ``chat``'s and
    ``serve``'s), and the API's message named a Python argument."""
    given = [f for f in DRAFTER_ONLY if getattr(args, f, None) is not None]
    if getattr(args, "decoder", None) == "speculative":
        given.insert(0, "decoder speculative")
    if given:
        raise UserError(
            f"--{given[0].replace('_', '-')} needs a drafter (--draft CKPT of unmask generate, "
            "chat and serve), which unmask eval does not take: leave it out to sample a "
            "causal checkpoint with its own decoder (ar), whose text speculative decoding "
            "reproduces"
        )


def _counts(args: argparse.Namespace) -> None:
    """Refuse flag values that cannot work and flags that would go unused, before anything
    loads (``check_flags``)."""
    _no_drafter(args)
    for flag in ("samples", "prompt_tokens"):
        n = getattr(args, flag)
        if n is not None and n < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {n}")
    if args.noise_draws is not None and args.noise_draws < 1:
        raise UserError(f"--noise-draws must be at least 1, got {args.noise_draws}")
    if args.seq_len is not None and args.seq_len < 1:
        raise UserError(f"--seq-len must be at least 1, got {args.seq_len}")
    if args.batches is not None and args.batches < 0:
        raise UserError(f"--batches must be 0 (the whole split) or more, got {args.batches}")
    from unmask.flag_checks import check_limit, check_mc_samples_count

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.mc_samples is not None:  # a typo of 10**11 ran the rest of the report first
        check_mc_samples_count(args.mc_samples, "--mc-samples")
    check_limit(args.limit, "--limit")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UserError(f"--num-fewshot must be 0 or more, got {args.num_fewshot}")
    if args.tasks is not None and not _task_names(args.tasks):
        raise UserError(f"--tasks {args.tasks!r} names no task; give a comma-separated list")
    lm_flags = ("num_fewshot", "limit", "include_path", "output_path", "mc_samples",
                "batch_size")
    stray = [f for f in lm_flags if getattr(args, f) is not None] + [
        f for f in ("log_samples", "no_greedy_check") if getattr(args, f)
    ]
    if stray and not args.tasks:
        raise UserError(f"--{stray[0].replace('_', '-')} applies to lm-eval tasks: give --tasks")
    if args.log_samples and args.output_path is None:  # lm-eval's CLI refuses it too
        raise UserError("--log-samples writes every item's prompt and answers under "
                        "--output-path DIR: give it (without, nothing was written)")
    if args.plot is not None and args.no_plot:
        raise UserError("--plot FILE and --no-plot: give one of them")
    if args.no_score:  # flags of the samples that will not be drawn are not ignored
        from unmask.config import SampleConfig

        unused = [f for f in ("samples", "prompt_tokens") if getattr(args, f) is not None]
        if not (args.task_file or args.gaps or args.tasks):
            unused += [f for f in given_fields(SampleConfig, args) if f != "seed"]
        if unused:
            flag = "--" + unused[0].replace("_", "-")
            if unused[0] in ("samples", "prompt_tokens"):
                raise UserError(f"{flag} applies to the generative perplexity, which --no-score "
                                "skips")
            raise UserError(f"{flag} sets how text is sampled: for the generative perplexity "
                            "(which --no-score skips), --task-file, --gaps or --tasks")


def _check_seq_len(config: Any, seq_len: int) -> None:
    """Refuse a ``--seq-len`` the model cannot be measured with: longer than its context, one
    token for a causal model (no next token to predict), not whole blocks of a block-causal
    (bd3lm) model, shorter than a hybrid model's rows (its draft block + 2), other than the
    window a latent model's autoencoder compresses."""
    window = getattr(config, "latent_window", None)
    if window is not None and seq_len != window:  # its layout adds slots: a longer one crashed
        raise UserError(f"--seq-len {seq_len}: this latent model's autoencoder compresses "
                        f"windows of {window} tokens; give {window} or leave --seq-len out")
    draft = getattr(config, "draft_block", None)
    if getattr(config, "objective", None) == "hybrid" and draft and seq_len < draft + 2:
        raise UserError(f"--seq-len {seq_len} is shorter than this hybrid model's rows: its "
                        f"draft block ({draft}) + 2 = {draft + 2} tokens or more")
    if seq_len > config.max_seq_len:
        raise UserError(f"--seq-len {seq_len} is longer than the model's context "
                        f"({config.max_seq_len})")
    block = getattr(config, "block_size", None)
    if getattr(config, "attention", None) == "block-causal" and block and seq_len % block:
        lo, hi = seq_len // block * block, -(-seq_len // block) * block
        near = " or ".join(str(n) for n in (lo, hi) if 0 < n <= config.max_seq_len)
        raise UserError(f"--seq-len {seq_len} is not a multiple of the model's block size "
                        f"({block}); try {near}")
    if seq_len < 2 and getattr(config, "attention", None) == "causal":
        raise UserError(f"--seq-len must be at least 2 for a causal model (each token is "
                        f"predicted from the ones before it), got {seq_len}")
    if seq_len < 2 and getattr(config, "logit_shift", False):  # it was a note, exit 0
        raise UserError(f"--seq-len must be at least 2 for a Dream-style model (logit_shift: "
                        f"no logits predict a window's first token), got {seq_len}")


def _no_bound(cfg: Any, data: str | None) -> str | None:
    """Why the held-out bound of a run with training configuration ``cfg`` (None: a bare
    checkpoint) cannot be measured on ``data``, its dataset, without ``--data``; None when
    it can."""
    if cfg is None:
        return "the checkpoint has no training configuration (give --data DIR)"
    if data and Path(data).is_file():
        return (f"the run trained on {data} (pairs or trajectories, no validation split); "
                "give --data DIR, a prepared corpus of its tokenizer")
    if not data or not (Path(data) / "index.json").is_file():
        return f"the run's dataset {data or '(none)'} is not here (give --data DIR)"
    return None


def _fit_gen_length(
    loaded: Any, facts: Any, config: Any, given: dict[str, Any], prompt_tokens: int
) -> Any:
    """The generative-perplexity ``config`` with room beside its prompts of ``prompt_tokens``
    (``room_after_prompt`` after ``ModelFacts.prompt_columns``: an empty prompt's start token
    counted, whole blocks of a block-diffusion model as its decoder writes them, bd3lm's
    padded prompt or LLaDA 2.x's absolute layout): a gen_length not given (the checkpoint's
    or the default 64) shrinks to the room the context leaves; a given one that does not fit
    is a ``UserError`` naming the room. ``facts``: the checkpoint's (``api.facts_of``). A
    ``steps`` or ``block_length`` given at the gen length that a causal decoder counts as not
    given (``option_given``) shrinks with it."""
    from unmask.api import choose, sample_config
    from unmask.sampling.blocks import absolute_blocks, room_after_prompt

    limit = facts.max_seq_len
    if not limit or config.segment_length is not None:  # segments: any length fits
        return config
    decoder = choose(loaded, config)
    room = room_after_prompt(facts.prompt_columns(prompt_tokens, decoder), limit,
                             block_size=facts.block_size, absolute=absolute_blocks(loaded))
    assert room is not None  # the limit is known
    if config.gen_length <= room:
        return config
    if room < 1:
        raise UserError(f"--prompt-tokens {prompt_tokens} leaves no room to generate in the "
                        f"model's context ({limit} tokens); give fewer, or --no-score")
    if "gen_length" in given:
        raise UserError(f"--gen-length {config.gen_length} after --prompt-tokens {prompt_tokens} "
                        f"does not fit the model's context ({limit} tokens); use --gen-length "
                        f"{room} or less, fewer --prompt-tokens, or --no-score")
    given = _unused_at_length(given, decoder, config.gen_length)
    return sample_config(loaded, {**given, "gen_length": room}, prompt_lengths=[prompt_tokens])


def _unused_at_length(given: dict[str, Any], decoder: str, length: int) -> dict[str, Any]:
    """``given`` without a ``steps`` or ``block_length`` at ``length`` (the gen length the flags
    were checked at) that ``decoder`` takes no part of (a causal model's): counted as not given
    there (``option_given``: one step a token, one block), so also where eval sizes the gen
    length itself (a prompt's room, a task's answers), where it was refused ("does not
    apply"), 64 no longer the length."""
    from unmask.sampling import DECODERS

    unused = DECODERS[decoder].unused
    return {k: v for k, v in given.items()
            if not (k in ("steps", "block_length") and k in unused and v == length)}


def _prompt_tokens(data: str | None, wanted: int) -> int:
    """The prompt length the generative-perplexity samples will have: ``wanted`` tokens of
    held-out text, or none (unconditional samples) where ``data`` has no validation split
    that long inside one document (``report.validation_prompts``)."""
    if not data or not (Path(data) / "index.json").is_file():
        return 0
    from unmask.report import validation_prompts

    return wanted if validation_prompts(data, n=1, length=wanted) else 0


def _no_prompts(data: str | None, wanted: int) -> str:
    """Why no sample has a held-out prompt of ``wanted`` tokens: no validation split, one
    shorter than that (it read "no held-out text" there too), or no document in it that
    long (``report.validation_documents``)."""
    if data and (Path(data) / "index.json").is_file():
        from unmask.data import TokenDataset
        from unmask.report import validation_documents

        n = len(TokenDataset(data, "val"))
        longest = int(validation_documents(data)[1].max(initial=0)) if n >= wanted else 0
        if longest:  # a prompt may not run from one document into the next
            return (f"no document of the validation split holds {wanted} tokens (the longest "
                    f"holds {longest:,}; give --prompt-tokens {longest} or fewer)")
        if n >= wanted:
            return "the validation split holds no text between its separators"
        if n:
            return (f"the validation split holds {n:,} tokens, fewer than --prompt-tokens "
                    f"{wanted}")
    return "no held-out text"


def _task_names(tasks: str) -> list[str]:
    """The names of a comma-separated ``--tasks`` list, blanks dropped."""
    return [t.strip() for t in tasks.split(",") if t.strip()]


def _plot(report: Any, summary: Any, path: Path, *, given: bool) -> None:
    """Draw the loss curve at ``path`` (``given``: by ``--plot``), or a note why not. A run
    folder that cannot be written in (another user's run, a read-only mount) is a note: the
    report still prints (it was the whole command's error, naming a hidden temp file where
    ``loss_curve.png`` was a folder); a ``--plot FILE`` that cannot be written is an error."""
    from unmask.report import PLOT_INSTALL, plot_loss_curve

    try:
        report.plot = str(plot_loss_curve(summary, path, title=report.run or ""))
    except ImportError:
        report.notes.append(f"loss curve: not drawn, matplotlib is not installed ({PLOT_INSTALL})")
    except OSError as e:
        why = e.strerror or str(e)
        if given:
            raise UserError(
                f"--plot {path}: the loss curve cannot be written there ({why})"
            ) from None
        report.notes.append(f"loss curve: not drawn, {path} cannot be written ({why}); "
                            "--plot FILE writes it elsewhere")


def run(args: argparse.Namespace) -> int:
    from unmask.files import require_stdout

    require_stdout("the evaluation report")  # print() would drop it (`>&-`), after the run
    with contextlib.ExitStack() as stack:  # the demo's held-out text, prepared for this run
        return _run(args, stack)


def _demo_data(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    """The shipped demo's held-out text (``report.demo_heldout``) as ``args.data``: prepared
    once, into a temporary folder ``stack`` removes when the command ends (Ctrl-C too)."""
    if args.data is None:
        import tempfile

        from unmask.report import demo_heldout

        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="unmask-eval-"))
        args.data = str(demo_heldout(Path(folder) / "heldout"))
    return args.data


def _run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    from unmask import api
    from unmask.checkpoint import load
    from unmask.config import SampleConfig, TrainConfig, resolve_device
    from unmask.report import (
        PLOT_NAME,
        RunReport,
        cpu_bf16_note,
        find_run,
        has_demo_heldout,
        heldout_bound,
        read_metrics,
        summarize_training,
    )

    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    args.samples = SAMPLES if args.samples is None else args.samples
    args.prompt_tokens = PROMPT_TOKENS if args.prompt_tokens is None else args.prompt_tokens
    config = sample_config_from_args(args)
    items = None
    if args.task_file is not None:
        from unmask.tasks import read_items

        items = read_items(args.task_file)  # a bad file fails before the model loads
    if args.tasks:
        _check_lm_eval()
    info = find_run(args.run)
    cfg = info.train_config
    if args.data is not None:
        _check_data(args.data)
    # the shipped demo has no run, but its held-out text ships with it: measured there,
    # prepared (~5 s) by _demo_data once the checks that need none of it have passed
    demo_data = args.data is None and cfg is None and has_demo_heldout(info.checkpoint)
    data = args.data or ((cfg.heldout_data or cfg.data) if cfg else None)
    no_bound = None if args.data or demo_data else _no_bound(cfg, data)
    bound_flags = [f for f in ("seq_len", "batches", "noise_draws") if getattr(args, f) is not None]
    if no_bound and bound_flags:  # a flag of the bound, which cannot be measured: not ignored
        flag = "--" + bound_flags[0].replace("_", "-")
        raise UserError(f"{flag} applies to the held-out bound, which cannot be measured: "
                        f"{no_bound}")
    report = RunReport(
        checkpoint=str(info.checkpoint),
        run=str(info.run) if info.run else None,
        step=info.step,
        objective=cfg.objective if cfg else None,
    )
    if demo_data:
        report.notes.append("held-out: the demo's own held-out text, the validation split of "
                            "its packaged corpus (unmask/assets) as its training data was "
                            "prepared (--data DIR for another)")
    if info.metrics_path is not None:
        summary = summarize_training(read_metrics(info.metrics_path))
        report.training = summary.as_dict()
        if not args.no_plot and info.run is not None:
            _plot(report, summary, Path(args.plot) if args.plot else info.run / PLOT_NAME,
                  given=args.plot is not None)
    elif not args.no_plot:
        report.notes.append("loss curve: not drawn, no metrics.jsonl (not a training run)")

    device = str(resolve_device(args.device or "auto"))
    loaded = load(info.checkpoint, device=device)
    model = loaded.model.eval()
    if no_bound is None and args.seq_len is not None:
        _check_seq_len(model.config, args.seq_len)
    from unmask.sampling.continuous import takes_no_prompt

    facts = api.facts_of(loaded)  # read once, for every part below
    unprompted = takes_no_prompt(facts)  # a latent-diffusion model samples whole windows
    gaps = None
    if args.gaps is not None:  # what cannot fill the gaps fails now, not after the rest
        from unmask.gapset import read_gap_set, refuse_unfillable

        api.refuse_continuous(loaded, "eval --gaps")  # gap sets are filled by the commit loop
        refuse_unfillable(model.config)
        gaps = read_gap_set(args.gaps, loaded.tokenizer)
    if items is not None and unprompted:
        raise UserError("eval --task-file decodes each item's answer after its prompt; a "
                        "latent-diffusion model takes no prompt (it samples whole windows)")
    manager = None
    tasks: list[str] = []
    if args.tasks:  # a model no lm-eval task can run on, an unknown task: now, not after the rest
        from unmask.lm_eval import (
            check_output_path,
            check_seed,
            find_tasks,
            loglikelihood_refusal,
            refuse_unprompted,
            scoring_tasks,
        )

        check_seed(args.seed)
        refuse_unprompted(facts, "eval --tasks")
        tasks = _task_names(args.tasks)
        manager = find_tasks(tasks, args.include_path)
        if (refusal := loglikelihood_refusal(loaded, facts)) is not None:
            # its log-likelihood tasks are notes and the generation tasks run; with none of
            # those, one line before anything is measured
            scored = scoring_tasks(manager, tasks)
            if scored == tasks:
                raise UserError(f"--tasks {', '.join(tasks)}: {refusal}")
            report.notes.extend(f"lm-eval {name}: not measured, {refusal}" for name in scored)
            tasks = [name for name in tasks if name not in scored]
        # lm-eval only logs that it could not write there; made once the tasks are known (an
        # unknown one left the folders behind, empty)
        if args.output_path is not None:
            check_output_path(args.output_path)
    # samples are drawn as `unmask generate` draws them: flags not given take the
    # checkpoint's recommended sampling options (sample_defaults)
    given = given_fields(SampleConfig, args)
    config = api.sample_config(loaded, given)
    task = None
    if items is not None:  # a --gen-length that would cut the task's answers fails now
        from unmask.tasks.score import task_config

        task = task_config(loaded, items, _unused_at_length(
            given, api.choose(loaded, config), config.gen_length))
    score = not args.no_score
    if score and (cannot := _cannot_sample(loaded)) is not None:  # the rest still prints
        report.notes.append(f"generative perplexity: not measured, {cannot}")
        score = False
    if score:  # before the slow parts: sampling flags the decoder refuses fail now
        if getattr(model.config, "attention", None) == "causal" and config.cfg_scale > 0:
            raise UserError("--cfg-scale applies to diffusion models; this checkpoint is "
                            "autoregressive (causal)")
        if demo_data and not unprompted:  # its prompts are held-out text
            data = _demo_data(args, stack)
        prompt_tokens = 0 if unprompted else _prompt_tokens(data, args.prompt_tokens)
        # steps not given fit the blocks the prompts span, as generate fits them (a checkpoint
        # whose blocks start at the prompt refused the steps nobody gave)
        config = api.sample_config(loaded, given, prompt_lengths=[prompt_tokens])
        decoder = api.choose(loaded, config)
        config = _fit_gen_length(loaded, facts, config, given, prompt_tokens)
    trained = getattr(model.config, "objective", None)
    if cfg is not None and trained and trained != cfg.objective:
        # a distilled student or an SFT model: trained by one objective, a model of another
        # (its checkpoint's), measured on a corpus as that one
        cfg = dataclasses.replace(cfg, objective=trained)
    if demo_data:  # the bound is measured next
        data = _demo_data(args, stack)
    if cfg is None and args.data:
        # an imported checkpoint: evaluate by the objective it records (sedd, bd3lm, ...),
        # else as its attention says
        causal = getattr(model.config, "attention", None) == "causal"
        # a latent model's windows are its autoencoder's: its layout adds slots after them
        window = getattr(model.config, "latent_window", None)
        cfg = TrainConfig(
            data=args.data,
            objective=trained or ("ar" if causal else "mdlm"),
            seq_len=window or min(TrainConfig().seq_len, model.config.max_seq_len),
        )
        report.objective = cfg.objective
    if no_bound is not None:
        report.notes.append(f"held-out bound: not measured, {no_bound}")
    else:
        from unmask.data import TokenDataset
        from unmask.tokenizer import reads_ids_of

        if not reads_ids_of(loaded.tokenizer, TokenDataset(data, "val").tokenizer()):
            raise UserError(f"--data {data}: tokenized by another tokenizer than the "
                            "checkpoint's; its held-out bound would mean nothing")
        if args.seq_len is not None:  # checked when the model loaded
            cfg = dataclasses.replace(cfg, seq_len=args.seq_len)
        elif cfg.heldout_seq_len:  # a distilled student: its teacher's windows
            seq_len = min(cfg.heldout_seq_len, model.config.max_seq_len)
            cfg = dataclasses.replace(cfg, seq_len=seq_len)
        try:
            res = heldout_bound(model, cfg, data=data, max_batches=args.batches, device=device,
                                noise_draws=args.noise_draws or 1, world=info.world_size)
            # no bound (res.likelihood False): ppl and bpb are NaN, null in --json, where every
            # family's report has the same keys
            report.heldout = {**dataclasses.asdict(res), "seq_len": cfg.seq_len}
            if note := cpu_bf16_note(cfg.precision, device):
                report.notes.append(note)
            if res.exact and (args.noise_draws or 1) > 1:  # said, not silently dropped
                report.notes.append(f"held-out: the likelihood of a causal model is exact, "
                                    f"drawn once (not {args.noise_draws} noise draws)")
        except UserError as e:
            report.notes.append(f"held-out bound: not measured, {e}")

    if score:
        _score(report, loaded, config, data, args, device, unprompted=unprompted,
               decoder=decoder)

    if items is not None:
        from unmask.tasks.score import score_items

        report.tasks = dataclasses.asdict(score_items(loaded, items, given=given, config=task))
    if gaps is not None:
        report.infill = _infill(loaded, args.gaps, gaps, given)
    if args.tasks:
        report.lm_eval = _lm_eval(loaded, args, tasks, given, manager)
        from unmask.lm_eval import SAMPLING_ARGS

        left = [f"--{f.replace('_', '-')}" for f in given if f not in (*SAMPLING_ARGS, "seed")]
        if left:  # they still set the other parts' sampling: dropped here without a word
            takes = ", ".join(f"--{f.replace('_', '-')}" for f in SAMPLING_ARGS)
            report.notes.append(f"lm-eval: {', '.join(left)} not applied to its generation "
                                f"tasks (its model takes {takes})")
        if args.mc_samples is not None and (report.lm_eval.get("unmask") or {}).get("exact"):
            report.notes.append(f"lm-eval: the log-likelihoods of a causal model are exact "
                                f"(--mc-samples {args.mc_samples} drew no samples)")

    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
    else:
        print("\n".join(report.lines()))
    return 0


def _infill(loaded: Any, path: str, samples: Any, given: dict[str, Any]) -> dict[str, Any]:
    """Infill exact match on ``samples``, the gap set read from ``path``
    (``unmask.gapset.infill_exact_match``): one token per step unless sampling flags were
    given, then those."""
    from unmask.config import SampleConfig
    from unmask.gapset import infill_exact_match

    config = SampleConfig(**given) if set(given) - {"seed"} else None
    score = infill_exact_match(loaded.model, loaded.tokenizer, samples, config=config)
    return {"gaps": path, **dataclasses.asdict(score)}


LM_EVAL_INSTALL = 'pip install lm-eval (or, in a source checkout, pip install -e ".[lm-eval]")'

def _check_lm_eval() -> None:
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(f"--tasks needs lm-evaluation-harness: {LM_EVAL_INSTALL}")


def _lm_eval(
    loaded: Any,
    args: argparse.Namespace,
    tasks: list[str],
    given: dict[str, Any],
    manager: Any = None,
) -> dict[str, Any]:
    """Run ``tasks`` (of ``--tasks``) through lm-eval (``unmask.lm_eval.run_tasks``;
    ``manager``: the tasks' ``find_tasks``) and keep what the report shows: the results,
    their config, the standard errors, seconds per item, the table."""
    import time

    from unmask.lm_eval import SAMPLING_ARGS, UnmaskLM, run_tasks

    sampling = {k: given[k] for k in SAMPLING_ARGS if k in given}
    extra = {"mc_samples": args.mc_samples} if args.mc_samples is not None else {}
    lm = UnmaskLM(
        args.run,
        loaded=loaded,
        batch_size=args.batch_size or 16,
        seed=args.seed,
        greedy_check=not args.no_greedy_check,
        **extra,
        **sampling,
    )
    t0 = time.perf_counter()
    res = run_tasks(
        lm,
        tasks,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        include_path=args.include_path,
        output_path=args.output_path,
        log_samples=args.log_samples,
        seed=args.seed,
        task_manager=manager,
    )
    seconds = time.perf_counter() - t0
    items = sum(int(n.get("effective", 0)) for n in res.get("n-samples", {}).values())
    cfg = res.get("config", {})
    keep = {
        k: res[k]
        for k in ("results", "groups", "n-samples", "versions", "unmask", "table")
        if k in res
    }
    model_seconds = lm.model_seconds
    return {
        **keep,
        "config": {k: cfg.get(k) for k in ("limit", "bootstrap_iters", "random_seed")}
        | {"num_fewshot": args.num_fewshot},
        "seconds": seconds,
        "items": items,
        # lm-eval's set-up (imports, task building, environment report) is not per item
        "seconds_per_item": model_seconds / items if items else None,
    }


def _score(
    report: Any,
    loaded: Any,
    config: Any,
    data: str | None,
    args: argparse.Namespace,
    device: str,
    *,
    unprompted: bool,
    decoder: str,
) -> None:
    """The generative perplexity part: a note instead when the scorer is not installed.
    ``unprompted``: the checkpoint takes no prompt (``takes_no_prompt``); ``decoder``: the
    one that samples (``api.choose``), whose penalties the report names at their defaults
    too, where it applies them (``registry.applies_penalties``)."""
    from unmask.report import decoding_options, sample_quality, validation_prompts
    from unmask.sampling.registry import applies_penalties
    from unmask.scoring import ReferenceScorer

    try:
        scorer = ReferenceScorer.from_smollm2(device=device)
    except UserError as e:
        report.notes.append(f"generative perplexity: not measured, {e}")
        return
    prompts: list[list[int]] = []
    if unprompted:
        report.notes.append("generative perplexity: a latent-diffusion model samples whole "
                            "windows from noise, so the samples are unconditional")
    elif data and (Path(data) / "index.json").is_file():
        prompts = validation_prompts(data, n=args.samples, length=args.prompt_tokens)
    if not prompts:
        if not unprompted:
            report.notes.append(f"generative perplexity: {_no_prompts(data, args.prompt_tokens)}"
                                ", samples are unconditional")
        prompts = [[] for _ in range(args.samples)]
    elif len(prompts) < args.samples:  # a prompt lies inside one document
        report.notes.append(
            f"generative perplexity: {plural(len(prompts), 'sample')} of --samples "
            f"{args.samples}, the validation split's documents hold only "
            f"{plural(len(prompts), 'prompt')} of {args.prompt_tokens} tokens (fewer "
            "--prompt-tokens find more)")
    q = sample_quality(
        loaded.tokenizer,
        prompts,
        sampler=_sampler(loaded, config, decoder),
        scorer=scorer,
        gen_length=config.gen_length,
        eos_id=getattr(loaded.model.config, "eos_id", None),
    )
    penalties = ("repetition_penalty", "presence_penalty", "frequency_penalty",
                 "no_repeat_ngram_size")
    report.sample_quality = {
        **dataclasses.asdict(q),
        "sampling": decoding_options(
            loaded, config, always=penalties if applies_penalties(decoder) else ()
        ),
    }


def _cannot_sample(loaded: Any) -> str | None:
    """Why the checkpoint samples no text with any options (stage 1 of latent diffusion, an
    autoencoder), or None: the decoder its own recommendation chooses refuses it."""
    from unmask.api import choose, sample_config

    try:
        choose(loaded, sample_config(loaded, {}))
    except UserError as e:
        return str(e)
    return None


SAMPLE_ROWS = 64
"""Generative-perplexity samples decoded at once: each is decoded as alone under its seed, so
the number changes nothing but the memory. Every sample was one batch, its memory growing
with ``--samples`` (the demo, 128 samples of 64 tokens: a peak of 661 MB against 329 MB in
chunks of 16; 64 samples of 32 tokens: 379 MB against 305 MB, the same texts)."""


def _sampler(loaded: Any, config: Any, decoder: str) -> Any:
    """Prompt ids -> the samples (``gen_ids``, ``texts(tokenizer)``), decoded as ``unmask
    generate`` decodes (``unmask.api``) by ``decoder`` (``api.choose``), sample i as its
    prompt decodes alone under ``sample_seed(config.seed, i)`` (``unmask.tasks.score.
    decode_each``: what ``unmask generate PROMPT --seed`` of that seed writes), ``SAMPLE_ROWS``
    at a time. One generator served the batch: at a temperature above 0 (SEDD at any) a
    sample's text changed with ``--samples``; and every sample was one batch."""
    from types import SimpleNamespace

    from unmask.sampling.protocol import decode_generations
    from unmask.tasks.score import decode_each

    def sample(ids: list[list[int]]) -> Any:
        # sample i under a seed of its own (under one seed every prompt drew the same noise,
        # and a barely trained model wrote one text for all of them), over all the samples,
        # so a chunk's are those of any other chunk size
        seeds = None if config.seed is None else [sample_seed(config.seed, i)
                                                  for i in range(len(ids))]
        rows = [row for lo in range(0, len(ids), SAMPLE_ROWS)
                for row in decode_each(loaded, ids[lo : lo + SAMPLE_ROWS], config, decoder,
                                       None if seeds is None else seeds[lo : lo + SAMPLE_ROWS])]
        gen = {id(r): r.gen_ids for r, _ in rows}  # a result's rows, listed once
        gen_ids = [gen[id(r)][k] for r, k in rows]
        eos = rows[0][0].eos_id if rows else None
        return SimpleNamespace(
            gen_ids=gen_ids, texts=lambda tok: decode_generations(gen_ids, tok, eos))

    return sample


def sample_seed(seed: int, i: int) -> int:
    """The seed gen ppl's sample ``i`` decodes under for ``--seed`` ``seed``: blake2b of ``i``
    keyed with the seed (as ``unmask.data`` draws its split), so it does not depend on how many
    samples are drawn and a sweep of seeds draws no sample twice (under ``seed + i``, sample i
    of --seed 6 was sample i + 1 of --seed 5: unprompted, the same text)."""
    import hashlib

    from unmask.config import MAX_SEED

    key = f"unmask-gen-ppl:{seed}".encode()
    h = hashlib.blake2b(i.to_bytes(8, "little"), key=key, digest_size=8).digest()
    return int.from_bytes(h, "big") % (MAX_SEED + 1)


def _check_data(data: str) -> None:
    """``--data``'s refusal, before the model loads, in ``unmask.data.read_index``'s words
    (``unmask train --data`` says the same): a checkpoint is named as one, a missing folder
    "no such folder", anything else "not a prepared dataset". eval had its own check and
    wording ("no prepared dataset here")."""
    from unmask.data import read_index
    from unmask.folders import checkpoint_given_for_data

    try:
        read_index(data)
    except UserError as e:
        if str(e) == checkpoint_given_for_data(data, flag=""):
            raise UserError(checkpoint_given_for_data(data)) from None
        raise
