"""``unmask distill``: certainty-forcing trajectory distillation of a diffusion checkpoint.

Trajectory flags come from ``unmask.distill.TrajectoryConfig``, training flags from
``TrainConfig`` (those that apply to a fine-tune of the teacher), with the defaults of
``unmask.distill.DISTILL_DEFAULTS``. ``--resume`` continues a run with its saved plan, like
``unmask train --resume``. Library code: ``unmask.distill``; docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from unmask.commands import (
    add_dataclass_flags,
    add_no_progress_flag,
    dataclass_from_args,
    given_fields,
    model_choice,
)
from unmask.config import PARALLEL_MODES, PRECISIONS, TrainConfig
from unmask.distill import DISTILL_DEFAULTS, TrajectoryConfig
from unmask.errors import UserError
from unmask.train_guards import EXIT_CODES

_TRAIN_SKIP = (
    "data", "init", "objective", "preset", "seq_len", "block_size", "fim_rate", "empty_rate",
    "sedd_graph", "schedule", "chat_template", "random_length_frac", "antithetic", "eps",
    "model_overrides", "eval_every", "eval_batches", "heldout_data", "heldout_seq_len",
    "keep_best", "latent_len",
)  # fmt: skip
"""TrainConfig fields that a distillation run fixes (teacher, trajectories) or has no use for
(``keep_best``: trajectories have no validation split; ``latent_len``: latent objectives)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill a diffusion model on its own trajectories to decode in parallel",
        description=(
            "Certainty-forcing trajectory distillation (dParallel): the teacher (an mdlm, sft "
            "or bd3lm checkpoint) decodes prompts of a prepared corpus one token per step; the "
            "trajectories are cached next to the run (OUT.trajectories.safetensors); then a "
            "student initialised from the teacher learns, from partially decoded states, to "
            "predict the final tokens and to be certain where it is right, so parallel "
            "policies (--policy threshold) commit many tokens per step. An autoregressive "
            "teacher (ar) with --student DIFFUSION_CKPT and --distill-window K trains that "
            "student to draft the teacher's next K tokens in one forward, for speculative "
            "decoding (unmask generate --model TEACHER --draft OUT); with a causal --student "
            "(the teacher itself) and --draft-block K, the student becomes a one-model hybrid "
            "that drafts the teacher's own continuations (unmask generate --model OUT). "
            "See docs/training.md."
        ),
        epilog=EXIT_CODES,
    )
    p.add_argument(
        "--teacher",
        metavar="PATH",
        type=model_choice,
        help="checkpoint to distill (run directory or "
        "checkpoint folder of an mdlm, sft or bd3lm model; or of an ar model with --student)",
    )
    p.add_argument(
        "--student",
        metavar="PATH",
        type=model_choice,
        help="the checkpoint the student starts from (default: the teacher); needed for an "
        "autoregressive teacher: a diffusion one (mdlm, sft, bd3lm; the teacher's tokenizer) "
        "becomes its drafter, a causal one (the teacher itself, or a hybrid of it) a "
        "one-model hybrid with draft blocks of --draft-block tokens",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="prepared corpus (unmask prepare) whose train split gives the prompts",
    )
    p.add_argument(
        "--trajectory-file", "--cache",
        metavar="FILE", dest="trajectory_file", action=_Spelled,
        help="trajectory file to make, extend or reuse (default: OUT.trajectories.safetensors "
        "next to the run directory, made again when its settings differ; a file named here "
        "made with other settings is refused, not overwritten); --cache is its older "
        "spelling, kept for scripts (the teacher's KV cache, generate's --cache, is "
        "--traj-cache here)",
    )  # fmt: skip
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint, with its saved settings "
        "(flags given now change them, e.g. --steps)",
    )
    add_no_progress_flag(p)
    add_dataclass_flags(p, TrajectoryConfig)
    add_dataclass_flags(p, TrainConfig, skip=_TRAIN_SKIP,  # the choices as unmask train shows them
                        choices={"parallel": PARALLEL_MODES, "precision": PRECISIONS})
    _show_distill_defaults(p)
    for action in p._actions:  # training's flag; generate's --compile NAME is the decoder's
        if action.dest == "compile":
            action.help = _COMPILE_HELP
    p.set_defaults(func=run, model_given_as="the model to distill is --teacher {model}")


class _Spelled(argparse.Action):
    """Stores the value and the spelling typed (``args.trajectory_file_flag``), so a refusal
    names the flag as the user wrote it (``--trajectory-file`` or its older ``--cache``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.trajectory_file_flag = option_string


_COMPILE_HELP = (
    "torch.compile every block of the student's training step, as unmask train --compile "
    "(first steps pay the compile); the teacher decodes its trajectories with its recommended "
    "options, not compiled by this flag (unlike generate --compile NAME)"
)


def _show_distill_defaults(p: argparse.ArgumentParser) -> None:
    """The help of a training flag states the distillation default, not ``unmask train``'s."""
    base = TrainConfig()
    for action in p._actions:
        name = action.dest
        if name in _TRAIN_SKIP or not hasattr(base, name) or action.help is None:
            continue
        ours, theirs = getattr(DISTILL_DEFAULTS, name), getattr(base, name)
        if ours != theirs:
            shown = f"(default: {ours})"
            help_ = re.sub(r"\(default: [^)]*\)$", shown, action.help)
            action.help = help_ if help_ != action.help else f"{action.help} {shown}"


