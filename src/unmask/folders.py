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
    """Whether ``path`` is a checkpoint folder (its ``config.json`` and ``model.safetensors``,
    what ``unmask.checkpoint.checkpoint_dir`` loads) or a run directory holding one. A
    ``config.json`` alone is no checkpoint: a text corpus or a prepared dataset may hold one."""
    p = Path(path)
    try:
        return any((p / sub / "config.json").is_file() and (p / sub / "model.safetensors").is_file()
                   for sub in ("", *CHECKPOINT_FOLDERS))
    except OSError:
        return False


def _run_of(path: Path) -> Path | None:
    """The run directory (its ``train_config.json``) that ``--resume --out`` takes for the
    checkpoint ``path``: the folder itself, or the run that holds it (``RUN/checkpoint``,
    ``RUN/.checkpoint.old``, ``RUN/best/checkpoint``); None for a bare checkpoint folder."""
    for run in (path, path.parent, path.parent.parent):
        if (run / "train_config.json").is_file() and (
            run == path or any(run / sub == path for sub in CHECKPOINT_FOLDERS)
        ):
            return run
    return None


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
    run = _run_of(Path(path))
    init = f"`--init {path}` starts a new run from its weights"
    if run is None:  # a bare checkpoint folder: --resume reads a run's train_config.json
        return (f"{named} is a checkpoint (a model), not a dataset from `unmask prepare`: "
                f"`unmask train {init[1:]}")
    return (f"{named} is a checkpoint (a model), not a dataset from `unmask prepare`: "
            f"`unmask train --resume --out {run}` continues its training, {init}")


def missing_model(path: str | os.PathLike[str]) -> str | None:
    """The refusal of the model ``path`` where nothing of that name exists and it names no
    shipped model (``unmask.checkpoint.checkpoint_dir``'s "no such folder", with its hints: a
    hub name, the shipped model's name, a dead link, a ``~``); None where it exists. Without
    torch, so the command line says it before torch loads (it took seconds)."""
    from unmask.names import SHIPPED_MODELS, closest

    p = Path(path)
    name = os.fspath(path)
    if p.exists() or name in SHIPPED_MODELS:
        return None
    hub = "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1
    local = p.parent.is_dir() or p.parent.name == "runs" or p.name in SHIPPED_MODELS
    if hub and not local:  # org/name, not a folder of this machine's (runs/mine)
        return (f"{path}: no such folder; unmask never downloads: fetch it first "
                f"(e.g. `hf download {path} --local-dir DIR`) and pass DIR")
    shipped = p.name in SHIPPED_MODELS
    near = closest(name, SHIPPED_MODELS) if os.sep not in name else None
    hint = (f" (the shipped model is --model {p.name}, no folder)" if shipped
            else f" (did you mean {near}, the shipped model?)" if near else "")
    if p.is_symlink():  # a link whose target is gone (a moved or unmounted model store)
        hint = f" (a link to {os.readlink(p)}, which does not exist)"
    elif name.startswith("~") and Path(os.path.expanduser(name)).exists():  # --model=~/x
        hint = f" (~ is not expanded here; pass {os.path.expanduser(name)})"
    return f"{path}: no such folder{hint}"
