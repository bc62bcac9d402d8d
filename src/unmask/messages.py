"""Wording of the messages users read: ``plural``.

No imports: every layer may use it (library errors, CLI summaries, the server).
"""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 hole"``, ``"2 holes"``, ``"0 holes"``: the count and the word agreeing with it.

    ``many`` is the plural when it is not ``word + "s"`` (``plural(n, "entry", "entries")``).
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"
