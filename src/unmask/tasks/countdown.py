"""Countdown: reach a target number from a few numbers with + - * /.

The second planning task of Ye et al. 2024 (arXiv:2410.14157, Countdown with 3-5 numbers):
a model must find a sequence of operations that uses every given number once and ends at
the target; many sequences may work, so answers are checked by ``check_steps``, not by
string match. Generated instances always have a solution (the one written in the answer),
made by combining the numbers in a random order with random valid operations.

Inside: ``make_instance``, ``parse_steps``, ``check_steps``, ``solutions`` (every answer
``check_steps`` accepts, written as the generator writes steps: what the scorer sizes the
room decoded by).

Text format: prompt ``"12,7,3>22:"``, answer ``"12+7=19,19+3=22"``-like steps ``a op b=c``
joined by ``,``; a step may use the given numbers and earlier results, each once.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from collections.abc import Sequence

OPS = "+-*/"

MAX_SEARCH = 5
"""The most numbers ``solutions`` searches (Ye et al. use 3 to 5): at most 192 step
sequences at 3 numbers, 9,216 at 4, 737,280 at 5 (``k! (k-1)! 4**(k-1)``: an ordered pair
and an operation a step; fewer once pools reached twice are shared), 88 million at 6."""

_NUMBER = r"(0|[1-9][0-9]*)"
"""A number as written in the prompt and by ``solutions``: ASCII digits (``\\d`` alone reads
Arabic-Indic digits as numbers; the sudoku checker refuses other digits too) and no leading
zero: ``039`` is not the given 39 (until 2026-12-06 it counted as 39, an answer longer than
any the room decoded holds; see ``solutions``)."""

_STEP = re.compile(rf"^\s*{_NUMBER}\s*([-+*/])\s*{_NUMBER}\s*=\s*{_NUMBER}\s*$", re.ASCII)
"""One step ``a op b=c``, spaces around its parts allowed."""


def _apply(a: int, op: str, b: int) -> int | None:
    """``a op b`` when it is a positive integer (the Countdown rules), else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


def make_instance(
    n_numbers: int, rng: random.Random, *, max_number: int = 99, max_target: int = 999
) -> tuple[list[int], int, list[str]]:
    """(numbers, target, steps): ``n_numbers`` numbers in 1..``max_number`` and a target
    reached by combining them all with random operations whose results stay positive
    integers up to ``max_target`` (redrawn until one does); ``steps`` is that solution."""
    if n_numbers < 2:
        raise ValueError(f"countdown needs at least 2 numbers, got {n_numbers}")
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        pool = list(numbers)
        steps: list[str] = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            a, b = max(pool[i], pool[j]), min(pool[i], pool[j])
            choices = [op for op in OPS if (r := _apply(a, op, b)) is not None and r <= max_target]
            if not choices:
                break
            op = rng.choice(choices)
            r = _apply(a, op, b)
            assert r is not None
            steps.append(f"{a}{op}{b}={r}")
            pool = [v for k, v in enumerate(pool) if k not in (i, j)] + [r]
        if len(pool) == 1 and steps:
            return numbers, pool[0], steps


def parse_steps(text: str) -> list[tuple[int, str, int, int]] | None:
    """``"a op b=c,..."`` as (a, op, b, c) tuples; None when a step does not parse (a
    number with a leading zero, or digits other than ASCII, among them)."""
    out = []
    for part in text.strip().split(","):
        m = _STEP.match(part)
        if m is None:
            return None
        try:
            out.append((int(m[1]), m[2], int(m[3]), int(m[4])))
        except ValueError:  # past int()'s 4,300 digits (a model that never stopped)
            return None
    return out


def check_steps(text: str, numbers: Sequence[int], target: int) -> bool:
    """Whether ``text`` solves the instance: every step parses, is arithmetically right
    under the Countdown rules, uses only numbers still available (given or earlier
    results, each once), every given number is used and the last result is ``target``.
    Every number is written as given: in ASCII digits without a leading zero (``parse_steps``),
    so that what is accepted is, spaces aside, one of ``solutions``."""
    steps = parse_steps(text)
    if not steps:
        return False
    pool = Counter(numbers)
    for a, op, b, c in steps:
        if _apply(a, op, b) != c:
            return False
        pool[a] -= 1
        pool[b] -= 1
        if pool[a] < 0 or pool[b] < 0:
            return False
        pool[c] += 1
    left = +pool
    return sum(left.values()) == 1 and left[target] == 1 and steps[-1][3] == target


def solutions(numbers: Sequence[int], target: int) -> list[str]:
    """Every answer ``check_steps`` accepts for the instance, written as ``make_instance``
    writes steps (``a op b=c`` joined by ``,``, no spaces, no leading zeros), sorted: each
    order of the steps and of a ``+`` or ``*``'s operands is one. A brute force over every
    sequence of steps, the pools reached twice (the same steps in another order) searched
    once; more than ``MAX_SEARCH`` numbers is a ``ValueError`` (each number more multiplies
    the search by 50 to 120)."""
    if len(numbers) > MAX_SEARCH:
        raise ValueError(f"solutions searches up to {MAX_SEARCH} numbers, got {len(numbers)}")

    @functools.cache
    def finish(pool: tuple[int, ...]) -> tuple[str, ...]:
        """The step lists (joined) that take the sorted ``pool`` to ``target``."""
        if len(pool) == 1:
            return ("",) if pool[0] == target else ()
        out: list[str] = []
        pairs = {(pool[i], pool[j], i, j) for i in range(len(pool)) for j in range(len(pool))
                 if i != j}
        seen: set[tuple[int, int]] = set()
        for a, b, i, j in sorted(pairs):
            if (a, b) in seen:  # the same values at other places: the same steps
                continue
            seen.add((a, b))
            rest = [v for k, v in enumerate(pool) if k not in (i, j)]
            for op in OPS:
                r = _apply(a, op, b)
                if r is None:
                    continue
                step = f"{a}{op}{b}={r}"
                out += [step + ("," + tail if tail else "") for tail in finish(
                    tuple(sorted([*rest, r])))]
        return tuple(out)

    if len(numbers) < 2:  # no step to write: check_steps accepts nothing
        return []
    return sorted(finish(tuple(sorted(numbers))))


__all__ = ["MAX_SEARCH", "OPS", "check_steps", "make_instance", "parse_steps", "solutions"]
