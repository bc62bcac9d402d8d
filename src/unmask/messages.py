"""Wording of the messages users read: ``plural``, ``shown_number`` (and ``finite``, the check
that goes with it), ``nearest_multiples`` and ``divisors_near`` (the lengths a refusal offers).

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


def nearest_multiples(value: int, of: int) -> str:
    """The multiples of ``of`` either side of ``value`` (positive, not ``value``), as "a or b":
    the way out an error message offers."""
    lo, hi = (value // of) * of, -(-value // of) * of
    options = [m for m in (lo, hi) if m > 0 and m != value]
    return " or ".join(str(m) for m in dict.fromkeys(options)) or str(of)


def divisors_near(n: int, target: int) -> str:
    """The divisors of ``n`` either side of ``target``, as "a or b" (one where ``target``
    divides ``n`` or none is on one side): the block lengths an error message offers."""
    divs = [d for d in range(1, n + 1) if n % d == 0]
    below = [d for d in divs if d <= target]
    above = [d for d in divs if d >= target]
    options = ([below[-1]] if below else []) + ([above[0]] if above else [])
    return " or ".join(str(d) for d in dict.fromkeys(options))
