"""A trajectory file's settings (``unmask.distill``'s ``_settings``: the teacher, its weights
and tokenizer, the corpus, the lengths and the sampling options) and when two of them make the
same rows (``same_settings``): what a run reusing or extending a file asks, and what a resumed
run asks of the file it started on (``unmask.objectives.distill.rows_started_on``). Without
torch, and imported by both, so neither imports the other."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from unmask.config import SampleConfig
from unmask.files import file_digest, plain_name

TOKENIZER_KEY = "tokenizer"
"""Key of a trajectory file's settings: ``tokenizer_stamp`` of the teacher's tokenizer. Files
written before it lack the key; they are still reused and trained on, checked against the
teacher's own tokenizer where the teacher is still there."""

WHOLE_BATCHES = "whole_batches"
"""Key of a trajectory file's settings: every batch was decoded whole (``traj_batch`` rows) and
cut to the rows asked for. Files made before (without it) decoded a last batch cut short at
its own size, so those rows differ from the same rows of a longer file."""


def corpus_stamp(
    data: str | os.PathLike[str], *, content: bool = True
) -> list[list[Any]] | None:
    """[name, size, sha256 (16 hex digits)] of the prepared corpus ``data``'s ``index.json``
    and train shards, None where it has no index: what tells a corpus prepared again at the
    same path (``unmask prepare --overwrite``), or another one copied over it with its times
    (``cp -p``), from the one trajectories were made from. Reading the shards costs about a
    second per GB (2 ms for the demo corpus), against minutes of decoding trajectories; a
    copy or ``touch`` of the same corpus no longer counts as a change. ``content=False``:
    [name, size, mtime_ns], the stamp of files written before (still honoured). None too
    for an index naming a file outside the folder (``plain_name``: it is not read)."""
    folder = Path(data)
    try:
        index = json.loads((folder / "index.json").read_text())
        shards = list(index["splits"]["train"]["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(map(plain_name, shards)):  # ../../x, /dev/zero: read_index refuses them
        return None
    stamp: list[list[Any]] = []
    for name in ["index.json", *shards]:
        try:
            st = (folder / str(name)).stat()
        except OSError:
            return None
        if not content:
            stamp.append([str(name), st.st_size, st.st_mtime_ns])
            continue
        try:
            stamp.append([str(name), st.st_size, file_digest(folder / str(name))])
        except OSError:
            return None
    return stamp


def older_stamp(key: str, stamp: Any) -> bool:
    """Whether ``stamp`` (of ``teacher_weights`` or ``data_files``) is of sizes and
    modification times alone, as files written before contents were hashed hold."""
    if not isinstance(stamp, list) or not stamp:
        return False
    if key == "teacher_weights":
        return len(stamp) == 2
    return all(isinstance(f, list) and f and isinstance(f[-1], int) for f in stamp)


def same_settings(stored: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether trajectories made with ``stored`` settings are those ``settings`` asks for
    (``as_now``)."""
    return as_now(stored, settings) == settings


def as_now(stored: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A trajectory file's ``stored`` settings as this version records them, next to the
    ``settings`` asked for: a sampling option the file predates (added to ``SampleConfig``
    since) had its default, a file made before ``WHOLE_BATCHES`` holds the same rows but for
    a batch cut short (``make_trajectories`` decodes that one again), one made before
    ``TOKENIZER_KEY`` records no tokenizer (the teacher's weights stamp stands for it), and
    one whose corpus stamp is of sizes and times matches while they do; the teacher's
    weights are the same where their contents are (``same_weights``: a copy, a touch)."""
    from unmask.checkpoint import same_weights

    stored = {**stored, WHOLE_BATCHES: settings.get(WHOLE_BATCHES)}
    if TOKENIZER_KEY not in stored:
        stored[TOKENIZER_KEY] = settings.get(TOKENIZER_KEY)
    if same_weights(stored.get("teacher_weights"), settings.get("teacher_weights")):
        stored["teacher_weights"] = settings.get("teacher_weights")
    files = stored.get("data_files")
    if older_stamp("data_files", files) \
            and files == corpus_stamp(str(settings.get("data")), content=False):
        stored["data_files"] = settings.get("data_files")  # an older file's size + mtime
    sample = stored.get("sample")
    if isinstance(sample, dict):
        defaults = as_json(SampleConfig())
        del defaults["seed"]
        known = {k: v for k, v in defaults.items() if k not in sample}
        stored = {**stored, "sample": {**sample, **known}}
    return stored


def as_json(config: SampleConfig) -> dict[str, Any]:
    """``config``'s fields as the trajectory file's JSON holds them (a tuple, ``exempt_ids``,
    as a list): a file's settings and the run's compare equal when they are."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
