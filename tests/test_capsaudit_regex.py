"""A regex the engine cannot hold names what it holds: lookaround and backreferences were
refused as "error building NFA"."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill.automaton import check_regex
from unmask.infill.schema import check_schema


@pytest.mark.parametrize(("pattern", "named"), [
    ("a(?=b)", "lookahead or lookbehind"),
    ("(?<!x)y", "lookahead or lookbehind"),
    (r"(a)\1", "a backreference"),
    ("(?P<n>a)(?P=n)", "a backreference"),
    ("(a)?(?(1)b|c)", "a conditional group"),
])
def test_what_no_automaton_holds_is_named(pattern, named):
    with pytest.raises(UserError) as e:
        check_regex(pattern, "guided_regex")
    message = str(e.value)
    assert f"({named}" in message and "not supported" in message and "\n" not in message
    with pytest.raises(UserError, match=named):  # a schema's pattern, likewise
        check_schema({"type": "string", "pattern": pattern})


def test_other_errors_keep_their_column():
    with pytest.raises(UserError, match="at column 1"):
        check_regex("(")


def test_a_choice_list_too_large_is_told_to_send_fewer_or_shorter_choices():
    import random
    import string

    from unmask.infill.schema import constraint_form
    from unmask.tokenizer import byte_tokenizer

    rng = random.Random(0)
    choices = ["".join(rng.choice(string.ascii_letters) for _ in range(256)) for _ in range(256)]
    with pytest.raises(UserError) as e:
        constraint_form(byte_tokenizer(), choice=choices, source="guided_choice")
    message = str(e.value)
    assert message.startswith("guided_choice: too large (the choices'") and "\n" not in message
    assert "fewer or shorter choices" in message and "repetition" not in message, message
