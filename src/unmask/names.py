"""Names the command line and the library look up, without torch (``unmask --help`` and
argument parsing import this module).

Inside: ``SHIPPED_MODELS`` (the models that ship inside the package: ``--model demo``) and
``closest`` (the nearest of some names to a misspelt one: commands, flags, chat's
``/commands``), the one nearest-name lookup of the package.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

SHIPPED_MODELS = ("demo",)
"""Names ``--model`` (and ``load``) accept for a model that ships inside the package, used
when no file or folder of that name exists (a local ``./demo`` folder wins)."""


def closest(
    word: str, known: Sequence[str], *, prefix: str = "", cutoff: float = 0.7
) -> str | None:
    """The entry of ``known`` closest to ``word``: the same in another letter case, else a
    near spelling (a typo, ``difflib`` ratio at least ``cutoff``); None when none is close.
    ``prefix`` (``--``, ``/``) is left out of the comparison, where every entry and the
    word share it: two dashes counted as two matching letters, so ``--port`` came out as
    ``--prompt``."""
    same = [k for k in known if k.casefold() == word.casefold()]
    if same:
        return same[0]
    cut = len(prefix) if prefix and word.startswith(prefix) else 0
    stems = {k[cut:] if cut and k.startswith(prefix) else k: k for k in known}
    near = difflib.get_close_matches(word[cut:].casefold(), list(stems), n=1, cutoff=cutoff)
    return stems[near[0]] if near else None
