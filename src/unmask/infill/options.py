"""Gap constraints given beside a template (choices, regex, character class, banned words).

The CLI (``unmask infill --choices GAP=a|b --regex GAP=PATTERN --charset GAP=CLASS --ban
WORD``) and the server (``POST /v1/infill`` with ``choices``, ``regex``, ``charset``,
``ban``) constrain a parsed template the same way, here, so they cannot disagree.

Inside: ``GAP_OPTIONS`` (the per-gap constraint kinds), ``ConstraintError`` (a ``UserError``
that says which option and which entry of it was wrong, so the CLI can name its flag and
the server its JSON field), ``split_assignment`` (``"GAP=VALUE"``) and ``constrain_gaps``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from unmask.errors import UserError
from unmask.infill.template import Gap, _named, check_gap, find_gap

GAP_OPTIONS = {"choices": "choices", "regex": "regex", "charset": "allowed"}
"""Per-gap constraint options and the ``Gap`` field each one sets."""


class ConstraintError(UserError):
    """A bad gap constraint: ``option`` (``choices``, ``regex``, ``charset`` or ``ban``),
    ``index`` (which entry of that option, when the entry itself is wrong: no such gap, no
    ``GAP=``), ``key`` (the gap key that entry named) and ``reason`` (the rest of the
    one-line message)."""

    def __init__(self, option: str, reason: str, *, index: int | None = None,
                 key: str | None = None) -> None:
        self.option, self.reason, self.index, self.key = option, reason, index, key
        where = f"{option} {key!r}" if key is not None else option
        super().__init__(f"{where}: {reason}")


def split_assignment(spec: str, option: str, index: int = 0) -> tuple[str, str]:
    """``"GAP=VALUE"`` → ``("GAP", "VALUE")`` (split at the first ``=``); a
    ``ConstraintError`` when there is no ``=`` or no gap before it."""
    key, eq, value = spec.partition("=")
    if not eq or not key.strip():
        raise ConstraintError(option, "expected GAP=VALUE (GAP a gap's number or name)",
                              index=index)
    return key, value


def constrain_gaps(
    segments: Sequence[str | Gap],
    *,
    choices: Sequence[tuple[str, Sequence[str]]] = (),
    regex: Sequence[tuple[str, str]] = (),
    charset: Sequence[tuple[str, str]] = (),
    ban: Sequence[str] = (),
) -> list[str | Gap]:
    """The template's segments (``parse_template``) with constraints set on its gaps.

    ``choices``, ``regex`` and ``charset`` are ``(gap, value)`` pairs, the gap named by its
    number (1-based, in template order) or its name; ``choices`` values are the allowed
    texts, ``regex`` a pattern (outlines-core's syntax, docs/infill.md), ``charset`` a class name
    of ``unmask.infill.template.NAMED_CLASSES``. ``ban`` applies to every gap: no gap holds a token
    containing one of these words. Each gap's constraint is checked here, so a bad
    class, or a gap constrained twice by one option, fails before any model work
    (``ConstraintError`` for an unknown gap or a repeat, the gap's own ``UserError`` for
    its language).
    """
    out: list[str | Gap] = list(segments)
    gaps = [k for k, p in enumerate(out) if isinstance(p, Gap)]
    numbers = {k: n for n, k in enumerate(gaps, 1)}
    given = {"choices": [(key, list(v)) for key, v in choices], "regex": list(regex),
             "charset": list(charset)}
    checked: dict[int, dict[str, None]] = {}  # per gap: the fields its entries set, checked
    for option, field in GAP_OPTIONS.items():
        seen: set[int] = set()
        for index, (key, value) in enumerate(given[option]):
            try:
                k = find_gap(out, key)
            except UserError as e:
                raise ConstraintError(option, str(e), index=index, key=key) from None
            gap = out[k]
            assert isinstance(gap, Gap)
            if k in seen:
                raise ConstraintError(option, f"{_named(gap, numbers[k])} is given twice")
            seen.add(k)
            try:  # this entry's own language, so that its error names it (regex.2)
                check_gap(Gap(**{field: value}), _named(gap, numbers[k]))
            except UserError as e:
                raise ConstraintError(option, str(e), index=index, key=key) from None
            out[k] = dataclasses.replace(gap, **{field: value})
            checked.setdefault(k, {})[field] = None
    if any(not word for word in ban):
        raise ConstraintError("ban", "the word is empty")
    for k, n in numbers.items():
        gap = out[k]
        assert isinstance(gap, Gap)
        if ban:
            gap = out[k] = dataclasses.replace(gap, banned=list(ban))
        rest = dataclasses.replace(gap, **checked.get(k, {}))  # what no entry set (a Gap
        if rest.shapes_text:  # given constrained): class errors before loading anything
            check_gap(rest, _named(gap, n))
    return out


__all__ = ["GAP_OPTIONS", "ConstraintError", "constrain_gaps", "split_assignment"]
