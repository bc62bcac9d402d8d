"""Forms, session 32: an ``anyOf`` / ``oneOf`` branch (or an optional property) no value
satisfies is left out instead of refusing the schema; a recursive ``oneOf`` is one line."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill.schema import check_schema, fill_schema
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
torch.manual_seed(0)
MODEL = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=128)).eval()
EMPTY_RANGE = {"type": "integer", "minimum": 5, "maximum": 3}


@pytest.mark.parametrize("dead", [
    EMPTY_RANGE, False, {"type": "string", "minLength": 5, "maxLength": 2},
    {"allOf": [{"type": "string"}, {"type": "integer"}]},
    {"type": "array", "minItems": 3, "maxItems": 1},
    {"type": "object", "required": ["a"], "properties": {"a": False}},
    {"type": "number", "minimum": 1, "exclusiveMaximum": 1},
    {"enum": [1, 2], "type": "string"},
])
@pytest.mark.parametrize("key", ["anyOf", "oneOf"])
def test_a_union_branch_no_value_satisfies_is_left_out(dead, key):
    """JSON Schema reads a union as any of its branches: one no value can satisfy was
    refusing the whole schema (``schema at $.anyOf[0]: no integer lies in its range``)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "required": ["x", "y"], "properties": {
        "x": {key: [dead, {"type": "boolean"}]},
        "y": {"$ref": "#/$defs/y"}},
        "$defs": {"y": {key: [{"enum": ["a", "b"]}, dead]}}}
    check_schema(schema)  # the CLI's and the server's check before the model loads
    for seed in range(3):
        value = fill_schema(MODEL, TOK, schema, SampleConfig(steps=3, seed=seed)).value
        jsonschema.validate(value, schema)
        assert isinstance(value["x"], bool) and value["y"] in ("a", "b")


def test_a_union_no_branch_of_satisfies_is_one_line_naming_each():
    schema = {"anyOf": [EMPTY_RANGE, {"type": "string", "minLength": 5, "maxLength": 2}]}
    for check in (lambda: check_schema(schema),
                  lambda: fill_schema(MODEL, TOK, schema, SampleConfig(steps=2, seed=0))):
        with pytest.raises(UserError) as e:
            check()
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("schema at $: no anyOf/oneOf branch")
        assert "$.anyOf[0]: no integer lies in its range" in msg
        assert "$.anyOf[1]: maxLength 2 < minLength 5" in msg


def test_a_union_branch_that_cannot_be_enforced_is_still_refused():
    """Only branches no value satisfies are left out: one the output cannot be held to
    (``not``) is still named, so a schema is never enforced as less than it says silently."""
    with pytest.raises(UserError, match=r"anyOf\[0\]: keyword 'not' cannot be enforced"):
        fill_schema(MODEL, TOK, {"anyOf": [{"not": {}}, {"const": 4}]},
                    SampleConfig(steps=2, seed=0))


def test_an_optional_property_that_admits_nothing_is_left_out():
    """``"b": false`` is how a schema forbids a property: the output leaves it out (it was
    refused, ``schema at $.b: false admits no value``); a required one is still refused."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "required": ["a"],
              "properties": {"a": {"type": "boolean"}, "b": False, "c": EMPTY_RANGE}}
    check_schema(schema)
    value = fill_schema(MODEL, TOK, schema, SampleConfig(steps=3, seed=0)).value
    jsonschema.validate(value, schema)
    assert set(value) == {"a"}
    with pytest.raises(UserError, match=r"^schema at \$\.b: false admits no value$"):
        check_schema({**schema, "required": ["a", "b"]})


def test_a_recursive_one_of_is_one_line_not_a_recursion_error():
    """A ``oneOf`` reaching itself through ``$ref`` recursed until Python's stack ran out
    (a RecursionError traceback from the CLI and a 500 from the server)."""
    for schema in ({"$defs": {"t": {"oneOf": [{"$ref": "#/$defs/t"}, {"type": "null"}]}},
                    "$ref": "#/$defs/t"},
                   {"$defs": {"t": {"oneOf": [
                       {"type": "object", "required": ["a"], "properties": {
                           "a": {"$ref": "#/$defs/t"}}},
                       {"type": "object", "required": ["a"], "properties": {
                           "a": {"$ref": "#/$defs/t"}}}]}},
                    "$ref": "#/$defs/t"}):
        with pytest.raises(UserError, match="recursive \\$ref '#/\\$defs/t' cannot be enforced"):
            check_schema(schema)


def test_an_optional_prefix_item_that_admits_nothing_ends_the_array():
    """``"prefixItems": [..., false]`` forbids an item there: the array ends before it (it
    was refused, ``schema at $[1]: false admits no value``); a required one is refused."""
    jsonschema = pytest.importorskip("jsonschema")
    for schema in ({"type": "array", "prefixItems": [{"type": "boolean"}, False,
                                                      {"type": "null"}]},
                   {"type": "array", "prefixItems": [{"type": "boolean"}, EMPTY_RANGE],
                    "items": {"type": "null"}, "maxItems": 5}):
        check_schema(schema)
        value = fill_schema(MODEL, TOK, schema, SampleConfig(steps=3, seed=0)).value
        jsonschema.validate(value, schema)
        assert len(value) == 1 and isinstance(value[0], bool)
    with pytest.raises(UserError, match=r"^schema at \$\[1\]: no integer lies in its range$"):
        check_schema({"type": "array", "prefixItems": [{"type": "boolean"}, EMPTY_RANGE],
                      "minItems": 2})
