"""Session 38 (forms): a regex the engine refuses for a part that never matches."""

from __future__ import annotations

import re

import pytest

from unmask.errors import UserError
from unmask.infill import parse_form
from unmask.infill.template import Gap, own_automaton
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


@pytest.mark.parametrize(("pattern", "anchor"), [
    ("a|b$c", "$"), ("a^b|c", "^"), ("(?:a$|b)c", "$"), (r"x|y\Az", r"\A"),
])
def test_an_inner_anchor_the_engine_refuses_is_named_not_called_unmatchable(pattern, anchor):
    # Python's re.fullmatch matches "a" / "c" / "bc" / "x": "no sequence of this tokenizer's
    # tokens matches it" was wrong; the engine refuses any pattern with a dead-end part
    with pytest.raises(UserError, match=rf"it has an anchor \({re.escape(anchor)}\) inside"):
        own_automaton(Gap(regex=pattern), TOK)


def test_the_anchor_is_named_in_a_form_hole_too():
    with pytest.raises(UserError, match=r"^form template: hole \$\.a '<regex:a\|b\$c>': regex: "
                                        r"it has an anchor \(\$\) inside the pattern"):
        parse_form('{"a": "<regex:a|b$c>"}', TOK)


@pytest.mark.parametrize("pattern", ["x[^\\s\\S]", "[^\\s\\S]", "(?:^a|b)c[^\\s\\S]",
                                     "a$|b[^\\s\\S]"])
def test_a_pattern_with_no_anchor_that_matches_nothing_keeps_its_message(pattern):
    with pytest.raises(UserError, match="no sequence of this tokenizer's tokens matches it$"):
        own_automaton(Gap(regex=pattern), TOK)


@pytest.mark.parametrize("pattern", ["^ab$", r"a\$b|[$^]", "(?:^a|b)c"])
def test_anchors_at_the_ends_escaped_or_in_a_class_still_compile(pattern):
    own_automaton(Gap(regex=pattern), TOK)


@pytest.mark.parametrize(("pattern", "anchor"), [("a$$", "$"), ("^^a", "^"), ("^^a$$", "^")])
def test_an_anchor_repeated_at_an_end_is_called_repeated(pattern, anchor):
    # Python's fullmatch takes "a": the anchor holds at the end; it was said to be "inside
    # the pattern, which never holds there", with the advice to write anchors at the ends
    with pytest.raises(UserError, match=rf"it repeats an anchor \({re.escape(anchor)}\) at an "
                                        r"end, which the regex engine refuses; write each "
                                        r"anchor once$"):
        own_automaton(Gap(regex=pattern), TOK)
