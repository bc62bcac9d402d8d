"""JSON Schema forms, session 36: a value the schema leaves open (``{}``, ``true``, an array
without ``items``) holds numbers in range, as an object without properties does. The
library's own regex for them has an unbounded exponent: ``[1e+999]`` was admitted, and
``json.loads`` reads it as inf, which the output then wrote as ``Infinity``, not JSON."""

from __future__ import annotations

import json
import math

import pytest

from unmask.errors import UserError
from unmask.infill.forms import value_automaton
from unmask.infill.schema import schema_form
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def _accepts(schema: dict, text: str) -> bool:
    hole = schema_form(schema, TOK)
    return value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text(text, TOK)


OPEN = [
    {"type": "array"},
    {"type": "array", "maxItems": 3},
    {"type": "array", "items": {}},
    {"type": "array", "items": True},
    {"type": "array", "items": {"type": "array"}},
    {"anyOf": [{}, {"type": "null"}]},
    {"anyOf": [{"$ref": "#/$defs/any"}, {"type": "null"}], "$defs": {"any": {}}},
]


@pytest.mark.parametrize("schema", OPEN)
def test_an_open_value_has_no_number_json_reads_as_infinite(schema):
    for number in ("1e+999", "-1e+999", "1E+400"):
        text = number if "anyOf" in schema else f"[{number}]"
        text = f"[{text}]" if "items" in schema and schema["items"] == {"type": "array"} else text
        assert math.isinf(json.loads(text.strip("[]")))
        assert not _accepts(schema, text), (schema, text)


@pytest.mark.parametrize("schema, text", [
    ({"type": "array"}, '[1, -2.5, "a", null, true]'),
    ({"type": "array", "items": {}}, "[999999, 0.125]"),
    ({"anyOf": [{}, {"type": "null"}]}, "-3.25"),
    ({"anyOf": [{}, {"type": "null"}]}, '"x"'),
])
def test_an_open_value_still_holds_any_scalar(schema, text):
    assert _accepts(schema, text)


def test_an_open_property_has_no_infinite_number():
    form = schema_form({"type": "object", "properties": {"a": {}}, "required": ["a"]}, TOK)
    hole = form["a"]
    automaton = value_automaton(hole.regex, hole.bound, TOK, "t")
    assert not automaton.accepts_text("1e+999", TOK)
    assert automaton.accepts_text("12", TOK)


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": {"type": "integer"}, "uniqueItems": False, "maxItems": 3},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2,
     "uniqueItems": False},
    {"allOf": [{"type": "array", "uniqueItems": False}, {"uniqueItems": False, "maxItems": 2}]},
])
def test_unique_items_false_constrains_nothing_and_is_accepted(schema):
    schema_form(schema, TOK)


@pytest.mark.parametrize("schema", [
    {"type": "array", "uniqueItems": True},
    {"allOf": [{"type": "array", "uniqueItems": False}, {"uniqueItems": True}]},
    {"anyOf": [{"type": "array", "uniqueItems": True}, {"type": "null"}]},
])
def test_unique_items_true_is_still_refused_by_name(schema):
    with pytest.raises(UserError, match="'uniqueItems' cannot be enforced"):
        schema_form(schema, TOK)


@pytest.mark.parametrize("schema, named", [
    ({"const": 1e400}, "const"),
    ({"enum": [1, [2, {"a": -1e400}]]}, "enum"),
    ({"allOf": [{"const": 1e999}]}, "infinity"),
    ({"$ref": "#/$defs/x", "$defs": {"x": {"const": 1e999}}}, "infinity"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}},
      "$defs": {"x": {"enum": [1e999]}}}, "schema at $.a"),
])
def test_an_infinite_enum_or_const_value_is_refused_in_one_line(schema, named):
    # json.loads reads 1e400 as inf; the library's regex writer raised TypeError (exit 1)
    with pytest.raises(UserError, match="non-finite number") as e:
        schema_form(json.loads(json.dumps(schema)), TOK)
    assert named in str(e.value)


@pytest.mark.parametrize("ref, name", [
    ("#/$defs/a~1b", "a/b"),
    ("#/$defs/a~0b", "a~b"),
    ("#/$defs/a%20b", "a b"),
    ("#/$defs/a%20b", "a%20b"),  # a key with a "%" in it, as hand-written schemas have
    ("#/$defs/a%2520b", "a%20b"),  # the same key, percent-encoded as RFC 3986 has it
])
def test_a_ref_is_read_as_a_json_pointer(ref, name):
    # RFC 6901: ~1 is "/", ~0 is "~", and a URI fragment is percent-encoded ("points nowhere")
    hole = schema_form({"$ref": ref, "$defs": {name: {"type": "boolean"}}}, TOK)
    automaton = value_automaton(hole.regex, hole.bound, TOK, "t")
    assert automaton.accepts_text("true", TOK) and not automaton.accepts_text("1", TOK)


@pytest.mark.parametrize("schema, text", [
    ({"type": "string", "pattern": "(a|b)", "minLength": 5}, '"zzzaz"'),  # a search
    ({"type": "string", "pattern": "(?:x|y)z", "minLength": 5}, '"..yz."'),
])
def test_an_unanchored_pattern_with_a_group_is_still_searched_when_too_short(schema, text):
    assert _accepts(schema, text)


@pytest.mark.parametrize("value", [0, 1, "yes", None])
def test_a_unique_items_that_is_no_boolean_is_refused_as_malformed(value):
    # 0 was taken as false (the metaschema wants a boolean), "yes" said "cannot be enforced"
    for schema in ({"type": "array", "uniqueItems": value},
                   {"allOf": [{"type": "array", "uniqueItems": False}, {"uniqueItems": value}]}):
        with pytest.raises(UserError, match="uniqueItems is true or false, not"):
            schema_form(schema, TOK)


def test_a_nan_const_is_not_called_too_large():
    with pytest.raises(UserError, match="non-finite number .NaN"):
        schema_form({"const": float("nan")}, TOK)
