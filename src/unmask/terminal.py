"""Whether a stream is a terminal, without torch: the live view (``unmask.sampling.live``),
``unmask demo`` and the line ``unmask.cli`` prints before torch loads ask the same question."""

from __future__ import annotations

import os
from typing import Any


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal that takes escape codes (a tty, not ``TERM=dumb``);
    False for a closed stream or none."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
    except ValueError:  # a closed file
        return False
