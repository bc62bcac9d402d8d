"""Whether a stream is a terminal, without torch: the live view (``unmask.sampling.live``),
``unmask demo`` and the line ``unmask.cli`` prints before torch loads ask the same question;
``unmask prepare -`` and ``unmask generate`` ask it of standard input."""

from __future__ import annotations

import os
from typing import Any


def is_tty(stream: Any, default: bool = False) -> bool:
    """Whether ``stream`` is a terminal, whatever ``TERM`` says (standard input a person types
    into, not a pipe or a file); ``default`` for none, a closed stream or a stand-in without
    ``isatty``."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # None, a closed file, a stand-in
        return default


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal that takes escape codes (a tty, not ``TERM=dumb``);
    False for a closed stream or none."""
    return is_tty(stream) and os.environ.get("TERM") != "dumb"
