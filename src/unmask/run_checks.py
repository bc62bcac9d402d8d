"""What a training run (``unmask.train.train``, hence ``unmask train`` and ``unmask distill``)
checks before it starts, and cleans after it fails.

- ``check_train_numbers``: the optimiser's numbers and the seed in range (a negative ``--lr``
  or a ``--beta2`` of 1 would fail inside torch with a traceback, or train nothing).
- ``check_sizes``, ``check_batch_split``: positive steps and sizes; the batch splits into
  processes × micro-batches.
- ``check_context``: the training window fits the model's context.
- ``check_out``: ``--out`` is not a file and can be made.
- ``check_init_family``: a continuous-diffusion ``--init`` only for its own family.
- ``no_empty_run``: a new run that fails before its first checkpoint leaves no run directory
  behind (an empty or half-written one would make the next try with the same ``--out``
  fail with "already exists", and ``--resume`` has nothing to continue).

Nothing here imports torch: argument errors answer at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unmask.errors import UserError
from unmask.files import nearest_present, not_a_folder, parse_json

_RANGES: tuple[tuple[str, float, float, bool], ...] = (
    # field, low, high, high included
    ("lr", 0.0, math.inf, False),
    ("min_lr_ratio", 0.0, 1.0, True),
    ("weight_decay", 0.0, math.inf, False),
    ("beta1", 0.0, 1.0, False),
    ("beta2", 0.0, 1.0, False),
    ("grad_clip", 0.0, math.inf, False),
    ("ema", 0.0, 1.0, False),
    ("eps", 0.0, 1.0, False),
    ("random_length_frac", 0.0, 1.0, True),
    ("time_limit", 0.0, math.inf, False),
)
"""Numeric ``TrainConfig`` fields and their ranges (all low ends included)."""

_NON_NEGATIVE = ("warmup", "eval_every", "eval_batches", "save_every", "log_every")
"""Whole-number ``TrainConfig`` fields where 0 means "off" or "only at the end"."""


def check_train_numbers(config: Any) -> None:
    """One ``UserError`` line for the first ``TrainConfig`` number out of its range."""
    for name, low, high, closed in _RANGES:
        x = getattr(config, name)
        ok = math.isfinite(x) and low <= x and (x <= high if closed else x < high)
        if not ok:
            bracket = "]" if closed else ")"
            shown = "inf" if high == math.inf else f"{high:g}"
            raise UserError(f"{name}={x} must be in [{low:g}, {shown}{bracket}")
    for name in _NON_NEGATIVE:
        if getattr(config, name) < 0:
            raise UserError(f"{name}={getattr(config, name)} must be >= 0")
    if not -(2**63) <= config.seed < 2**64:  # what torch.manual_seed takes (a --config or
        # train() seed of 2**64 failed at the first draw with a traceback); a negative one
        # from --config or train() always ran, so a run saved with one still resumes
        raise UserError(f"seed={config.seed} must be from -2**63 to 2**64 - 1")


def check_sizes(config: Any) -> None:
    """One ``UserError`` line when a ``TrainConfig``'s steps, batch size, window or
    ``grad_accum`` is not positive."""
    for name in ("steps", "batch_size", "seq_len", "grad_accum"):
        if getattr(config, name) <= 0:
            raise UserError(f"{name}={getattr(config, name)} must be positive")


def check_batch_split(config: Any, world: int = 1) -> None:
    """One ``UserError`` line when a ``TrainConfig``'s sizes are not positive
    (``check_sizes``), or the batch does not split into ``world`` processes × ``grad_accum``
    micro-batches."""
    check_sizes(config)
    if config.batch_size % (world * config.grad_accum):
        raise UserError(
            f"batch_size={config.batch_size} is not divisible by "
            f"processes×grad_accum={world * config.grad_accum}"
        )


def check_context(seq_len: int, max_seq_len: int) -> None:
    """One ``UserError`` line when a training window of ``seq_len`` tokens exceeds the
    model's context (``max_seq_len``)."""
    if seq_len > max_seq_len:
        raise UserError(f"seq_len={seq_len} exceeds the model's max_seq_len={max_seq_len}")


NO_OUT = "no run directory given (--out)"
"""The refusal of a new run given no ``--out`` (``unmask train``'s, before torch and in
``unmask.train``; ``unmask.distill``'s)."""


def check_out(out: str | os.PathLike[str], *, make: bool = False) -> None:
    """``--out`` names a folder (new or existing), not a file, and one this process can make:
    its nearest existing parent is a folder it may write in (``unmask train`` and ``unmask
    distill`` check before their work; ``make``: make it too). One line naming the flag."""
    if not out:
        return
    run = Path(out).absolute()
    blocked = not_a_folder(run)
    if blocked == run:  # a link to nowhere or into a loop: mkdir fails on it too
        what = "a link to no folder" if run.is_symlink() else "a file"
        raise UserError(f"--out {out}: {what} is there; the run directory must be a folder")
    why = f"{blocked} is not a folder" if blocked is not None else ""
    parent = nearest_present(run)
    if not why and parent != run and not os.access(parent or run, os.W_OK | os.X_OK):
        why = f"no permission to write in {parent}"
    if make and not why:
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = e.strerror or str(e)
    if why:
        raise UserError(f"--out {out}: cannot make the run directory ({why})")


CONTINUES: dict[str, tuple[str, ...]] = {
    "embed-diffusion": ("embed-diffusion",),
    "latent-ae": ("latent-ae", "latent-diffusion"),
    "latent-diffusion": ("latent-diffusion",),
}
"""The objectives a continuous-diffusion checkpoint can start (``--init``): its model is
conditioned on the noise level, or is an autoencoder, which no token objective trains (the
step would fail in the model with "pass sigma"). ``train.py`` names no objective, so the
check lives here."""


