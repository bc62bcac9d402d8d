"""A string pattern narrowed to plain JSON characters (``schema._json_plain``) keeps its size
estimate (session 34 review): the narrowed class, ``[X--[\\x00-\\x1f"\\\\]]``, was read by
``dfa`` as any character, so an array of ``^[A-Za-z\\s]{1,40}$`` was estimated at over a
million states (the engine builds 1,631) and refused as too large with every tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import _index, vocab_of
from unmask.infill.dfa import dfa_states
from unmask.infill.forms import value_automaton
from unmask.infill.schema import fill_schema, schema_form
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

jsonschema = pytest.importorskip("jsonschema")

TOK = byte_tokenizer()
BYTES = vocab_of(TOK)
WORDS = [r"^[A-Za-z\s]{1,40}$", r"^\w+(,\s*\w+){0,10}$", r"^\w+(?:[\s,]+\w+){0,8}$"]


def _array(pattern: str) -> dict:
    return {"type": "array", "items": {"type": "string", "pattern": pattern}, "maxItems": 5}


@pytest.mark.parametrize("pattern", WORDS)
def test_an_array_of_a_spaced_pattern_is_filled_and_validates(pattern):
    schema = _array(pattern)
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=256)).eval()
    for seed in range(2):
        r = fill_schema(model, TOK, schema, SampleConfig(steps=4, seed=seed, temperature=1.0))
        jsonschema.validate(r.value, schema)
        assert json.loads(r.text) == r.value


@pytest.mark.parametrize("operation, ranges", [
    ("[a-z--[aeiou]]", "[b-df-hj-np-tv-z]"),
    ("[a-z&&[^aeiou]]", "[b-df-hj-np-tv-z]"),
    ("[a-f~~d-k]", "[a-cg-k]"),
    ("[[a-c][x-z]]", "[a-cx-z]"),
    ("[^a-z--[b-y]]", "[^az]"),
    (r'[ -~--["\\]]', r'[ !#-\[\]-~]'),
])
def test_a_class_set_operation_is_counted_as_its_characters(operation, ranges):
    for pattern in (f"{operation}{{1,9}}[aeiou]", f"(?:{operation}|b{{0,3}}|x){{4}}"):
        assert dfa_states(pattern, 10**6) == dfa_states(pattern.replace(operation, ranges), 10**6)


def test_an_operation_on_the_engines_own_escapes_is_counted_as_a_superset():
    """``\\p{Greek}`` (a script) is read as any character: a difference from it must not
    subtract it."""
    assert dfa_states(r"[a-c--\p{Greek}]{1,5}", 10**6) == dfa_states("[a-c]{1,5}", 10**6)
    assert dfa_states(r"[^a--\p{Greek}]{1,5}", 10**6) == dfa_states("(?s:.){1,5}", 10**6)


@pytest.mark.parametrize("pattern, written", [
    (r"^[ -~]{1,200}$", "[ -~]{1,200}"),
    (r"^[^@]+@[^@]+$", "[^@]+@[^@]+"),
])
def test_a_value_with_its_own_plain_bound_keeps_its_pattern(pattern, written):
    """The plain-JSON bound is intersected there: narrowing the pattern as well only made its
    estimate larger (``[ -~]{1,200}``: 404 to 2,004 states)."""
    hole = schema_form({"type": "string", "pattern": pattern}, TOK)
    assert hole.regex == f'("{written}")'
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('"a@b"', TOK)
    assert not value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('"a\x01@b"', TOK)


def test_an_enum_value_with_a_quote_satisfies_a_pattern_that_admits_it():
    """``a"@b`` matches ``^[^@]+@[^@]+$``: it was dropped, as its JSON text ``"a\\"@b"`` did
    not match the pattern narrowed to plain characters."""
    schema = {"type": "string", "pattern": "^[^@]+@[^@]+$", "enum": ['a"@b', "x@y"]}
    hole = schema_form(schema, TOK)
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('"a\\"@b"', TOK)


def test_raw_whitespace_in_a_verbose_pattern_is_ignored_as_the_engine_does():
    """In ``(?x)`` raw whitespace is no character of the pattern (a newline ends a comment): it
    was written as a character no string holds, so no item matched."""
    schema = _array("^(?x)[a-z]+ \t # letters\n [0-9]+$")
    hole = schema_form(schema, TOK)
    assert value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text('["ab12"]', TOK)


@pytest.mark.parametrize("pattern", [r'"\p{Lu}\p{Ll}{1,10}"', r'"[^\p{L}]{1,5}"',
                                     r'"[\p{N}\p{P}]{1,8}"', r'"\P{N}{2,6}"'])
def test_a_general_category_is_counted_as_its_characters(pattern):
    """As any character, ``\\p{L}`` split no UTF-8 prefix: ``[^\\p{L}]{1,5}`` was estimated
    at a fraction of the engine's states."""
    built = len(_index(pattern, BYTES, "regex").get_transitions())
    assert 0.9 * built <= dfa_states(pattern, 10**6) <= 1.2 * built


def test_an_array_of_letters_is_refused_before_the_engine_builds_it(monkeypatch):
    """Its 44,796 states were estimated at 1,367: at a 126,000-token vocabulary the engine
    took two minutes before the refusal."""
    def engine(*args, **kwargs):
        raise AssertionError("the engine built the pattern")

    monkeypatch.setattr(automaton, "_index", engine)
    schema = {"type": "array", "items": {"type": "string", "pattern": r"^[\p{L} '-]{1,50}$"},
              "maxItems": 3}
    with pytest.raises(UserError, match="too large"):
        schema_form(schema, TOK)
