"""CLI subcommands, one module each, and the flag generator they share.

Each module defines ``register(subparsers) -> None``, which adds its parser and sets
``func=run`` where ``run(args: argparse.Namespace) -> int`` returns the exit code.
Flags for configuration dataclasses are generated from their fields and field
docstrings (``add_dataclass_flags``), so the CLI and the Python API never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from unmask.config import field_docs

COMMANDS = ("prepare", "train", "generate", "chat", "demo", "infill", "edit", "fill_form", "convert", "serve")

T = TypeVar("T")


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Sequence[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One typed ``--flag`` per dataclass field, the field's docstring as help.

    Unset flags stay None so ``dataclass_from_args`` keeps the dataclass (or base) value.
    """
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{docs.get(f.name, '')} (default: {getattr(defaults, f.name)})"
        kind = str(f.type)
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, default=None, metavar="N", help=help_)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, default=None, metavar="X", help=help_)
        else:
            parser.add_argument(flag, default=None, choices=(choices or {}).get(f.name), help=help_)


def given_fields(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given on the command line, with their values.

    Generated flags default to None, so "given" is "not None"; this is what lets a command
    tell an explicit ``--steps 1000`` from the default 1000 (e.g. ``train --resume``).
    """
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def dataclass_from_args(cls: type[T], args: argparse.Namespace, *, base: T | None = None) -> T:
    """``base`` (or the defaults) with every flag that was given on the command line."""
    given = given_fields(cls, args)
    return dataclasses.replace(base if base is not None else cls(), **given)  # type: ignore[type-var]
