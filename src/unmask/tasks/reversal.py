"""A synthetic reversal set: facts trained one way, asked the other.

The reversal curse (Berglund et al. 2023, arXiv:2309.12288): a model trained on "A's child
is B" does not answer "B's parent is ?" with A. LLaDA (Nie et al. 2025, arXiv:2502.09992,
Table 4) reports that masked diffusion, which learns to predict any masked token from the
rest, suffers far less than autoregressive models. Here the facts are made-up names, so
nothing but the training data can answer them:

- ``both`` pairs appear in training in both directions ("A's child is B" and "B's parent
  is A", one line each, no full stop): they teach the two templates;
- ``forward`` pairs appear only as "A's child is B": asked forward (``A's child is`` →
  B) they test memory, asked in reverse (``B's parent is`` → A) the reversal.

Inside: ``make_names``, ``child_line``, ``parent_line``.
"""

from __future__ import annotations

import random

from unmask.errors import UserError

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def make_names(n: int, rng: random.Random, *, syllables: int | None = None) -> list[str]:
    """``n`` distinct capitalised names of ``syllables`` consonant-vowel syllables (``"Kato"``):
    all of one length, so a gap of that many characters holds any of them. ``syllables``
    defaults to the fewest (2 or more) that leave room for ``n``: names are drawn from at
    most half of the ``70 ** syllables`` that exist, so drawing them stays quick. More than
    that for a given ``syllables`` is a ``UserError`` naming the limit."""
    per = len(CONSONANTS) * len(VOWELS)
    if syllables is None:
        syllables = 2
        while n > per**syllables // 2:
            syllables += 1
    limit = per**syllables // 2
    if n > limit:
        raise UserError(
            f"asked for {n} names of {syllables} syllables; at most {limit} are drawn "
            f"(half of the {per**syllables} that exist)"
        )
    names: dict[str, None] = {}  # in the order drawn: a set's order changes with the
    # process's string-hash salt (PYTHONHASHSEED), and the task files with it
    while len(names) < n:
        names["".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables))] = None
    return [s.capitalize() for s in names]


def child_line(parent: str, child: str) -> tuple[str, str]:
    """(prompt, answer) of the forward fact: ``"Kato's child is"``, ``" Mira"``. The space
    goes with the answer, as a word-level tokenizer (BPE) splits the whole line: a prompt
    ending in a space token was one no training line holds (`` is``, `` M`` in training;
    `` is``, `` ``, ``M`` asked), as written before 2026-12-06."""
    return f"{parent}'s child is", f" {child}"


def parent_line(parent: str, child: str) -> tuple[str, str]:
    """(prompt, answer) of the reverse fact: ``"Mira's parent is"``, ``" Kato"``."""
    return f"{child}'s parent is", f" {parent}"


__all__ = ["child_line", "make_names", "parent_line"]
