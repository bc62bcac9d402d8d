"""A gap written over two lines (whitespace inside the brackets may be a line break) was
refused by ``Gap`` itself in a two-line error; ``source_line`` names it on one, as the plan's
messages (``_named``) do (review of session 29)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import Gap, parse_template


def test_a_gap_over_two_lines_is_refused_on_one():
    for make in (lambda: Gap(min_len=1, max_len=300_000, source="[MASK\n:1-300000]"),
                 lambda: parse_template("a [MASK\n:1-300000]")):
        with pytest.raises(UserError) as e:
            make()
        assert "\n" not in str(e.value)
        assert "[MASK :1-300000]: 300,000 tokens is longer" in str(e.value)
    with pytest.raises(UserError, match="^template line 1 column 3: "):  # where, as any gap error
        parse_template("a [MASK\n:1-300000]")


def test_the_cli_refuses_a_gap_over_two_lines_on_one(capsys):
    from unmask.cli import main

    assert main(["infill", "--model", "demo", "a [MASK\n:1-300000]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[MASK :1-300000]" in err
