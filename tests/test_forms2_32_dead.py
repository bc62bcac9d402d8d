"""Forms, session 32 (review of the union pruning, "refusals rather than fills"): a subschema
that admits no value where JSON Schema only needs it to admit nothing (the other properties,
the items past the prefix) acts as ``false``, and a type list drops the types its own bounds
leave no value of; such schemas were refused although valid values exist."""

from __future__ import annotations

import json

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
DEAD = {"type": "integer", "minimum": 3, "maximum": 1}

FILLABLE = [
    # the review's repro: a dead additionalProperties is additionalProperties: false
    {"type": "object", "properties": {"b": {"type": "null"}}, "required": ["b"],
     "additionalProperties": DEAD},
    {"type": "object", "additionalProperties": DEAD},
    {"type": "object", "additionalProperties": False},  # outlines-core refused it
    {"anyOf": [{"type": "object", "additionalProperties": DEAD}, {"type": "null"}]},
    {"type": "object", "properties": {"a": {"type": "object", "additionalProperties": DEAD}},
     "required": ["a"]},
    # a dead items with minItems 0: []; or the prefix alone
    {"items": DEAD},
    {"anyOf": [{"type": "array", "items": DEAD}, {"type": "null"}]},
    {"type": "array", "prefixItems": [{"type": "null"}], "minItems": 1, "items": DEAD},
    {"type": "object", "properties": {"a": {"type": "array", "items": DEAD},
                                      "b": {"type": "boolean"}}, "required": ["a", "b"]},
    # a type list whose numeric bounds leave no number: the other types
    {"allOf": [{"type": ["string", "integer"]}, {"minimum": 5, "maximum": 3}]},
    {"type": ["string", "integer"], "minimum": 5, "maximum": 3},
    {"type": ["null", "number", "boolean"], "exclusiveMinimum": 1, "maximum": 1},
    {"type": ["array", "boolean"], "minItems": 2, "maxItems": 1},
    {"type": "object", "properties": {"a": {"type": ["integer", "null"], "minimum": 5,
                                            "maximum": 3}}, "required": ["a"]},
]


@pytest.mark.parametrize("schema", FILLABLE, ids=json.dumps)
def test_a_schema_valid_values_satisfy_is_filled_validly(schema):
    jsonschema = pytest.importorskip("jsonschema")
    for seed in range(6):
        value = fill_schema(MODEL, TOK, schema, SampleConfig(steps=2, seed=seed)).value
        jsonschema.Draft202012Validator(schema).validate(value)


@pytest.mark.parametrize("schema", [
    {"type": "array", "items": DEAD, "minItems": 1},
    {"type": "array", "prefixItems": [{"type": "null"}], "minItems": 2, "items": DEAD},
    {"type": ["string", "integer"], "minimum": 5, "maximum": 3, "minLength": 3,
     "maxLength": 2},
    {"type": ["integer", "number"], "minimum": 5, "maximum": 3},
], ids=json.dumps)
def test_a_schema_no_value_satisfies_is_still_refused_in_one_line(schema):
    jsonschema = pytest.importorskip("jsonschema")
    samples = [None, True, 0, 5, "", "abc", [], [None], [None, 2], {}]
    assert not any(jsonschema.Draft202012Validator(schema).is_valid(v) for v in samples)
    with pytest.raises(UserError) as e:
        check_schema(schema)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError):
        fill_schema(MODEL, TOK, schema, SampleConfig(steps=2))


@pytest.mark.parametrize("schema", FILLABLE, ids=json.dumps)
def test_check_schema_accepts_what_is_filled(schema):
    check_schema(schema)


def test_a_typed_schema_left_with_other_types_is_told_to_narrow_its_type():
    """It was told to "give it a type" although it has one."""
    with pytest.raises(UserError) as e:
        check_schema({"type": ["object", "string"], "required": ["a"],
                      "properties": {"a": False}})
    msg = str(e.value)
    assert msg.endswith("only a value of another type (string) satisfies it, which cannot be "
                        "enforced: narrow its type to string")
    assert "give it a type" not in msg and "\n" not in msg
