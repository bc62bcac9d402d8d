"""The DFA-size check counts what the engine builds, bytes: a pattern whose byte DFA
explodes although its characters' does not (``\\w*a\\w{12}``: 122 s in the engine), one
written with the engine's own escapes (``\\p{L}``, once read as a literal ``x``), or one too
long to count is refused before the engine sees it, and the count's own work is bounded
(``(?:[a-z]{0,100}){100}`` took 100 s of it)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import dfa
from unmask.infill.automaton import MAX_DFA_STATES, check_size
from unmask.infill.dfa import dfa_states

SLOW = [r"\w*a\w{12}", r"\w*a\w{10}", r"\p{L}*a\p{L}{20}", r"[^\P{L}]*a[\p{L}]{20}",
        ".*a.{30}(?:x{1000}){50}",
        # the engine's own syntax, which Python's parser (the count's) refused: not counted
        r"\w*a\w{12}\z", r"[[:alpha:]]*a\w{12}", r"\w*a\w{12}(?-u:\w)", r"(?U)\w*a\w{12}"]


@pytest.mark.parametrize("pattern", SLOW)
def test_a_pattern_slow_in_the_engine_is_refused_before_it(pattern, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the engine was asked to build it")

    monkeypatch.setattr("outlines_core.Index", never)
    with pytest.raises(UserError, match=f"over {MAX_DFA_STATES} states"):
        check_size(pattern, "guided_regex")


def test_the_count_is_of_bytes_not_characters():
    # 62 sets of positions; the engine's DFA has 18,999 states (the ways a partial
    # character may still end as a word or a space character)
    n = dfa_states(r"\w{1,30}\s\w{1,30}", 10**6)
    assert n is not None and 15_000 < n <= MAX_DFA_STATES
    assert dfa_states(r"[a-z]{1,30} [a-z]{1,30}", 10**6) < 1000  # ASCII: no such states


def test_the_count_spends_a_bounded_work(monkeypatch):
    spent = []
    spend = dfa._Work.spend

    def counting(self, units):
        spent.append(units)
        spend(self, units)

    monkeypatch.setattr(dfa._Work, "spend", counting)
    budget = 200_000
    assert dfa_states("(?:[a-z]{0,100}){100}", 10**9, budget=budget) == 10**9 + 1
    assert sum(spent) <= budget + max(spent)  # stopped at the first spend past it
    assert dfa.WORK_BUDGET >= budget


def test_everyday_patterns_are_counted_in_budget():
    for pattern in (r"\w+( \w+){0,30}", r"[^\n]{0,500}", r"\s*\w{1,20}\s*=\s*\d{1,10}\s*",
                    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,24}"):
        check_size(pattern)


def test_a_schema_of_many_optional_keys_still_compiles():
    """Its regex is 13,000 positions: the work of counting it is well within the budget
    (the budget's units were first weighed so that it was refused)."""
    from unmask.infill.schema import constraint_form
    from unmask.tokenizer import byte_tokenizer

    kinds = [{"type": "integer"}, {"type": "string", "maxLength": 10}, {"enum": ["a", "b"]},
             {"type": "number"}]
    row = {"type": "object", "properties": {f"f{i}": kinds[i % 4] for i in range(8)}}
    schema = {"type": "object", "required": ["rows"],
              "properties": {"rows": {"type": "array", "maxItems": 5, "items": row}}}
    constraint_form(byte_tokenizer(), max_tokens=16, json_schema=schema, source="schema")
