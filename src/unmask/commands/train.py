"""``unmask train``: flags generated from ``TrainConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from unmask.commands import (
    add_dataclass_flags,
    add_no_progress_flag,
    dataclass_from_args,
    given_fields,
)
from unmask.config import (
    MODEL_PRESETS,
    OBJECTIVE_NAMES,
    PARALLEL_MODES,
    PRECISIONS,
    TrainConfig,
)
from unmask.errors import UserError, refuse
from unmask.train_guards import EXIT_CODES, resumed_config, run_above

_SKIP = {"model_overrides", "heldout_data", "heldout_seq_len"}  # the last two: unmask distill


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--model-set FIELD=VALUE`` items as a dict, each value JSON (else a string) of the
    field's type (``unmask.config.model_override_error``, as a config's ``model_overrides``)."""
    from unmask.config import check_objective_fields, model_override_error

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:  # `--model runs/x` is argparse's --model-set too (an abbreviation)
            from unmask.names import SHIPPED_MODELS

            model = os.path.isdir(item) or item.casefold() in SHIPPED_MODELS
            init = f"; a model to start from is --init {item}" if model else ""
            raise UserError(f"--model-set {item!r}: expected FIELD=VALUE{init}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        check_objective_fields({key: out[key]})
        problem = model_override_error(key, out[key])
        if problem:
            raise UserError(f"--model-set {item!r}: {problem}")
    return out


def _objectives() -> list[str]:
    """``--objective``'s names, read when the flag is given, without importing torch: the
    registry once imported (a program that registered its own, then parsed), else
    ``OBJECTIVE_NAMES`` (``registered_names``)."""
    from unmask.commands.sample_options import registered_names

    return registered_names("unmask.objectives", "OBJECTIVES", OBJECTIVE_NAMES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared dataset",
        description="Train a masked-diffusion (or autoregressive baseline) model on data from "
                    "'unmask prepare'.",
        epilog=EXIT_CODES,
    )
    p.add_argument("--config", metavar="FILE",
                   help="train_config.json to start from (flags override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint, with its saved settings; "
                   "flags given now change them (e.g. --steps to extend the run)")
    p.add_argument("--model-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field of the preset, e.g. --model-set d_model=384")
    add_no_progress_flag(p)
    add_dataclass_flags(p, TrainConfig, skip=_SKIP,
                        choices={"preset": list(MODEL_PRESETS), "objective": _objectives,
                                 "parallel": PARALLEL_MODES, "precision": PRECISIONS})
    p.set_defaults(func=run, check_flags=check_flags)


FILE_DATA = {"sft": "a JSONL file of prompt/response pairs or chat messages",
             "distill": "a trajectory file from `unmask distill`"}
"""The objectives whose ``--data`` is a file, not a folder from ``unmask prepare``, and
what they read."""


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch (the command line runs it before torch loads: such a
    line took seconds), the mistakes that need no model and no data read: ``--resume``
    without a run to continue, no ``--data``, a ``--config`` or ``--init`` that is not there,
    the numbers typed out of range (``check_train_numbers``, ``check_sizes``: a typed value
    wins over ``--config`` and the saved plan alike), a ``--model-set`` that is no field,
    no ``--out`` or one that cannot be made, and a ``--data`` folder of ``unmask prepare`` that is
    not there. Each in the line the run says."""
    from unmask.flag_checks import missing_dataset
    from unmask.folders import missing_model
    from unmask.run_checks import NO_OUT, check_out, check_sizes, check_train_numbers
    from unmask.train_guards import read_train_config

    if args.resume:
        _resume_flags(args)
    elif args.config and (not os.path.exists(args.config) or os.path.isdir(args.config)):
        read_train_config(args.config)  # its refusal (a file there is read in run, once)
    elif not args.config and not args.data:
        raise UserError(NO_DATA)
    typed = dataclass_from_args(TrainConfig, args)  # the flags typed, over the defaults
    if args.model_set:
        _parse_overrides(args.model_set)
    check_train_numbers(typed)
    check_out(args.out)
    if args.init is not None and not args.resume:
        refuse(missing_model(args.init))
    if not (args.out or args.config):  # (a --config may name it)
        raise UserError(NO_OUT)
    check_sizes(typed)
    if not (args.resume or args.config) and args.data and not (
            typed.objective in FILE_DATA or args.data.endswith(".safetensors")):
        refuse(missing_dataset(args.data))  # (a file's objectives say it their way)


NO_DATA = "no dataset given (--data DIR from `unmask prepare`)"


def _flag(name: str, value: Any) -> str:
    """A TrainConfig field as the flag that sets it, for the resume line."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def _resume_config(args: argparse.Namespace) -> TrainConfig:
    """The run's saved plan with the flags given now: only flags typed on this command line
    change it (``given_fields``), so defaults never shorten or stretch a resumed run."""
    from unmask.train import load_saved_plan

    saved = Path(args.out) / "train_config.json"  # there: check_flags refused the rest
    return resumed_config(load_saved_plan(saved), given_fields(TrainConfig, args))


def _resume_flags(args: argparse.Namespace) -> None:
    """Refuse ``--resume`` without a run in ``--out`` to continue, or with flags that start
    a new one."""
    if not args.out:
        raise UserError("--resume needs --out RUN, the run to continue")
    if args.config:
        raise UserError("--config starts a new run; --resume continues the saved plan "
                        "(change it with flags such as --steps)")
    if args.model_set:
        raise UserError("--model-set cannot change the model of a resumed run")
    if not (Path(args.out) / "train_config.json").is_file():
        raise UserError(f"{args.out}: nothing to resume (no train_config.json in it)"
                        f"{_run_above(Path(args.out))}")


def _run_above(out: Path) -> str:
    """A hint where ``--out`` is a folder inside a run (its ``checkpoint/`` or ``best/``, as
    ``--model`` takes them): the run to resume, or ''."""
    up = run_above(out)
    return f"; it is inside the run {up}: resume it with --out {up}" if up else ""


def run(args: argparse.Namespace) -> int:
    from unmask.folders import checkpoint_given_for_data
    from unmask.run_checks import check_init_family, check_out, check_train_numbers
    from unmask.train import load_train_config, train
    from unmask.train_guards import TrainingStopped, resume_hint, time_limit_exit

    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    if args.resume:
        cfg = _resume_config(args)
    else:
        base = load_train_config(args.config) if args.config else TrainConfig()
        cfg = dataclass_from_args(TrainConfig, args, base=base)
        if args.model_set:
            overrides = {**cfg.model_overrides, **_parse_overrides(args.model_set)}
            cfg = dataclasses.replace(cfg, model_overrides=overrides)
        if not cfg.data:
            raise UserError(NO_DATA)
        if cfg.objective in FILE_DATA and Path(cfg.data).is_dir():  # was "no such file"
            raise UserError(f"--data {cfg.data} is a folder; objective {cfg.objective} reads "
                            f"{FILE_DATA[cfg.objective]}")
    check_train_numbers(cfg)
    check_out(cfg.out)
    if not args.resume:
        check_init_family(cfg.init, cfg.objective)
    first = os.environ.get("RANK", "0") == "0"  # says it once under torchrun, not per process
    try:  # train() clears a half-made run and removes the folder of one that never saved, in
        # rank 0 only (every process doing it raced: two clearing the same files)
        run_dir = train(cfg, resume=args.resume, progress=not args.no_progress,
                        name_setting=_flag)
    except UserError as e:  # the library's refusal of a checkpoint as data, said as --data
        if cfg.data and str(e) == checkpoint_given_for_data(cfg.data, flag=""):
            raise UserError(checkpoint_given_for_data(cfg.data)) from None
        raise
    except TrainingStopped as e:
        if first:
            print(f"unmask train: {e}{resume_hint(e, 'train')}", file=sys.stderr)
        return e.exit_code
    if first:
        print(f"checkpoint: {run_dir}/checkpoint")
    return time_limit_exit(Path(run_dir), "train", say=first)
