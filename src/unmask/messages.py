"""Wording of the messages users read: ``plural``, ``shown_number`` (and ``finite``, the check
that goes with it).

Nothing imported at module level: every layer may use it (library errors, CLI summaries, the
server).
"""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 hole"``, ``"2 holes"``, ``"0 holes"``: the count and the word agreeing with it.

    ``many`` is the plural when it is not ``word + "s"`` (``plural(n, "entry", "entries")``).
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


def shown_number(value: float) -> str:
    """A number as an error says it: a float by ``:g``, an int in full, or by its length where
    it would run past a line (an int of 400 digits has no ``:g``: an OverflowError)."""
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 20 else f"a number of {len(text.lstrip('-'))} digits"
    return f"{value:g}"


def finite(value: float) -> bool:
    """Whether ``value`` is a finite number: an int always (``math.isfinite`` of one too long
    for a float raises OverflowError), a float unless inf or nan."""
    import math

    return isinstance(value, int) or math.isfinite(value)
