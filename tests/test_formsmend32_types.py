"""Forms, session 32 (review of the union pruning): a keyword no value of its own type
satisfies (an empty length range, numeric range, item count, a required property that admits
nothing) rules out that type only; values of every other type pass it. Such a branch was
called unsatisfiable and left out, and a ``oneOf`` then filled values that matched two
branches."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill.schema import _satisfiable, check_schema, fill_schema
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
torch.manual_seed(0)
MODEL = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=128)).eval()

# satisfiable, each by a value of a type its dead keyword does not act on
PARTLY_DEAD = [
    {"minLength": 5, "maxLength": 2},  # any non-string
    {"minimum": 5, "maximum": 3},  # any non-number
    {"minItems": 3, "maxItems": 1},  # any non-array
    {"type": "string", "minimum": 5, "maximum": 3},  # any string
    {"type": ["integer", "null"], "minimum": 5, "maximum": 3},  # null
    {"type": ["number", "string"], "minimum": 1, "exclusiveMaximum": 1},  # any string
    {"type": ["string", "array"], "minLength": 5, "maxLength": 2},  # any array
    {"required": ["a"], "properties": {"a": False}},  # any non-object
    {"required": ["a"], "additionalProperties": False},  # any non-object
    {"const": 5, "minLength": 1, "maxLength": 0},  # 5
    {"enum": ["abc", 5], "minLength": 5},  # 5
    {"allOf": [{"minLength": 5}, {"maxLength": 2}]},  # any non-string
    {"allOf": [{"properties": {"a": False}}, {"required": ["a"]}]},  # any non-object
    {"allOf": [{"prefixItems": [False]}, {"minItems": 1}]},  # any non-array
    {"type": "object", "required": ["a"], "properties": {"a": {"minimum": 5, "maximum": 3}}},
]


@pytest.mark.parametrize("branch", PARTLY_DEAD, ids=json.dumps)
def test_a_keyword_rules_out_only_its_own_type(branch):
    """``_pruned`` leaves out only what ``_satisfiable`` says no value satisfies."""
    jsonschema = pytest.importorskip("jsonschema")
    samples = [None, True, 5, "", "abc", [], [1], {}, {"a": "x"}]
    assert any(jsonschema.Draft202012Validator(branch).is_valid(v) for v in samples)
    assert _satisfiable(branch, {"anyOf": [branch]}, "$")


@pytest.mark.parametrize("other", [{"type": "boolean"}, {"type": "null"},
                                   {"type": "string", "maxLength": 3}, {"type": "integer"}])
@pytest.mark.parametrize("branch", PARTLY_DEAD, ids=json.dumps)
def test_a_one_of_with_a_branch_some_value_satisfies_is_valid_or_refused(branch, other):
    """The review's repro: ``{"oneOf": [{"minLength": 5, "maxLength": 2}, {"type":
    "boolean"}]}`` filled ``true``, which matches both branches; every value is now valid
    (8 seeds), or the schema is refused in one line as before."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"oneOf": [branch, other]}
    try:
        check_schema(schema)
    except UserError as e:
        assert "\n" not in str(e)
        return
    for seed in range(8):
        value = fill_schema(MODEL, TOK, schema, SampleConfig(steps=2, seed=seed)).value
        jsonschema.validate(value, schema)


@pytest.mark.parametrize("key", ["anyOf", "oneOf"])
def test_a_branch_whose_every_type_is_dead_is_still_left_out(key):
    """Per type: a branch whose lengths rule out strings and whose range rules out integers,
    with ``type: [string, integer]``, admits no value, and a const of a string type none."""
    jsonschema = pytest.importorskip("jsonschema")
    dead = [{"type": ["string", "integer"], "minLength": 5, "maxLength": 2,
             "minimum": 5, "maximum": 3},
            {"const": "ab", "minLength": 3},
            {"type": "string", "minItems": 1, "minLength": 4, "maxLength": 3}]
    for branch in dead:
        assert not _satisfiable(branch, {}, "$")
        schema = {key: [branch, {"type": "boolean"}]}
        check_schema(schema)
        for seed in range(8):
            value = fill_schema(MODEL, TOK, schema, SampleConfig(steps=2, seed=seed)).value
            jsonschema.validate(value, schema)
            assert isinstance(value, bool)


@pytest.mark.parametrize("schema", [
    {"type": "string", "minimum": 5, "maximum": 3},
    {"type": "integer", "minLength": 5, "maxLength": 2},
    {"const": 5, "minLength": 1, "maxLength": 0},
    {"type": "object", "required": ["x"],
     "properties": {"x": {"type": "string", "minimum": 5, "maximum": 3}}},
], ids=json.dumps)
def test_a_keyword_of_a_type_the_schema_does_not_admit_is_moot(schema):
    """A string's empty numeric range says nothing of it: filled (was refused)."""
    jsonschema = pytest.importorskip("jsonschema")
    for seed in range(8):
        jsonschema.validate(fill_schema(MODEL, TOK, schema,
                                        SampleConfig(steps=2, seed=seed)).value, schema)


def test_a_partly_dead_schema_is_refused_naming_the_types_left():
    with pytest.raises(UserError) as e:
        check_schema({"anyOf": [{"minLength": 5, "maxLength": 2}, {"type": "boolean"}]})
    msg = str(e.value)
    assert msg.startswith("schema at $.anyOf[0]: maxLength 2 < minLength 5; only a value of "
                          "another type (null, boolean, object, array, number)")
    assert "\n" not in msg


def test_the_reviews_cli_repro_is_refused_not_an_invalid_value(tmp_path, capsys):
    """``fill-form`` printed ``""``, which matches both branches (exit 0)."""
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    ckpt = save_checkpoint(tmp_path / "run", model=MODEL, tokenizer=TOK)
    schema = {"oneOf": [{"type": "string", "minimum": 5, "maximum": 3},
                        {"type": "string", "maxLength": 3}]}
    code = main(["fill-form", "--schema", json.dumps(schema), "--model", str(ckpt),
                 "--steps", "2", "--json"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "oneOf branches 0 and 1 cannot be proven disjoint" in err and err.count("\n") == 1


@pytest.mark.parametrize("schema", [
    {"type": 5, "required": ["a"], "additionalProperties": False},
    {"type": [{}], "required": ["a"], "additionalProperties": False},
    {"allOf": [{"type": [[]]}, {"required": ["a"], "additionalProperties": False}]},
], ids=json.dumps)
def test_a_malformed_type_beside_a_dead_keyword_is_one_line(schema):
    """The types a node admits are read from a malformed ``type`` too (no TypeError)."""
    with pytest.raises(UserError) as e:
        check_schema(schema)
    assert "\n" not in str(e.value)
