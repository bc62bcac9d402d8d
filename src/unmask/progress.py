"""Progress of long jobs (training, trajectory decoding) on stderr: a tqdm bar on a terminal,
and where stderr is not one (a log file, CI, a notebook's subprocess) plain lines instead, so
a job that runs for minutes does not look stalled: ``progress_bar`` makes both.

``progress=False`` (``--no-progress``) shows neither.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0  # the least time between two plain lines


class PlainLines:
    """Plain progress lines for when no bar is drawn: ``start`` says what the job does, then
    ``line`` writes ``label done/total``, what the caller adds and the ETA; ``due`` says
    whether one is wanted now (at most one every ``every_s`` seconds; the first whenever it
    comes, the last always)."""

    def __init__(self, desc: str, total: int, initial: int = 0, *, label: str | None = None,
                 every_s: float | None = None) -> None:
        self.desc, self.total, self.initial = desc, total, initial
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.label = label or desc
        self.t0 = time.perf_counter()
        self.last: float | None = None  # when the last line was written

    def start(self, what: str) -> None:
        """The first line: ``desc: what``."""
        self.t0 = time.perf_counter()
        print(f"{self.desc}: {what}", file=sys.stderr, flush=True)

    def due(self, done: int) -> bool:
        """Whether a line for ``done`` would be written now (the first, the last, or
        ``every_s`` after the one before)."""
        now = time.perf_counter()
        return self.last is None or done >= self.total or now - self.last >= self.every_s

    def line(self, done: int, text: str = "") -> None:
        """``label done/total text ETA x min`` (the ETA from the pace since ``start``)."""
        now = time.perf_counter()
        self.last = now
        eta = (self.total - done) * (now - self.t0) / max(1, done - self.initial)
        parts = [f"{self.label} {done:,}/{self.total:,}", text, f"ETA {eta / 60:.1f} min"]
        print(" ".join(p for p in parts if p), file=sys.stderr, flush=True)


def progress_bar(desc: str, total: int, *, initial: int = 0, unit: str = "step",
                 label: str | None = None, enabled: bool = True) -> tuple[Any, PlainLines | None]:
    """A tqdm bar on stderr (``None`` when not ``enabled``), and ``PlainLines`` to use instead
    when stderr is not a terminal and the bar is hidden (``None`` otherwise). Neither where
    stderr is closed (``2>&-``: ``sys.stderr`` None, which tqdm wrote to: an ``AttributeError``
    that ended the job)."""
    if not enabled or sys.stderr is None:
        return None, None
    from tqdm import tqdm

    b = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
             file=sys.stderr, disable=None)
    return b, PlainLines(desc, total, initial, label=label) if b.disable else None


class _Tolerant:
    """A text stream whose writes stop, silently, once its reader has left (a closed pipe:
    ``unmask train ... 2>&1 | head``); everything else is the stream's own. ``None`` (the
    process started with stderr closed, ``2>&-``: Python's ``sys.stderr`` is None) takes every
    write and drops it: the first line of progress was an ``AttributeError`` that ended the
    run before it started."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream, self.closed_pipe = stream, stream is None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ValueError):  # the reader left / the file was closed
                self.closed_pipe = True
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self.closed_pipe = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def stderr_may_close() -> Iterator[None]:
    """Inside, progress on stderr that nobody reads any more is dropped instead of raising:
    a long job goes on (and saves) when the reader of its log leaves. A closed pipe had
    ended training between checkpoints, and removed a new run that had none yet."""
    old = sys.stderr
    sys.stderr = _Tolerant(old)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = old
