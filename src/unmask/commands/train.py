"""``unmask train``: flags generated from ``TrainConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from unmask.config import MODEL_PRESETS, ModelConfig, TrainConfig, field_docs
from unmask.errors import UserError

_SKIP = {"model_overrides"}
_CHOICES = {"preset": list(MODEL_PRESETS), "objective": None}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, *, skip: set[str] = frozenset()) -> None:
    """One ``--flag`` per dataclass field, typed, with the field's docstring as help."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f"{docs.get(f.name, '')} (default: {default})"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, default=None, help=help_, metavar="N")
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, default=None, help=help_, metavar="X")
        else:
            parser.add_argument(flag, default=None, help=help_, choices=_CHOICES.get(f.name))


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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared dataset",
        description="Train a masked-diffusion (or autoregressive baseline) model on data from `unmask prepare`.",
    )
    p.add_argument("--config", help="train_config.json to start from (flags override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--model-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field of the preset, e.g. --model-set d_model=384")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(p, TrainConfig, skip=_SKIP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unmask.train import load_train_config, train

    base = load_train_config(args.config) if args.config else TrainConfig()
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in _SKIP}
    cfg = dataclasses.replace(base, **{k: v for k, v in values.items() if v is not None})
    if args.model_set:
        cfg = dataclasses.replace(cfg, model_overrides={**cfg.model_overrides, **_parse_overrides(args.model_set)})
    if not args.resume and not cfg.data:
        raise UserError("no dataset given (--data DIR from `unmask prepare`)")
    if args.resume and not cfg.data:
        cfg = dataclasses.replace(cfg, data="(from run)")
    run_dir = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"checkpoint: {run_dir}/checkpoint")
    return 0
