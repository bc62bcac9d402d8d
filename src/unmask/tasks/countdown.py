"""Countdown: reach a target number from a few numbers with + - * /.

The second planning task of Ye et al. 2024 (arXiv:2410.14157, Countdown with 3-5 numbers):
a model must find a sequence of operations that uses every given number once and ends at
the target; many sequences may work, so answers are checked by ``check_steps``, not by
string match. Generated instances always have a solution (the one written in the answer),
made by combining the numbers in a random order with random valid operations.

Inside: ``make_instance``, ``parse_steps``, ``check_steps``.

Text format: prompt ``"12,7,3>33:"``, answer ``"12+7=19,19+3=22"``-like steps ``a op b=c``
joined by ``,``; a step may use the given numbers and earlier results, each once.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

OPS = "+-*/"

_STEP = re.compile(r"^\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)\s*$", re.ASCII)
"""One step, ASCII digits only: ``\\d`` alone reads Arabic-Indic digits as numbers (the
sudoku checker refuses other digits too)."""


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
    """``"a op b=c,..."`` as (a, op, b, c) tuples; None when a step does not parse."""
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
    results, each once), every given number is used and the last result is ``target``."""
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


__all__ = ["OPS", "check_steps", "make_instance", "parse_steps"]
