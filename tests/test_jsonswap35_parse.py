"""Session 35 (jsonswap): ``unmask.files.parse_json`` names the place of the integer that
failed, not of a long digit string before it (review rm4 finding 1); and the task and gap-set
readers, which lost their own except clauses to it, still say a deep line and a long integer
in one line naming file:line (finding 2)."""

from __future__ import annotations

import sys

import pytest

from unmask.errors import UserError

LONG = "1" * 5000  # past sys.get_int_max_str_digits(): 4,300 by default
LONG_DIGITS = "an integer of more than 4,300 digits"
DAMAGE = {
    "deep": ("[" * 100_000 + "]" * 100_000, "nested too deep to read"),
    "long": ('{"steps": ' + LONG + "}", LONG_DIGITS),
}
needs_limit = pytest.mark.skipif(
    not getattr(sys, "get_int_max_str_digits", lambda: 0)(),
    reason="this Python converts integers of any length",
)

@needs_limit
def test_the_long_integer_is_placed_where_the_number_is_not_a_digit_string():
    """A 5,000-digit string before the long integer named the string's line (1) or column."""
    from unmask.files import BadJSON, parse_json

    text = '{"id": "' + "7" * 5000 + '",\n "n": ' + LONG + "}"
    with pytest.raises(BadJSON) as got:
        parse_json(text, "x.json")
    assert got.value.why == f"{LONG_DIGITS} at line 2"
    one_line = '{"id": "a\\"' + "7" * 5000 + '", "f": 1.' + "2" * 5000 + ', "n": -' + LONG + "}"
    with pytest.raises(BadJSON) as got:
        parse_json(one_line, "x.jsonl", line=3)
    assert got.value.why == f"{LONG_DIGITS} at column {one_line.index('-') + 1}"


@pytest.mark.parametrize("reader", ["items", "gaps"])
@pytest.mark.parametrize("damage", ["deep", pytest.param("long", marks=needs_limit)])
def test_task_and_gap_files_say_deep_and_long_in_one_line(tmp_path, reader, damage):
    """``read_items`` and ``read_gap_set`` lost their own except clauses to ``parse_json``:
    this pins that a deep line and a long integer are still one line naming file:line."""
    from unmask.gapset import read_gap_set
    from unmask.tasks import read_items
    from unmask.tokenizer import byte_tokenizer

    path = tmp_path / "x.jsonl"
    path.write_text("\n" + DAMAGE[damage][0] + "\n")  # a blank line 1, skipped
    with pytest.raises(UserError) as got:
        read_items(path) if reader == "items" else read_gap_set(path, byte_tokenizer())
    msg = str(got.value)
    assert "\n" not in msg and msg.startswith(f"{path}:2: not ") and DAMAGE[damage][1] in msg
