"""One-line refusals for two template inputs: an empty ``choices`` list (a gap's, a form
``<choice:...>`` hole listing only empty choices) and counts in digits other than ASCII
(``３``, ``٣``, ``²``: ``int`` and ``str.isdigit`` take some of them)."""

from __future__ import annotations

import pytest

from unmask.cli import main
from unmask.errors import UserError
from unmask.infill import Gap, find_gap, parse_form, parse_template
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def refused(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_an_empty_choices_list_is_refused_when_the_gap_is_made():
    assert "choices is empty" in refused(lambda: Gap(choices=[]))
    assert "choices is empty" in refused(lambda: Gap(choices=(), name="city"))
    assert "choices are texts, not int (1)" in refused(lambda: Gap(choices=["a", 1]))
    assert Gap(choices=["a", ""]).choices == ["a", ""]  # an empty one beside others: optional


def test_a_form_choice_hole_listing_only_empty_choices_is_refused():
    for spec in ("<choice:|>", "<choice:||>"):
        assert "lists no choice" in refused(lambda s=spec: parse_form({"x": s}, TOK))
    _, holes, _ = parse_form({"x": "<choice:a||b>"}, TOK)  # "" is one of the choices
    assert holes[0].kind == "choice"


@pytest.mark.parametrize("key", ["３", "٣", "²", "1²"])
def test_a_gap_number_in_other_digits_is_no_gap_number(key):
    segments = parse_template("a [MASK] b [MASK] c [MASK]")
    assert find_gap(segments, "3") == 5
    assert "name a gap by number (ASCII digits)" in refused(lambda: find_gap(segments, key))


@pytest.mark.parametrize("spec", ["<text:３>", "<text:²>", "<text:٣>", "<digits:１-３>",
                                  "<text:2-３>", "<int:０..９>", "<float:０.５..２>",
                                  "<int:1-３>"])
def test_a_form_hole_count_in_other_digits_is_refused(spec):
    message = refused(lambda: parse_form({"x": spec}, TOK))
    assert "bad length" in message or "bad range" in message, message


def test_ascii_counts_still_work():
    _, holes, _ = parse_form({"a": "<text:3>", "b": "<digits:1-3>", "c": "<int:0..9>",
                              "d": "<float:0.5..2>"}, TOK)  # fmt: skip
    assert [h.kind for h in holes] == ["text", "digits", "int", "float"]


def test_the_cli_refuses_a_superscript_gap_number_in_one_line(capsys):
    """``--choices '²=a|b'`` was a ValueError traceback (``'²'.isdigit()`` is true)."""
    assert main(["infill", "--model", "nowhere", "--choices", "²=a|b", "x [MASK] y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no gap '²'" in err[0]