def check_init_family(init: str, objective: str) -> None:
    """Refuse in one line an ``--init`` checkpoint of a continuous objective for another
    objective (``CONTINUES``); read from its config.json, before anything is loaded."""
    from unmask.checkpoint import checkpoint_dir
    from unmask.convert.load import is_publisher_folder

    if not init or is_publisher_folder(init):
        return
    config = Path(checkpoint_dir(init)) / "config.json"
    try:
        theirs = parse_json(config.read_text(), config).get("objective")
    except (OSError, ValueError, AttributeError, UserError):
        return  # loading it says what is wrong
    family = CONTINUES.get(str(theirs or ""))
    if family is not None and objective not in family:
        raise UserError(
            f"--init {init}: a checkpoint of objective {theirs} (continuous diffusion) "
            f"continues only as {' or '.join(family)}, not as {objective!r}"
        )


_RUN_FILES = ("train_config.json", "metrics.jsonl")
"""What a run writes before its first checkpoint (besides ``--keep-best``'s ``best/``)."""


@contextlib.contextmanager
def no_empty_run(out: str, made: list[Path] | None = None) -> Iterator[None]:
    """Inside: a new run in ``out``. If the block ends (by an error, Ctrl-C or normally)
    with no checkpoint in ``out``, and ``out`` was absent or empty before, the files the run
    wrote before its first checkpoint and the folders made for it are removed; anything else
    in them is left alone. ``made``: the folders made for it already (``out`` and missing
    parents, innermost first: ``train_guards.own_run`` makes and holds it first)."""
    run = Path(out) if out else None
    if made is None:  # the folders this run creates: out and missing parents, innermost first
        made = missing_folders(run) if run is not None else []
    if run is not None and unfinished_run(run):  # killed (SIGKILL, out of memory) before
        _clear_unfinished(run)                     # its first save: nothing to resume, start anew
        print(f"note: {run} held a run stopped before its first checkpoint; starting it anew",
              file=sys.stderr)
    fresh = run is not None and (bool(made) or (run.is_dir() and not any(run.iterdir())))
    try:
        yield
    finally:
        if fresh and run is not None and run.is_dir():
            _remove_unfinished(run, made)


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, innermost first: the folders
    making it makes."""
    made = []
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    return made


def unfinished_run(run: Path) -> bool:
    """Whether ``run`` holds only what a run writes before its first checkpoint (its plan,
    its log, a checkpoint being staged, a ``best/`` with no weights in it): a run killed
    before it saved, which can neither resume nor be a reason to refuse a new run there.
    A folder whose ``best/`` holds weights (``kept_best``) is not: starting anew would delete
    them (a ``--keep-best`` run killed before its first checkpoint, or a finished one whose
    ``checkpoint/`` was removed to keep the best weights alone)."""
    from unmask.checkpoint import BEST, TMP_PREFIX

    try:
        names = [p.name for p in run.iterdir()] if run.is_dir() else []
    except OSError:
        return False
    return bool(names) and "train_config.json" in names and all(
        n in (*_RUN_FILES, BEST) or n.startswith(TMP_PREFIX) for n in names
    ) and not kept_best(run)


def kept_best(run: Path) -> bool:
    """Whether ``run/best`` holds weights (a ``.safetensors`` file in it, outside a folder
    being staged, whose weights were never whole)."""
    from unmask.checkpoint import BEST, TMP_PREFIX

    best = run / BEST
    try:
        return any(not any(part.startswith(TMP_PREFIX) for part in p.relative_to(best).parts)
                   for p in best.rglob("*.safetensors"))
    except OSError:
        return True  # unreadable: never taken as nothing to lose


def not_empty(run: Path) -> UserError:
    """The refusal of a new run into ``run``, a folder that is not empty: where it holds best
    weights and no checkpoint, how to start anew without losing them."""
    from unmask.checkpoint import BEST, CKPT

    if kept_best(run) and not (run / CKPT).exists():
        return UserError(
            f"{run} holds the best weights of a run with no checkpoint to resume ({run / BEST}: "
            "stopped before its first checkpoint, or its checkpoint/ was removed); to start "
            f"anew there, move {run / BEST} elsewhere or remove {run}, or choose another --out"
        )
    return UserError(f"{run} already exists and is not empty; pass --resume to continue it "
                     "or choose another --out")


def _clear_unfinished(run: Path) -> None:
    import shutil

    for p in run.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _remove_unfinished(run: Path, made: list[Path]) -> None:
    """A new run that ended before its first checkpoint leaves no folder; one that kept best
    weights (``--keep-best``, then a refusal such as a diverged run) keeps them, with its plan:
    the next start refuses the folder and says how to start anew without losing them
    (``not_empty``)."""
    from unmask.checkpoint import BEST

    if (run / "checkpoint").exists() or (run / ".checkpoint.old").exists():
        return
    if (run / BEST).exists():
        return
    for name in _RUN_FILES:
        with contextlib.suppress(OSError):
            (run / name).unlink()
    for folder in made or [run]:
        try:
            folder.rmdir()  # only when nothing else is in it
        except OSError:
            return


__all__ = [
    "CONTINUES",
    "NO_OUT",
    "check_batch_split",
    "check_context",
    "check_init_family",
    "check_out",
    "check_sizes",
    "check_train_numbers",
    "kept_best",
    "missing_folders",
    "no_empty_run",
    "not_empty",
    "unfinished_run",
]
