"""One-line errors about a user's regex: a long pattern is quoted shortened
(``automaton.quote_pattern``), and a syntax error's column points into the pattern as the user
wrote it (a gap's regex with anchors, a ``<regex:...>`` hole, a JSON Schema ``pattern``)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import Gap, parse_form
from unmask.infill.automaton import check_size
from unmask.infill.schema import schema_form
from unmask.infill.template import plan_template
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
HUGE = "[a-z]{999}" * 120  # 1,200 characters that expand past MAX_PATTERN_SIZE


def test_a_short_pattern_is_quoted_whole_and_a_long_one_shortened():
    from unmask.infill.automaton import QUOTE_CHARS, quote_pattern

    assert quote_pattern("ab(c") == "'ab(c'"
    assert quote_pattern("x" * QUOTE_CHARS) == repr("x" * QUOTE_CHARS)
    long = "a" * 30 + "b" * 1000 + "c" * 30
    quoted = quote_pattern(long)
    assert quoted.startswith("'aaaa") and quoted.endswith("cc' (1060 characters)")
    assert "..." in quoted and len(quoted) < QUOTE_CHARS + 40


def where(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("call", [
    lambda: plan_template(["a ", Gap(regex=HUGE), " b"], TOK),
    lambda: parse_form({"x": f"<regex:{HUGE}>"}, TOK),
    lambda: schema_form({"type": "object", "properties": {"x": {"type": "string",
                         "pattern": HUGE}}, "required": ["x"]}, TOK),
])  # fmt: skip
def test_a_too_large_pattern_is_not_quoted_whole(call):
    message = where(call)
    assert "too large" in message  # quoted shortened, or (a schema's) not at all
    assert HUGE not in message and len(message) < 400, len(message)


def test_check_size_quotes_a_huge_quantifier_shortened():
    message = where(lambda: check_size("a{" + "9" * 500 + "}"))
    assert "too large (quantifier '{999" in message and "(502 characters)" in message


@pytest.mark.parametrize("pattern, column, reason", [
    ("^ab(c$", 4, "missing ), unterminated subpattern"),  # the anchor counts: "(" is the 4th
    ("abc)", 4, "unbalanced parenthesis"),
    ("x{2,1}", 3, "min repeat greater than max repeat"),
    ("^[b-a]x", 3, "bad character range b-a"),
])
@pytest.mark.parametrize("where_from", ["gap", "form", "schema"])
def test_a_syntax_error_names_the_column_of_the_users_pattern(pattern, column, reason,
                                                              where_from):
    calls = {
        "gap": lambda: plan_template(["a ", Gap(regex=pattern), " b"], TOK),
        "form": lambda: parse_form({"x": f"<regex:{pattern}>"}, TOK),
        "schema": lambda: schema_form({"type": "object", "properties": {"x": {
            "type": "string", "pattern": pattern}}, "required": ["x"]}, TOK),
    }  # fmt: skip
    message = where(calls[where_from])
    assert f"({reason} at column {column})" in message, message
    assert repr(pattern) in message or f"<regex:{pattern}>" in message, message


def test_a_schema_pattern_the_engine_rejects_is_refused():
    """``ab\\`` (a dangling escape) was written inside the value's JSON regex, where it escaped
    the closing quote, and was filled instead of refused."""
    message = where(lambda: schema_form({"type": "string", "pattern": "ab\\"}, TOK))
    assert "pattern 'ab\\\\'" in message and "bad escape" in message
