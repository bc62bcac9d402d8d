"""Patterns whose size the estimate could not read got past both bounds (review rf29): the
engine's named groups ``(?<n>...)``, its ``U`` flag and its class set operations made Python's
parser fail, ``dfa_states`` returned None, and ``check_size`` / ``check_total`` let the
pattern through as if it were small (``(?<n>x).*a.{17}`` then took 39 s of the engine). A
schema's ``$defs`` entry named ``const`` was not searched for patterns; ``check_syntax``
read ``x{2, }`` (refused by the engine) as ``x{1,}`` (read)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import MAX_DFA_STATES, check_size, check_syntax, check_total
from unmask.infill.dfa import dfa_states

BIG = ".*a.{30}"  # 2^31 states


@pytest.mark.parametrize("engine, python", [
    ("(?<n>x)y", "(?:x)y"),
    ("(?P<n>x)y", "(?:x)y"),
    ("(?s-U).a*", "(?s).a*"),
    ("(?i-U:a)b", "(?i:a)b"),
    ("(?U)a*b", "a*b"),
    ("[a--b]x", "ax"),  # a class with a set operation: as its characters (session 34)
    ("[a~~b]x", "[ab]x"),
    ("[a-z&&[^aeiou]]x", "[b-df-hj-np-tv-z]x"),
    ("[a[b[c]]]x", ".x"),  # nested deeper than the count reads: as any character
])  # fmt: skip
def test_the_engines_own_syntax_is_counted(engine, python):
    assert dfa_states(engine, 10**6) == dfa_states(python, 10**6) is not None


@pytest.mark.parametrize("prefix", ["(?<n>x)", "(?s-U)", "[a--b]", "[a~~b]"])
def test_a_large_pattern_in_the_engines_syntax_is_refused(prefix):
    with pytest.raises(UserError, match="too large"):
        check_size(prefix + BIG)


def test_named_groups_count_toward_the_request_bound():
    named = [(f"p{i}", f"^(?<n>{chr(65 + i)})[\\w ]{{1,60}}$") for i in range(5)]
    with pytest.raises(UserError, match="too large in all"):
        check_total(named, "guided_json")


def test_a_pattern_the_estimate_cannot_read_is_refused_not_counted_as_small(monkeypatch):
    monkeypatch.setattr(automaton, "dfa_sizes", lambda pattern, limit: None)
    automaton._estimated_sizes.cache_clear()
    try:
        with pytest.raises(UserError, match="its size cannot be bounded") as e:
            check_size("xy*")
        assert "\n" not in str(e.value)
        with pytest.raises(UserError, match="its size cannot be bounded"):
            check_total([("p0", "xy*")], "guided_json")
        # one the engine rejects anyway is left to the engine's own error
        check_size("x{2,1}")
        check_total([("p0", "x{2,1}")], "guided_json")
        with pytest.raises(UserError, match="min repeat greater than max repeat"):
            check_syntax("x{2,1}")
    finally:
        automaton._estimated_sizes.cache_clear()


def test_estimates_are_within_the_limit_for_small_patterns_in_the_engines_syntax():
    for pattern in ("(?<year>[0-9]{4})-(?<month>[0-9]{2})", "(?s-U:a.b)", "[\\w--\\d]+"):
        check_size(pattern)
        assert dfa_states(pattern, MAX_DFA_STATES) <= MAX_DFA_STATES


@pytest.mark.parametrize("pattern", ["x{2, }", "[a-z]{1, }"])
def test_check_syntax_reads_counts_as_the_engine_does(pattern):
    with pytest.raises(UserError, match="rejects it"):
        check_syntax(pattern)
    with pytest.raises(UserError, match="rejects it"):  # not cached as read
        check_syntax(pattern)


def test_check_syntax_still_passes_what_the_engine_reads():
    for pattern in ("x{2,}", "a{3}", "[a-z]{2,5}", "(?<n>x)[a--b]", "\\x{41}{2}"):
        check_syntax(pattern)


def test_an_escaped_paren_is_not_read_as_a_group():
    from unmask.infill.dfa import _for_python

    assert _for_python("\\(?<n>x)") == "\\(?<n>x)"
    assert _for_python("\\(?i)a") == "\\(?i)a"
    assert _for_python("\\\\(?<n>x)") == "\\\\(?:x)"
