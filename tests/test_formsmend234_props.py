"""The size estimate reads the engine's long property names (session 34 review rm3): only the
short general category codes (``\\p{L}``) were read, so ``\\p{Letter}``, ``\\p{gc=L}`` or
``\\p{Alphabetic}`` counted as any character, a fraction of the engine's states, and an array
of ``^[\\p{Letter} '-]{1,50}$`` was built by the engine (44,796 states, 35 s at a 32,000-token
vocabulary) before it was refused. And a scoped ``(?x:..)`` group is no verbose pattern."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import _index, vocab_of
from unmask.infill.dfa import dfa_states
from unmask.infill.forms import value_automaton
from unmask.infill.schema import schema_form
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
BYTES = vocab_of(TOK)


@pytest.mark.parametrize("name", ["Letter", "gc=L", "General_Category=Letter", "isLetter",
                                  "gc:Lu", "Uppercase_Letter", "Punctuation", "Cased_Letter",
                                  "Decimal_Number", "Lowercase", "White_Space", "Alphabetic",
                                  "Unassigned", "Cn", "gc!=Lu", "Cased", "gc=Assigned"])
def test_a_property_by_its_long_name_is_counted_as_its_characters(name):
    """Read as any character, such a class split no UTF-8 prefix: ``[\\p{Letter} '-]{1,20}``
    was estimated at 183 states, the engine builds 5,986 (``\\p{Cn}``, whose last range
    ended at the placeholder for any character, U+10FFFE, likewise)."""
    pattern = "[\\p{" + name + "} '-]{1,20}"
    built = len(_index(pattern, BYTES, "regex").get_transitions())
    assert 0.9 * built <= dfa_states(pattern, 10**6) <= 1.2 * built


@pytest.mark.parametrize("name", ["ASCII", "Assigned"])
def test_a_general_category_spelling_of_a_binary_property_reads_as_its_bare_name(name):
    """The engine reads ``any``, ``ascii`` and ``assigned`` as general category values too:
    ``\\p{gc=Assigned}`` counted as any character, 183 states of the engine's 6,248 on the
    pattern below (review rm7 item 3)."""
    assert dfa_states("[\\p{gc=" + name + "} '-]{1,20}", 10**6) == dfa_states(
        "[\\p{" + name + "} '-]{1,20}", 10**6)


def test_a_negated_value_is_read_as_the_engine_reads_it():
    """The engine's ``\\p{gc!=Nd}`` is ``\\p{Nd}`` (it does not negate): read as the other
    characters, the class below was counted at 1,264 states, the engine builds 110."""
    pattern = "[[a-z\\p{gc!=Nd}]--\\p{L}]{1,4}x"
    built = len(_index(pattern, BYTES, "regex").get_transitions())
    assert 0.9 * built <= dfa_states(pattern, 10**6) <= 1.2 * built


@pytest.mark.parametrize("name", ["Letter", "gc=L", "General_Category=Letter", "Alphabetic"])
def test_an_array_of_letters_by_a_long_name_is_refused_before_the_engine_builds_it(
        monkeypatch, name):
    def engine(*args, **kwargs):
        raise AssertionError("the engine built the pattern")

    monkeypatch.setattr(automaton, "_index", engine)
    schema = {"type": "array", "maxItems": 3,
              "items": {"type": "string", "pattern": "^[\\p{" + name + "} '-]{1,50}$"}}
    with pytest.raises(UserError, match="too large"):
        schema_form(schema, TOK)


def test_a_range_ending_in_an_operator_character_ends_before_the_operation():
    """The engine reads ``[ -~~~a]`` as the range `` -~``, ``~~``, ``a``: the count took the
    first ``~~`` as the operation, and counted 37 states of the engine's 74."""
    written_out = dfa_states("(?:[ -`b-~]|[b-d]{0,3}){6}", 10**6)
    assert dfa_states("(?:[ -~~~a]|[b-d]{0,3}){6}", 10**6) == written_out


def _items(pattern: str) -> dict:
    return {"type": "array", "items": {"type": "string", "pattern": pattern}, "maxItems": 3}


def test_a_pattern_all_in_a_scoped_verbose_group_ignores_its_whitespace():
    """``^(?x: ... )$`` is verbose inside the group, as the engine reads it: a first fix for
    raw whitespace after a scoped group read such a pattern as not verbose at all (review
    rm7), and its whitespace became characters no JSON string holds raw."""
    hole = schema_form(_items("^(?x: [a-z]+ \t [0-9]+ )$"), TOK)
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('["ab12"]', TOK)


def test_a_verbose_flag_group_that_also_clears_a_flag_still_ignores_raw_whitespace():
    hole = schema_form(_items("^(?x-i)[a-z]+ \t[0-9]+$"), TOK)
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('["ab12"]', TOK)


@pytest.mark.parametrize("pattern", ["^(?x:a)\tb$", "^(?x)(?-x:a\tb)$", "^(?x)a(?-x)\tb$"])
def test_raw_whitespace_where_the_verbose_flag_is_off_is_no_raw_json_character(pattern):
    """The ``x`` flag is tracked per position (review rm7 items 1, 2): read per pattern, a raw
    tab after a scoped ``(?x:..)`` group, or where ``(?-x)`` turned verbose off, was kept, and
    the array accepted ``["a<TAB>b"]``, which is no JSON."""
    with pytest.raises(UserError, match="no value"):  # a tab it needs raw: unsatisfiable
        schema_form(_items(pattern), TOK)


def test_raw_whitespace_after_a_verbose_flag_mid_pattern_is_ignored():
    """``(?x)`` after the start turns verbose on to the end of its group: the tab after it is
    no character (it was read as a raw one, and the pattern refused as unsatisfiable)."""
    hole = schema_form(_items("^a(?x)\tb$"), TOK)
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('["ab"]', TOK)


def test_a_verbose_comment_in_a_scoped_group_ends_at_its_newline():
    hole = schema_form(_items("^(?x:\n  [a-z]+  # a word (or two\n)$"), TOK)
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('["ab"]', TOK)
