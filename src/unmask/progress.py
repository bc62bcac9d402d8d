"""Progress of long jobs (training, trajectory decoding) on stderr: a tqdm bar on a terminal,
and where stderr is not one (a log file, CI, a notebook's subprocess) plain lines instead, so
a job that runs for minutes does not look stalled: ``progress_bar`` makes both.

``progress=False`` (``--no-progress``) shows neither.
"""

from __future__ import annotations

import sys
import time
from typing import Any

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
    when stderr is not a terminal and the bar is hidden (``None`` otherwise)."""
    if not enabled:
        return None, None
    from tqdm import tqdm

    b = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
             file=sys.stderr, disable=None)
    return b, PlainLines(desc, total, initial, label=label) if b.disable else None