def _flag(name: str, value: Any) -> str:
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def _resume(args: argparse.Namespace) -> Path:
    from unmask.distill import default_cache, rows_named
    from unmask.train import load_train_config, train

    if not args.out:
        raise UserError("--resume needs --out RUN, the run to continue")
    if (args.teacher or args.student or args.data or args.trajectory_file
            or given_fields(TrajectoryConfig, args)):
        raise UserError(
            "--resume continues the run on its saved trajectories; --teacher, --student, "
            "--data, --trajectory-file and trajectory flags start a new one"
        )
    saved = Path(args.out) / "train_config.json"
    if not saved.is_file():
        cache = default_cache(args.out)
        hint = (f"; its trajectories were being decoded into {cache}: run the same "
                "`unmask distill` command again (without --resume) to continue them"
                if cache.is_file() else "")
        raise UserError(f"{args.out}: nothing to resume (no train_config.json in it){hint}")
    cfg = load_train_config(saved)
    from unmask.objectives import objective_spec

    if objective_spec(cfg.objective).batch_for(cfg.data) != "trajectory":
        raise UserError(
            f"{args.out}: not a distillation run (objective {cfg.objective!r}); "
            "resume it with unmask train --resume"
        )
    from unmask.train_guards import resumed_config  # threads, device: this command's

    cfg = resumed_config(cfg, given_fields(TrainConfig, args))
    with rows_named():  # its seq_len is prompt + generation, as when it started
        return train(cfg, resume=True, progress=not args.no_progress, name_setting=_flag)


def _check_corpus(teacher: str, data: str) -> None:
    """The corpus' prompts are token ids of the teacher's tokenizer, checked from the
    checkpoint's ``tokenizer.json`` before the teacher is loaded
    (``unmask.distill.check_corpus_tokenizer``; ``refresh_trajectories`` checks a publisher's
    folder, from its config and tokenizer). Missing folders are left to ``distill``, which
    says what is wrong with them."""
    from unmask.checkpoint import checkpoint_dir, native_parts
    from unmask.convert.load import is_publisher_folder
    from unmask.distill import check_corpus_tokenizer

    if is_publisher_folder(teacher):
        return
    ckpt = checkpoint_dir(teacher)
    if not (ckpt / "tokenizer.json").is_file():
        return
    theirs = native_parts(teacher)[2]  # with the special ids its config.json names, as load
    check_corpus_tokenizer(theirs, data, ckpt / "tokenizer.json")


def _check_trajectory_file(path: str | None) -> None:
    """A KV cache's name given as the trajectory file (``--cache dual``, as ``unmask generate``
    takes it) is one line naming ``--traj-cache``; it made a trajectory file called ``dual``."""
    from unmask.sampling.cache import CACHES

    if path in CACHES and not Path(path).exists():
        raise UserError(
            f"--trajectory-file {path}: names the trajectory file to make or reuse (a "
            f".safetensors path); the teacher's KV cache is --traj-cache {path}"
        )


def run(args: argparse.Namespace) -> int:
    """``unmask distill``; a refusal names the trajectory file's flag as typed (``--cache`` is
    ``--trajectory-file``'s older spelling)."""
    typed = getattr(args, "trajectory_file_flag", None)
    try:
        return _run(args)
    except UserError as e:
        if typed is None or typed == "--trajectory-file":
            raise
        raise UserError(str(e).replace("--trajectory-file", typed)) from None


def _run(args: argparse.Namespace) -> int:
    from unmask.distill import distill
    from unmask.run_checks import check_out, check_train_numbers
    from unmask.train_guards import TrainingStopped, own_run, resume_hint, time_limit_exit

    first = os.environ.get("RANK", "0") == "0"  # says it once under torchrun, not per process
    try:
        if args.resume:
            run_dir = _resume(args)
        else:
            if not args.teacher:
                raise UserError("no teacher given (--teacher CHECKPOINT)")
            if not args.data:
                raise UserError("no corpus given (--data DIR from `unmask prepare`)")
            if not args.out:
                raise UserError("no run directory given (--out DIR)")
            _check_trajectory_file(args.trajectory_file)
            train_config = dataclass_from_args(TrainConfig, args, base=DISTILL_DEFAULTS)
            check_train_numbers(train_config)
            check_out(args.out)
            if Path(args.data).is_dir() and (Path(args.data) / "index.json").is_file():
                _check_corpus(args.teacher, args.data)
            # held by rank 0 before anything in it is cleared or decoded, a second distill on
            # it refused; no folder left by a run that never saved (the train inside: the same)
            with own_run(args.out, new=True, main=first):
                run_dir = distill(
                    args.teacher, args.data, args.out, student=args.student,
                    trajectories=dataclass_from_args(TrajectoryConfig, args),
                    train_config=train_config,
                    cache=args.trajectory_file, progress=not args.no_progress,
                )  # fmt: skip
    except TrainingStopped as e:
        if first:
            print(f"unmask distill: {e}{resume_hint(e, 'distill')}", file=sys.stderr)
        return e.exit_code
    if first:
        print(f"checkpoint: {run_dir}/checkpoint")
    return time_limit_exit(Path(run_dir), "distill", say=first)
