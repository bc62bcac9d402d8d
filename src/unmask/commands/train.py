"""``unmask train``: flags generated from ``TrainConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from unmask.commands import add_dataclass_flags, add_no_progress_flag, dataclass_from_args
from unmask.config import MODEL_PRESETS, ModelConfig, TrainConfig
from unmask.errors import UserError

_SKIP = {"model_overrides"}


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise UserError(f"--model-set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _objectives() -> list[str]:
    from unmask.objectives import OBJECTIVES

    return list(OBJECTIVES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared dataset",
        description="Train a masked-diffusion (or autoregressive baseline) model on data from "
                    "'unmask prepare'.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="train_config.json to start from (flags override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint")
    p.add_argument("--model-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field of the preset, e.g. --model-set d_model=384")
    add_no_progress_flag(p)
    add_dataclass_flags(p, TrainConfig, skip=_SKIP,
                        choices={"preset": list(MODEL_PRESETS), "objective": _objectives})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unmask.train import load_train_config, train

    base = load_train_config(args.config) if args.config else TrainConfig()
    cfg = dataclass_from_args(TrainConfig, args, base=base)
    if args.model_set:
        cfg = dataclasses.replace(cfg, model_overrides={**cfg.model_overrides, **_parse_overrides(args.model_set)})
    if not args.resume and not cfg.data:
        raise UserError("no dataset given (--data DIR from `unmask prepare`)")
    if args.resume and not cfg.data:
        cfg = dataclasses.replace(cfg, data="(from run)")
    run_dir = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"checkpoint: {run_dir}/checkpoint")
    return 0
