"""What kind of folder a path the user gave is, without torch: a dataset ``unmask prepare``
wrote, a checkpoint (a run directory or checkpoint folder), or neither. The command line
(``--model``, ``--data``, ``prepare``'s inputs) and ``unmask.checkpoint`` name a folder of the
other kind by what it is ("a dataset, not a checkpoint") with the one check here, instead of
"not a checkpoint" or "run unmask prepare first" for data the user had prepared."""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_FOLDERS = ("checkpoint", ".checkpoint.old", os.path.join("best", "checkpoint"))
"""Where a run directory keeps a checkpoint (``unmask.checkpoint``'s ``CKPT``, ``OLD``,
``BEST``/``CKPT``)."""


def is_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder ``unmask prepare`` wrote (its ``index.json`` and token
    shards) and no checkpoint."""
    p = Path(path)
    try:
        return ((p / "index.json").is_file() and any(p.glob("train-*.bin"))
                and not is_checkpoint(p))
    except OSError:
        return False


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint folder (its ``config.json``) or a run directory
    holding one."""
    p = Path(path)
    try:
        return any((p / sub / "config.json").is_file() for sub in ("", *CHECKPOINT_FOLDERS))
    except OSError:
        return False


def dataset_given_for_model(path: str | os.PathLike[str]) -> str:
    """The refusal of a dataset folder where a checkpoint goes (``--model``, ``unmask eval
    RUN``, ``unmask.load``)."""
    return (f"{path} is a dataset (unmask prepare wrote it), not a checkpoint: train a model "
            f"on it with `unmask train --data {path} --out runs/NAME`, then use runs/NAME")


def checkpoint_given_for_data(path: str | os.PathLike[str], flag: str = "--data") -> str:
    """The refusal of a checkpoint where a dataset goes (``unmask train --data``; ``flag``
    empty: the library's ``data``): it said "not a prepared dataset; run unmask prepare
    first", about a model."""
    named = f"{flag} {path}".lstrip()
    return (f"{named} is a checkpoint (a model), not a dataset from `unmask prepare`: "
            f"`unmask train --resume --out {path}` continues its training, `--init {path}` "
            "starts a new run from its weights")
