"""Refusals of numbers and paths that the library checks and the command line says before
torch loads (``unmask prepare``, ``train``, ``eval``: a mistyped path or a negative count
waited for ``import torch``, seconds on a busy machine, to print one line). One rule each,
used by both: ``unmask.data.prepare`` / ``resolve_inputs`` / ``read_index``,
``unmask.lm_eval``, and the commands' ``check_flags``.

- ``check_prepare_numbers``: ``prepare``'s vocabulary size and validation split.
- ``missing_input``: an input of ``prepare`` that is not there (a shell's pattern named so).
- ``missing_dataset``: a prepared dataset folder that is not there.
- ``check_mc_samples_count``, ``check_limit``: lm-eval's Monte Carlo samples and ``limit``.

Nothing here imports torch (nor numpy).
"""

from __future__ import annotations

import glob
import itertools
import math
import os
import re
import sys
from pathlib import Path

from unmask.errors import UserError

MAX_VOCAB_SIZE = 1 << 20
"""The largest BPE vocabulary ``prepare`` trains (published models use up to ~256k): the
trainer allocates for the whole vocabulary up front, and 5e9 aborted with a 283 GB
allocation."""

MAX_MC_SAMPLES = 1 << 20
"""The most Monte Carlo samples ``--mc-samples`` (``mc_samples``) takes, 16,384 times the
default (a standard error 128 times smaller): a guard against typos and runs of days, not
memory, checked before the model loads (``unmask.lm_eval.check_mc_samples``). The estimator
itself takes any count: its masks are drawn ``unmask.evaluate.MC_DRAW_ROWS`` samples at a
time."""


def check_prepare_numbers(*, tokenizer: str, vocab_size: int | None, val_fraction: float,
                          min_val_tokens: int) -> None:
    """One ``UserError`` line for the first of ``prepare``'s numbers out of range: the
    validation fraction in [0, 1), a non-negative smallest split, a BPE vocabulary from 260
    (the bytes and the specials) to ``MAX_VOCAB_SIZE`` (None: ``prepare``'s default)."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction={val_fraction} must be in [0, 1)")
    if min_val_tokens < 0:
        raise UserError(f"min_val_tokens={min_val_tokens} must be >= 0")
    if tokenizer != "bpe" or vocab_size is None:
        return
    if vocab_size < 260:
        raise UserError(f"vocab_size={vocab_size} is too small for byte-level BPE (minimum 260)")
    if vocab_size > MAX_VOCAB_SIZE:
        raise UserError(f"vocab_size={vocab_size:,} is larger than any BPE vocabulary needs "
                        f"(at most {MAX_VOCAB_SIZE:,}; the trainer allocates for all of it)")


_PATTERN = re.compile(r"[*?]|\[.+\]")
"""A shell's wildcards (``*.txt``, ``part-?.gz``, ``[ab].txt``) in an input's name."""

_MATCHES_COUNTED = 1000
"""How many files a wildcard input's message counts at most (``_pattern_said``)."""


def missing_input(item: str | os.PathLike[str]) -> str | None:
    """The refusal of ``prepare``'s input ``item`` where nothing of that name is there (not
    even a link), else None: "no such file or directory", and for a name that holds a shell's
    wildcards what it matches (``_pattern_said``)."""
    name = os.fspath(item)
    if not name:  # Path("") is the current folder: `prepare "$UNSET" -o d` read all of it
        return "an empty input name: give a file or a folder ('.' for the current one)"
    if os.path.lexists(item):
        return None
    said = _pattern_said(name) if _PATTERN.search(name) else ""
    return f"{Path(name)}: no such file or directory{said}"


def _pattern_said(pattern: str) -> str:
    """What "no such file or directory" adds for an input that holds a shell's wildcards: that
    it is a pattern, with how many files it matches (at most ``_MATCHES_COUNTED`` counted) and
    what to give instead, or that none match. The name was looked up as it is first: one with
    brackets alone (``[draft] notes.txt``) that matches nothing as a pattern is only missing.
    A ``**`` pattern's matches are not counted: a recursive glob follows links to folders, and
    two links to ``.`` in one folder (build trees hold such) made it walk for ever."""
    if "**" in pattern:
        return (", a pattern: prepare does not expand one; give the files (sorted(glob.glob("
                f"{pattern!r}, recursive=True)) in Python) or their folder")
    n = sum(1 for _ in itertools.islice(glob.iglob(pattern), _MATCHES_COUNTED + 1))
    if n:
        many = (f"more than {_MATCHES_COUNTED:,} files match" if n > _MATCHES_COUNTED else
                "1 file matches" if n == 1 else f"{n:,} files match")
        return (f", a pattern, which {many}: prepare does not expand one; give the "
                f"files (sorted(glob.glob({pattern!r})) in Python) or their folder")
    if not re.search(r"[*?]", pattern):  # brackets alone: a name ([2021] report.txt) missing
        return ""
    return (", and no file matches it as a pattern (a shell passes on one that matches nothing "
            "as it is)")


def missing_dataset(folder: str | os.PathLike[str]) -> str | None:
    """The refusal of the prepared dataset ``folder`` where nothing of that name is there
    (``unmask.data.read_index``'s first line, which ``train --data`` and ``eval --data``
    say), else None."""
    if os.path.exists(folder):
        return None
    return f"{Path(folder)}: no such folder; run `unmask prepare` first"


def check_mc_samples_count(n: int, name: str = "mc_samples") -> int:
    """``n`` Monte Carlo samples if from 1 to ``MAX_MC_SAMPLES``, else a one-line
    ``UserError`` naming ``name`` (the CLI checks ``--mc-samples`` so before the model loads;
    ``unmask.lm_eval.check_mc_samples`` reads a model_arg with it)."""
    if n < 1:
        raise UserError(f"{name} must be at least 1, got {n}")
    if n > MAX_MC_SAMPLES:
        raise UserError(f"{name} must be at most {MAX_MC_SAMPLES:,}, got {n:,}")
    return n


def check_limit(limit: float | None, name: str = "limit") -> float | int | None:
    """lm-eval's ``limit`` as it takes it: ``None`` (every item), a fraction of each task
    (below 1), or a whole number of items (past ``sys.maxsize``, every item: lm-eval's islice
    refused it with a traceback); else a one-line ``UserError`` naming ``name``: infinity was
    ``int()``'s OverflowError, 2.5 silently 2 items, a negative islice's ValueError. One
    check for ``unmask eval --limit`` (before the model loads) and ``run_tasks``."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
        return min(limit, sys.maxsize)  # (10**400: no float, isfinite's OverflowError)
    if not (math.isfinite(limit) and limit > 0):  # nan fails both
        raise UserError(f"{name} must be a positive number, got {limit}")
    if limit < 1:
        return limit
    if not float(limit).is_integer():
        raise UserError(f"{name} {limit}: items per task is a whole number (below 1, a "
                        "fraction of the task)")
    return min(int(limit), sys.maxsize)
