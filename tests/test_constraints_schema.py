"""The library-backed constraint engine (outlines-core) under the bidirectional layer, JSON
Schema forms, structured output on the server (response_format, guided_*), bad input."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill import fill_form
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.infill.schema import constraint_form, fill_schema, schema_form, schema_regex
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

jsonschema = pytest.importorskip("jsonschema")

TOK = byte_tokenizer()
torch.manual_seed(0)
MODEL = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=256)).eval()


def cfg(seed: int) -> SampleConfig:
    return SampleConfig(steps=6, seed=seed, temperature=1.0)


# -- random regexes from a small grammar ---------------------------------------------------------


def random_regex(rng: random.Random, depth: int = 0) -> str:
    """ASCII regexes (Python and the engine agree on them): literals, classes, groups,
    alternation and bounded or unbounded quantifiers."""
    atoms = ["a", "b", "[a-c]", "[0-9]", "x", r"\.", "[c-z]"]
    k = rng.randint(1, 3)
    parts = []
    for _ in range(k):
        if depth < 2 and rng.random() < 0.3:
            inner = "|".join(random_regex(rng, depth + 1) for _ in range(rng.randint(1, 2)))
            atom = f"(?:{inner})"
        else:
            atom = rng.choice(atoms)
        parts.append(atom + rng.choice(["", "?", "*", "+", "{1,3}", "{2}"]))
    return "".join(parts)


REGEXES = [random_regex(random.Random(i)) for i in range(16)]


@pytest.mark.parametrize("pattern", REGEXES[:8])
def test_every_fill_of_a_random_regex_fullmatches(pattern):
    form, parse = constraint_form(TOK, regex=pattern, max_tokens=8)
    auto = TokenAutomaton.from_regex(pattern, vocab_of(TOK))
    if not auto.feasible_lengths(8).any():
        pytest.skip("no match of at most 8 tokens")
    for seed in range(1):
        r = fill_form(MODEL, TOK, form, cfg(seed), parse=parse)
        assert re.fullmatch(pattern, r.text), (pattern, r.text)


@pytest.mark.parametrize("pattern", REGEXES)
def test_committing_any_allowed_token_anywhere_keeps_the_gap_satisfiable(pattern):
    """Diffusion commits positions in any order: with the forward/backward sets over the
    library's transitions, a token allowed at any open position never paints the gap into a
    corner, and the gap ends accepted."""
    auto = TokenAutomaton.from_regex(pattern, vocab_of(TOK))
    rng = random.Random(pattern)
    lengths = [n for n in range(1, 7) if auto.feasible_lengths(6)[n]]
    if not lengths:
        pytest.skip("no match of 1-6 tokens")
    for _ in range(4):
        seq: list[int | None] = [None] * rng.choice(lengths)
        while None in seq:
            allowed = auto.allowed(seq)
            assert allowed is not None, (pattern, seq)
            i = rng.choice([j for j, t in enumerate(seq) if t is None])
            seq[i] = rng.choice(allowed[i].nonzero()[0].tolist())
        assert auto.accepts(seq)
        assert re.fullmatch(pattern, TOK.decode(seq)), (pattern, TOK.decode(seq))


# -- JSON Schema forms ----------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "minimum": -1, "maximum": 1},
        "ok": {"type": "boolean"},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
        "kind": {"const": "person"},
        "born": {"type": "string", "format": "date"},
        "tags": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 9},
            "minItems": 1,
            "maxItems": 3,
        },
        "pair": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2},
        "loc": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "exclusiveMinimum": -5, "maximum": 5},
                "y": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/small"}]},
            },
            "required": ["x", "y"],
        },
    },
    "required": ["name", "age", "ok"],
    "$defs": {"small": {"type": "integer", "minimum": 0, "maximum": 3}},
}


def test_schema_forms_validate_and_fixed_structure_is_skeleton():
    for seed in range(2):
        r = fill_schema(MODEL, TOK, PERSON, cfg(seed))
        jsonschema.validate(
            r.value, PERSON, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        assert json.loads(r.text) == r.value
    form = schema_form(PERSON, TOK)
    assert list(form) == list(PERSON["properties"]) and len(form["pair"]) == 2
    assert isinstance(form["loc"], dict)  # a nested object is skeleton, its values holes


@pytest.mark.parametrize("lo,hi", [(-3, 12), (100, 104), (-20, -11)])
def test_integer_ranges_the_library_ignores_are_exact(lo, hi):
    auto = TokenAutomaton.from_regex(
        schema_regex({"type": "integer", "minimum": lo, "maximum": hi}), vocab_of(TOK)
    )
    accepted = {i for i in range(-200, 200) if auto.accepts_text(str(i), TOK)}
    assert accepted == set(range(lo, hi + 1))


def test_scalar_schema_and_json_object():
    r = fill_schema(MODEL, TOK, {"type": "integer", "minimum": 3, "maximum": 7}, cfg(0))
    assert r.value in range(3, 8) and r.text == str(r.value)
    form, parse = constraint_form(TOK, json_object=True, max_tokens=24)
    r = fill_form(MODEL, TOK, form, cfg(1), prefix_ids=TOK.encode("JSON: "), parse=parse)
    assert isinstance(r.value, dict)


@pytest.mark.parametrize(
    "schema,message",
    [
        ({"type": "integer", "multipleOf": 3}, "keyword 'multipleOf' cannot be enforced"),
        ({"type": "string", "format": "ipv4"}, "format 'ipv4' cannot be enforced"),
        ({"not": {"type": "null"}}, "keyword 'not' cannot be enforced"),
        ({"type": "array", "uniqueItems": True}, "'uniqueItems' cannot be enforced"),
        ({"type": "string", "minLength": 3, "maxLength": 2}, "maxLength 2 < minLength 3"),
        ({"type": "string", "pattern": "(?=a)"}, "rejects it"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer lies in its range"),
        ({"$ref": "#/$defs/nope"}, "points nowhere"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "cannot be proven disjoint"),
        ({"oneOf": [{"const": 1}, {"enum": [1.0, 2]}]}, "oneOf branches 0 and 1"),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "no type satisfies"),
        ({"allOf": [{"pattern": "a"}, {"pattern": "b"}]}, "two different 'pattern' values"),
        ({"allOf": [{"anyOf": [{"type": "null"}]}]}, "anyOf inside allOf cannot be enforced"),
        ({"allOf": [{"type": "integer"}, {"multipleOf": 3}]}, "'multipleOf' cannot be"),
        ({"type": "integer", "minimum": float("inf")}, "minimum must be a finite number"),
        ({"type": "number", "maximum": float("nan")}, "maximum must be a finite number"),
        ({"enum": []}, "enum must be a non-empty list"),
        ({"anyOf": []}, "anyOf must be a non-empty list"),
        ({"type": []}, "type must be one of"),
        ({"type": "bogus"}, "type must be one of"),
        ({"type": "string", "minLength": 2.5}, "minLength must be a non-negative integer"),
        ({"type": "string", "minLength": "5"}, "minLength must be a non-negative integer"),
        ({"type": "array", "maxItems": -1}, "maxItems must be a non-negative integer"),
        ({"type": "boolean", "enum": [1]}, "no enum value is of type 'boolean'"),
        ({"type": "string", "const": 3}, "no const value is of type 'string'"),
        ({"type": "string", "pattern": "^$", "minLength": 3}, "no value of this tokenizer"),
        ({"type": "string", "pattern": "a", "maxLength": 0}, "no value of this tokenizer"),
        # a pattern needing a quote, backslash or control character: written between the
        # quotes as it matches, it would break the JSON (fill-form failed after filling)
        ({"type": "string", "pattern": '^a"b$'}, "no value of this tokenizer"),
        ({"type": "string", "pattern": "^\\\\[a-z]$"}, "no value of this tokenizer"),
        ({"type": "string", "pattern": "^\\t$"}, "no value of this tokenizer"),
        ({"type": "object", "properties": {}, "required": ["b"], "additionalProperties": False},
         "required property 'b' is not in properties"),
        ({"anyOf": [{"type": "string", "pattern": "[0-9]+", "maxLength": 3}, {"type": "null"}]},
         "can only be enforced on a value of its own"),
        # malformed: a pattern that is no string was ignored; a branch's malformed parts
        # (beside a $ref too) crashed the merge (AttributeError) or were "cannot be merged"
        ({"type": "string", "pattern": 5}, "pattern must be a string (a regex), not int"),
        ({"enum": ["a"], "pattern": 5}, "pattern must be a string (a regex), not int"),
        ({"$defs": {"B": {"type": "object", "properties": {"x": {"type": "null"}}}},
          "$ref": "#/$defs/B", "properties": [1]}, "properties must be an object of schemas"),
        ({"properties": [1], "allOf": [{"properties": {"a": {}}}]},
         "schema at $: properties must be an object of schemas"),
        ({"allOf": [{"type": "object"}, {"additionalProperties": 5}]},
         "schema at $.allOf[1]: additionalProperties must be a schema"),
        ({"$defs": {"U": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
          "$ref": "#/$defs/U", "type": "integer"}, "keywords beside it (type)"),
    ],
)
def test_schemas_that_cannot_be_enforced_are_refused_in_one_line(schema, message):
    with pytest.raises(UserError, match=re.escape(message)) as e:
        schema_form(schema, TOK)
    assert "\n" not in str(e.value)


LENGTHS_AND_MORE = [
    {"type": "string", "pattern": "^[0-9]+$", "minLength": 2},
    {"type": "string", "pattern": "^[a-z]+$", "minLength": 3, "maxLength": 5},
    {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$",
                                               "minLength": 5, "maxLength": 5}},
     "required": ["zip"]},
    {"type": "string", "format": "email", "maxLength": 12},
    {"type": "string", "format": "date", "minLength": 10},
    {"type": "string", "minLength": 3.0},  # JSON's 3.0 is the integer 3
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
     "minItems": 2.0, "maxItems": 2.0},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
    {"type": "object", "required": ["k"], "additionalProperties": {"type": "integer",
                                                                    "minimum": 1, "maximum": 3}},
    {"type": ["string", "integer"], "enum": ["x", 2, True, None]},
    {"type": "array", "items": {"type": "object", "properties": {"b": {}}, "required": ["b"]},
     "maxItems": 2},
    {"type": "array", "items": True, "maxItems": 2},
]


@pytest.mark.parametrize("schema", LENGTHS_AND_MORE)
def test_every_keyword_holds_together(schema):
    """A pattern or format with a length bound, float-spelt counts, required names without a
    property schema, enums with values of other types, unconstrained subschemas: all are
    enforced (outlines-core's regex alone drops the first three and breaks on the last two)."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for seed in range(3):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema, format_checker=checker)
        assert json.loads(r.text) == r.value


@pytest.mark.parametrize("pattern", ["^b", "b$", "^[a-c][0-9]", "^", "^a|b"])
def test_a_pattern_anchored_at_one_end_is_a_search_from_that_end(pattern):
    """JSON Schema's pattern is a search: ``^b`` is "starts with b". The lone ``^`` sat
    inside the quotes, where the engine matched nothing: no value, enum or not."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern},
                                               "e": {"enum": ["apple", "banana", "c1b"],
                                                     "pattern": pattern}},
              "required": ["s", "e"]}
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)
    if "|" not in pattern:  # the values kept are exactly those the search finds
        values = ["apple", "banana", "c1", "bob"]
        enum = schema_form({"enum": values, "pattern": pattern}, TOK)
        assert [v for v in values if f'"{v}"' in enum.regex] == [
            v for v in values if re.search(pattern, v)]


@pytest.mark.parametrize("pattern", ["^foo$|^bar$", "^[A-Z]{2}$|^$", "^(a|b)x$|y$"])
def test_anchors_belong_to_each_alternative(pattern):
    """``^foo$|^bar$`` (pydantic writes such patterns): only the outermost ``^`` and ``$``
    were stripped, leaving ``foo$|^bar`` whose inner anchors matched nothing: refused with
    "no sequence of this tokenizer's tokens matches it"."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}},
              "required": ["s"]}
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)
    if pattern == "^foo$|^bar$":
        assert r.value["s"] in ("foo", "bar")


def test_an_enums_pattern_that_matches_nothing_is_named_with_its_place():
    with pytest.raises(UserError, match=re.escape("schema at $.e: pattern '^x^': it has an "
                                                  "anchor (^) inside the pattern")):
        schema_form({"type": "object", "properties": {"e": {"enum": ["x"], "pattern": "^x^"}}},
                    TOK)
    with pytest.raises(UserError, match=re.escape("schema at $: pattern 'a(': the regex "
                                                  "engine (outlines-core) rejects it")):
        schema_form({"enum": ["a"], "pattern": "a("}, TOK)


def test_bad_regexes_are_refused_not_ignored():
    for pattern, message in [
        ("a{5000}", "too large"),
        ("(?<=a)b", "rejects it"),
        ("[z", "rejects it"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            constraint_form(TOK, regex=pattern)


def test_cli_fill_form_schema(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    ckpt = save_checkpoint(tmp_path / "run", model=MODEL, tokenizer=TOK)
    schema = tmp_path / "s.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "minimum": 1, "maximum": 3},
                    "b": {"type": "boolean"},
                },
            }
        )
    )
    assert (
        main(
            [
                "fill-form",
                "--model",
                str(ckpt),
                "--schema",
                str(schema),
                "--seed",
                "1",
                "--steps",
                "4",
            ]
        )
        == 0
    )
    value = json.loads(capsys.readouterr().out)
    assert value["n"] in (1, 2, 3) and isinstance(value["b"], bool)
    schema.write_text(json.dumps({"type": "integer", "multipleOf": 2}))
    assert main(["fill-form", "--model", str(ckpt), "--schema", str(schema)]) == 2
    err = capsys.readouterr().err
    assert "multipleOf" in err and err.count("\n") == 1


# -- oneOf / allOf --------------------------------------------------------------------------------

COMBINED = [
    {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"},
               {"type": "string", "maxLength": 3}]},
    {
        "type": "object",
        "properties": {
            "shape": {
                "oneOf": [
                    {"type": "object", "required": ["kind", "r"], "properties": {
                        "kind": {"const": "circle"},
                        "r": {"type": "integer", "minimum": 1, "maximum": 9}}},
                    {"type": "object", "required": ["kind", "side"], "properties": {
                        "kind": {"const": "square"},
                        "side": {"type": "number", "minimum": 0, "maximum": 2}}},
                ]
            }
        },
        "required": ["shape"],
    },
    {"oneOf": [{"type": "number", "maximum": 0}, {"type": "number", "exclusiveMinimum": 0,
                                                   "maximum": 5}]},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"a": {"minimum": 2, "maximum": 4}, "b": {"enum": ["x", "y", 3]}},
             "required": ["b"]},
            {"properties": {"b": {"enum": ["y", 3, True]}}},
        ]
    },
    {"$defs": {"p": {"allOf": [{"type": "integer"}, {"minimum": 1, "maximum": 3}]}},
     "type": "object", "properties": {"x": {"$ref": "#/$defs/p"}}, "required": ["x"]},
]


@pytest.mark.parametrize("schema", COMBINED)
def test_one_of_with_disjoint_branches_and_merged_all_of_validate(schema):
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)


UNION = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 3}, {"type": "null"}]}
SHAPE = {"oneOf": [
    {"type": "object", "properties": {"kind": {"const": "circle"},
                                      "r": {"type": "integer", "minimum": 0, "maximum": 9}},
     "required": ["kind", "r"], "additionalProperties": False},
    {"type": "object", "properties": {"kind": {"const": "square"},
                                      "side": {"type": "integer", "minimum": 0, "maximum": 9}},
     "required": ["kind", "side"], "additionalProperties": False},
]}
BOX = {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"],
       "additionalProperties": False}
REFS_BESIDE = [
    # zod-to-json-schema's named union: a root $ref beside its $defs / definitions
    {"$ref": "#/$defs/U", "$defs": {"U": UNION}},
    {"$ref": "#/definitions/Shape", "definitions": {"Shape": SHAPE},
     "$schema": "http://json-schema.org/draft-07/schema#"},
    # keywords beside a $ref to a union hold in each branch
    {"$defs": {"U": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, "type": "object",
     "properties": {"a": {"$ref": "#/$defs/U", "maxLength": 3}}, "required": ["a"]},
    {"$defs": {"U": UNION}, "$ref": "#/$defs/U", "maximum": 1},
    # true beside false: the false holds (it was "two different values cannot be merged")
    {"$defs": {"B": BOX}, "type": "object", "required": ["a"],
     "properties": {"a": {"$ref": "#/$defs/B", "additionalProperties": True}}},
    {"allOf": [{"type": "array", "items": {"type": "boolean"}, "minItems": 2,
                "maxItems": 2}, {"items": True}]},
]


@pytest.mark.parametrize("schema", REFS_BESIDE)
def test_a_ref_beside_definitions_or_a_union_is_filled_not_refused(schema):
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validators.validator_for(schema)(schema).validate(r.value)


BRANCHES_SPEAK_OF_EACH_OTHER = [
    # a property one branch lists and another's additionalProperties forbids: left out
    {"type": "object", "allOf": [
        {"properties": {"a": {"type": "boolean"}}, "additionalProperties": False},
        {"properties": {"b": {"type": "boolean"}}}]},
    {"$defs": {"B": BOX}, "$ref": "#/$defs/B", "properties": {"y": {"type": "boolean"}}},
    # ...or held to that additionalProperties' schema
    {"type": "object", "allOf": [
        {"properties": {"a": {"type": "boolean"}},
         "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 5}},
        {"properties": {"b": {}}, "required": ["b"]}]},
    # items of a branch without prefixItems hold from the first item
    {"type": "array", "allOf": [{"prefixItems": [{"type": ["boolean", "null"]}]},
                                {"items": {"type": "boolean"}}], "minItems": 1},
    {"type": "object", "required": ["b", "l"], "properties": {"b": {"type": "boolean"}, "l": {
        "type": "array", "allOf": [{"prefixItems": [{"type": "null"}, {"type": "null"}]},
                                   {"items": False}]}}},
]


@pytest.mark.parametrize("schema", BRANCHES_SPEAK_OF_EACH_OTHER)
def test_all_of_branches_hold_over_what_the_others_add(schema):
    """Merged key by key, a property or prefix item one branch added escaped another branch's
    additionalProperties / items: ``b`` was written where the first branch forbids it."""
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)
    with pytest.raises(UserError, match="required property 'b' is forbidden by another"):
        schema_form({"type": "object", "allOf": [
            {"properties": {"a": {"type": "boolean"}}, "additionalProperties": False},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]}, TOK)


def wrapped(sub, defs=None):
    return {"$defs": defs or {}, "type": "object", "properties": {"a": sub}, "required": ["a"]}


KEYWORDS_OF_ANOTHER_TYPE = [
    wrapped({"type": "boolean", "properties": {"z": {"type": "null"}}}),
    wrapped({"type": "string", "prefixItems": [{"type": "null"}], "maxLength": 3}),
    # as a $ref and the keywords beside it merge
    wrapped({"$ref": "#/$defs/U", "type": "string", "maxLength": 3},
            {"U": {"properties": {"b": {"enum": ["ab", 3, None]}}}}),
    wrapped({"$ref": "#/$defs/U", "properties": {"z": {"type": "null"}}},
            {"U": {"anyOf": [{"type": "boolean"}, {"type": "string", "maxLength": 2}]}}),
    wrapped({"$ref": "#/$defs/N", "properties": {"z": {"type": "null"}}},
            {"N": {"type": ["null", "boolean"]}}),
]


@pytest.mark.parametrize("schema", KEYWORDS_OF_ANOTHER_TYPE)
def test_object_and_array_keywords_on_another_type_do_not_make_one(schema):
    """outlines-core's regex wrote an object for any schema with ``properties`` and an array
    for one with ``prefixItems``, whatever its ``type``: ``{"z": null}`` for a boolean."""
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)


def test_a_ref_to_the_empty_schema_is_any_value_in_json():
    """A ``$ref`` to ``{}`` reached outlines-core as ``{}``, whose regex is a bare
    alternation that matched outside the object too: ``{"b":{2222E-2}}`` was filled."""
    schema = {"$defs": {"L": {}}, "type": "object", "required": ["o"], "properties": {
        "o": {"properties": {"b": {"$ref": "#/$defs/L"}}}}}
    regex = schema_regex(schema["properties"]["o"], schema)
    assert re.fullmatch(regex, '{"b": null}') and re.fullmatch(regex, "{}")
    assert not re.fullmatch(regex, "{null}") and not re.fullmatch(regex, "{2}")
    for seed in range(2):
        jsonschema.validate(fill_schema(MODEL, TOK, schema, cfg(seed)).value, schema)


UNTYPED = [
    {"additionalProperties": True},
    {"additionalProperties": {"type": "null"}},
    {"items": True},
    {"minItems": 1},
    {"items": {"type": "boolean"}, "maxItems": 2},
    {"minItems": 1, "required": ["a"]},
]


@pytest.mark.parametrize("sub", UNTYPED)
def test_object_or_array_keywords_without_a_type_are_filled_not_refused(sub):
    """outlines-core refused these as "Unsupported JSON Schema structure"."""
    schema = wrapped(sub)
    for seed in range(3):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)


def test_a_recursive_definition_is_no_recursion_error():
    """Every $defs entry was marked for the regex, used or not: a recursive one (a tree
    node) ran Python out of stack (RecursionError, a traceback)."""
    tree = {"type": "object", "properties": {"kid": {"$ref": "#/$defs/T", "minimum": 1}}}
    unused = {"$defs": {"T": tree}, "properties": {"b": {"type": "boolean"}}}
    for seed in range(2):
        jsonschema.validate(fill_schema(MODEL, TOK, unused, cfg(seed)).value, unused)
    used = {"$defs": {"T": tree}, "properties": {"b": {"$ref": "#/$defs/T"}}}
    for make in (lambda: schema_form(used, TOK), lambda: schema_regex(used)):
        with pytest.raises(UserError, match=re.escape("nested too deep (recursive $ref?)")):
            make()


def test_one_of_disjointness_proofs_are_sound():
    """Whenever two branches are called disjoint, no value validates against both."""
    from unmask.infill.schema import _disjoint

    pool = [
        {"type": "integer"}, {"type": "number"}, {"type": "null"}, {"type": "string"},
        {"type": "integer", "minimum": 1}, {"type": "number", "maximum": 1},
        {"type": "number", "exclusiveMaximum": 1}, {"type": "integer", "minimum": 2},
        {"const": 1}, {"const": 1.0}, {"const": True}, {"enum": [0, "a"]}, {"enum": [1.5]},
        {"enum": [None, False]}, {"type": ["integer", "null"]},
        {"type": "object", "required": ["k"], "properties": {"k": {"const": 1}}},
        {"type": "object", "required": ["k"], "properties": {"k": {"const": 2}}},
        {"type": "object", "properties": {"k": {"const": 2}}},
    ]
    values = [-1, 0, 1, 1.0, 1.5, 2, 3, None, True, False, "a", "", {"k": 1}, {"k": 2}, {}]
    proven = 0
    for a in pool:
        for b in pool:
            if _disjoint(a, b, {}, "$"):
                proven += 1
                both = [v for v in values
                        if jsonschema.Draft202012Validator(a).is_valid(v)
                        and jsonschema.Draft202012Validator(b).is_valid(v)]
                assert not both, (a, b, both)
    assert proven > len(pool)  # the proofs do prove something


# -- the on-disk automaton cache ------------------------------------------------------------------


def test_automata_are_cached_on_disk_per_pattern_and_tokenizer(tmp_path, monkeypatch):
    from unmask.infill import automaton

    monkeypatch.setenv("UNMASK_CACHE_DIR", str(tmp_path))
    vocab = vocab_of(TOK)
    first = TokenAutomaton.from_regex("[a-c]{2,4}x?", vocab)
    files = list((tmp_path / "automata").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind

    def no_engine(*a, **k):
        raise AssertionError("compiled again")

    with monkeypatch.context() as m:  # a second process: served from disk, no compile
        m.setattr(automaton, "_index", no_engine)
        again = TokenAutomaton.from_regex("[a-c]{2,4}x?", vocab)
    for field in ("table", "token_class", "accept"):
        assert (getattr(first, field) == getattr(again, field)).all()
    assert (again.dead_class, again.start) == (first.dead_class, first.start)
    # Another pattern, another tokenizer (other bytes) or other allowed tokens: new entries.
    TokenAutomaton.from_regex("[a-c]{2,5}", vocab)
    lengths = vocab.lengths.copy()
    lengths[TOK.encode("c")[0]] = 0  # "c" becomes a special token: no bytes
    other = automaton.Vocab(matrix=vocab.matrix.copy(), lengths=lengths)
    TokenAutomaton.from_regex("[a-c]{2,4}x?", other)
    allowed = np.ones(vocab.size, dtype=bool)
    allowed[TOK.encode("b")[0]] = False
    narrow = TokenAutomaton.from_regex("[a-c]{2,4}x?", vocab, allowed)
    assert len(list((tmp_path / "automata").iterdir())) == 4
    assert not narrow.accepts(TOK.encode("ab"))
    # A damaged entry is rebuilt and rewritten, not trusted.
    files[0].write_bytes(b"not an npz")
    rebuilt = TokenAutomaton.from_regex("[a-c]{2,4}x?", vocab)
    assert (rebuilt.table == first.table).all() and files[0].stat().st_size > 10
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")
    assert automaton.cache_dir() is None
    TokenAutomaton.from_regex("[a-c]{2,6}", vocab)
    assert len(list((tmp_path / "automata").iterdir())) == 4



def test_the_disk_cache_is_pruned_to_its_limit_least_recently_used_first(tmp_path, monkeypatch):
    """Past ``UNMASK_CACHE_MAX_MB`` the entries used longest ago go when one is written (a
    server compiling its clients' regexes wrote a file per pattern without end); an entry
    loaded since it was written counts as used then; a bad limit is one line."""
    import os

    from unmask.infill import automaton

    monkeypatch.setenv("UNMASK_CACHE_DIR", str(tmp_path))
    vocab = vocab_of(TOK)
    folder = tmp_path / "automata"
    patterns = ["[a-c]{2,4}", "[a-c]{2,5}", "[a-c]{2,6}"]
    for k, pattern in enumerate(patterns):
        TokenAutomaton.from_regex(pattern, vocab)
        (new,) = set(folder.iterdir()) - {p for p in folder.iterdir() if p.stat().st_mtime < k}
        os.utime(new, (k, k))  # written at times 0, 1, 2
    sizes = {p: p.stat().st_size for p in folder.iterdir()}
    assert len(sizes) == 3  # the default limit (1 GiB) keeps them all
    oldest = min(sizes, key=lambda p: p.stat().st_mtime)
    with monkeypatch.context() as m:  # loading the oldest marks it used now
        m.setattr(automaton, "_index", lambda *a, **k: pytest.fail("compiled again"))
        TokenAutomaton.from_regex(patterns[0], vocab)
    assert oldest.stat().st_mtime > 2
    # room for about two entries: writing a fourth deletes the two used longest ago
    room = (sorted(sizes.values())[-1] * 2 + 1) / (1 << 20)
    monkeypatch.setenv("UNMASK_CACHE_MAX_MB", f"{room:.9f}")
    TokenAutomaton.from_regex("[a-c]{3,7}", vocab)
    left = set(folder.iterdir())
    assert oldest in left and len(left) == 2
    assert sum(p.stat().st_size for p in left) <= room * (1 << 20)
    monkeypatch.setenv("UNMASK_CACHE_MAX_MB", "0")  # only the entry just written stays
    TokenAutomaton.from_regex("[a-c]{3,8}", vocab)
    assert len(list(folder.iterdir())) == 1
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("UNMASK_CACHE_MAX_MB", bad)
        with pytest.raises(UserError, match="UNMASK_CACHE_MAX_MB"):
            TokenAutomaton.from_regex(f"[a-c]{{4,{9 + len(bad)}}}", vocab)


ENUMS_WITH_MORE = [
    # the other keywords narrow the values: outlines-core's regex kept every enum value, and a
    # numeric range or format replaced the enum altogether (6 for enum [1, 50], maximum 10)
    {"type": "integer", "enum": [1, 50], "maximum": 10},
    {"enum": [1, 50, "x"], "minimum": 10},
    {"type": "string", "enum": ["abc", "x", "toolong"], "minLength": 2, "maxLength": 4},
    {"type": "string", "enum": ["ab1", "abc"], "pattern": "^[a-z]+$"},
    {"type": "string", "enum": ["2024-01-31", "soon"], "format": "date"},
    {"enum": [[1, 2, 3], [1]], "maxItems": 1},
    {"enum": [[1, "a"], [1, 2]], "items": {"type": "integer"}},
    {"enum": [{"a": 1}, {"b": 2}], "required": ["b"]},
    {"enum": [{"a": 1}, {"a": "x"}], "properties": {"a": {"type": "string"}}},
    {"enum": ["a", "b", "c"], "const": "b"},
    {"type": "object", "properties": {"k": {"enum": [0.5, 2, 7], "exclusiveMinimum": 2}}},
]


@pytest.mark.parametrize("schema", ENUMS_WITH_MORE)
def test_enum_and_const_values_satisfy_every_other_keyword(schema):
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for seed in range(3):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema, format_checker=checker)
        assert json.loads(r.text) == r.value


@pytest.mark.parametrize(
    "schema,message",
    [
        ({"type": "string", "enum": ["a", "b"], "maxLength": 0}, "(maxLength, type)"),
        ({"type": "string", "const": "abc", "maxLength": 2}, "no enum/const value satisfies"),
        ({"const": "a", "enum": ["b"]}, "schema's other keywords (const)"),
        ({"type": "number", "const": 5, "exclusiveMaximum": 5}, "(exclusiveMaximum, type)"),
        ({"const": "hello", "format": "date"}, "(format)"),
        ({"enum": [{"a": 1}], "properties": {"a": {"multipleOf": 2}}}, "'multipleOf' cannot"),
        ({"type": "boolean", "enum": [1]}, "no enum value is of type 'boolean'"),
    ],
)
def test_enum_values_no_other_keyword_admits_are_refused(schema, message):
    with pytest.raises(UserError, match=re.escape(message)) as e:
        schema_form(schema, TOK)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "schema,message",
    [
        # an AttributeError traceback before
        ({"type": "object", "properties": [1, 2]}, "properties must be an object of schemas"),
        ({"$defs": ["x"], "type": "integer"}, "$defs must be an object of schemas"),
        # accepted and ignored before (the output did not validate: jsonschema's SchemaError)
        ({"type": "object", "required": "a", "properties": {"a": {"type": "null"}}},
         "required must be a list of property names"),
        ({"type": "object", "required": [1]}, "required must be a list of property names"),
        # outlines-core's "Unsupported JSON Schema structure [...]" before
        ({"type": "array", "items": [{"type": "integer"}]}, "write prefixItems"),
        ({"type": "array", "items": 3}, "items must be a schema"),
        ({"type": "object", "additionalProperties": "no"}, "additionalProperties must be a"),
        ({"type": "array", "items": False, "minItems": 1}, "no array satisfies it"),
        ({"type": "array", "prefixItems": [{"type": "null"}], "items": False, "minItems": 2},
         "no array satisfies it"),
        ({"type": "array", "items": False}, "admits one value only ([])"),
        ({"type": "object", "properties": {}, "additionalProperties": False},
         "admits one value only ({})"),
    ],
)
def test_malformed_structure_is_refused_in_one_line(schema, message):
    with pytest.raises(UserError, match=re.escape(message)) as e:
        schema_form(schema, TOK)
    assert "\n" not in str(e.value)


PREFIXES = [
    # "items": false after prefixItems was refused ("false admits no value")
    {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 9}],
     "items": False},
    # maxItems below the prefix: the whole prefix was written, one item too many
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "maxItems": 1},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "items": False,
     "maxItems": 1},
    # minItems above the prefix: outlines-core's regex ignores it (one item too few)
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "null"}], "minItems": 3},
    {"type": "array", "prefixItems": [{"type": "boolean"}], "items": {"type": "null"},
     "minItems": 3},
    {"type": "object", "properties": {"a": {"type": "array", "items": False},
                                      "b": {"type": "boolean"}}},
]


@pytest.mark.parametrize("schema", PREFIXES)
def test_prefix_items_with_item_counts_validate(schema):
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)
        assert json.loads(r.text) == r.value


def test_a_form_too_big_is_refused_before_it_is_built():
    """A fixed-size array of a million values was built value by value (minutes, and memory
    for 10^12) before the model's context refused it."""
    from unmask.infill.schema import MAX_FORM_VALUES

    for n in (MAX_FORM_VALUES + 1, 10**12):
        for schema in ({"type": "array", "items": {"type": "boolean"}, "minItems": n,
                        "maxItems": n},
                       {"type": "array", "prefixItems": [{"type": "null"}], "minItems": n}):
            with pytest.raises(UserError, match=f"over {MAX_FORM_VALUES} values"):
                schema_form(schema, TOK)
    nested = {"type": "array", "minItems": 100, "maxItems": 100,
              "items": {"type": "array", "minItems": 100, "maxItems": 100}}
    with pytest.raises(UserError, match=re.escape("over 8192 values")):
        schema_form(nested, TOK)
    small = {"type": "array", "items": {"type": "boolean"}, "minItems": 300, "maxItems": 300}
    with pytest.raises(UserError, match=re.escape(
            "over 256 values, at least a token each, more than the model's context "
            "(max_seq_len 256) holds")):  # the words the server codes context_length_exceeded
        fill_schema(MODEL, TOK, small, cfg(0))


def test_each_value_of_a_fixed_size_array_counts_once_against_the_context():
    """Its items were counted when the array was checked and again as each was built: 128
    booleans on a 256-token model were "over 256 values" at $[127]."""
    for n, item in ((9, {"type": "boolean"}), (4, {"type": "object", "required": ["a"],
                                                   "properties": {"a": {"type": "null"}}})):
        for schema in ({"type": "array", "items": item, "minItems": n, "maxItems": n},
                       {"type": "array", "prefixItems": [item] * n}):
            assert len(schema_form(schema, TOK, context=10)) == n  # 1 + n (x 2) values
    for schema in ({"type": "array", "items": {"type": "boolean"}, "minItems": 10,
                    "maxItems": 10},
                   {"type": "array", "prefixItems": [{"type": "boolean"}] * 10}):
        with pytest.raises(UserError, match=re.escape("schema at $: the form would have over "
                                                      "10 values")):
            schema_form(schema, TOK, context=10)


KEYWORDS_DROPPED_BY_THE_LIBRARY = [
    # a list of types: the range went with it (4 and -3 admitted)
    {"type": ["integer", "null"], "minimum": 5, "maximum": 7},
    {"type": ["number", "string"], "minimum": 5, "maximum": 7, "maxLength": 2},
    # no type at all: a range or length applies to the values of its kind
    {"minimum": 5, "maximum": 7},
    {"anyOf": [{"minimum": 5, "maximum": 7}]},
    # keywords beside anyOf/oneOf apply to every branch
    {"anyOf": [{"type": "string"}, {"type": "integer"}], "minimum": 5, "maximum": 7},
    {"anyOf": [{"type": "string"}, {"type": "integer"}], "maxLength": 2},
    {"oneOf": [{"type": "integer"}, {"type": "string"}], "minimum": 3, "maximum": 4},
    {"anyOf": [{"type": "boolean"}, {"type": "integer"}], "type": "integer", "maximum": 4},
]
CANDIDATES = ["null", "true", "3", "4", "5", "6", "7", "8", "-3", "5.5", "6.0", "7.5", '""',
              '"x"', '"ab"', '"abc"', '"abcde"', '"2024-01-31"']


@pytest.mark.parametrize("schema", KEYWORDS_DROPPED_BY_THE_LIBRARY)
def test_keywords_beside_type_lists_and_any_of_are_enforced(schema):
    auto = TokenAutomaton.from_regex(schema_regex(schema), vocab_of(TOK))
    valid = jsonschema.Draft202012Validator(schema).is_valid
    accepted = [c for c in CANDIDATES if auto.accepts_text(c, TOK)]
    assert accepted and all(valid(json.loads(c)) for c in accepted), accepted
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        assert valid(r.value), r.text


@pytest.mark.parametrize(
    "schema,message",
    [
        ({"anyOf": [{"type": "boolean"}], "type": "integer"}, "no anyOf branch admits"),
        # the pattern was dropped (any string of at most 3 characters)
        ({"type": ["string", "null"], "pattern": "^[0-9]+$", "maxLength": 3},
         "not inside anyOf, a list of types or a variable-length array"),
    ],
)
def test_type_lists_and_any_of_siblings_that_cannot_hold_are_refused(schema, message):
    with pytest.raises(UserError, match=re.escape(message)):
        schema_form(schema, TOK)


@pytest.mark.parametrize("key", ['a"b', "a\\b", "a\nb", "é\t", "plain.(x)+"])
def test_property_names_json_escapes_are_written_escaped_outside_the_skeleton(key):
    """Inside an array or anyOf an object is the library's regex, which wrote a property
    name raw between quotes: '{"a"b": true}' (fill_schema then raised JSONDecodeError)."""
    obj = {"type": "object", "properties": {key: {"type": "boolean"}}, "required": [key]}
    for schema in ({"type": "array", "items": obj, "minItems": 1, "maxItems": 2},
                   {"anyOf": [obj, {"type": "null"}]}):
        auto = TokenAutomaton.from_regex(schema_regex(obj), vocab_of(TOK))
        assert auto.accepts_text(json.dumps({key: True}, ensure_ascii=False), TOK)
        assert not auto.accepts_text('{"' + key + '": true}', TOK) or key == "plain.(x)+"
        for seed in range(2):
            r = fill_schema(MODEL, TOK, schema, cfg(seed))
            jsonschema.validate(r.value, schema)
            assert json.loads(r.text) == r.value


def test_enum_values_are_checked_against_one_compiled_pattern(monkeypatch):
    """Each value of an enum with a format or pattern is matched against the same automaton,
    compiled once (1000 emails took 45 s compiled value by value)."""
    import unmask.infill.schema as schema_mod

    calls = []
    real = TokenAutomaton.from_regex.__func__

    def counting(cls, pattern, *args, **kwargs):
        calls.append(pattern)
        return real(cls, pattern, *args, **kwargs)

    monkeypatch.setattr(TokenAutomaton, "from_regex", classmethod(counting))
    schema_mod._byte_automaton.cache_clear()
    values = [f"a{i}@example.com" for i in range(40)] + ["not an email"]
    form = schema_form({"type": "string", "format": "email", "enum": values}, TOK)
    assert calls.count(schema_mod._format_regex("email")) == 1
    monkeypatch.undo()
    auto = TokenAutomaton.from_regex(form.regex, vocab_of(TOK))
    assert auto.accepts_text('"a7@example.com"', TOK)
    assert not auto.accepts_text('"not an email"', TOK)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^b", "format": "email"},
        {"type": "array", "items": {"type": "string", "pattern": "^b", "format": "date"},
         "maxItems": 2},
        {"type": ["string", "null"], "pattern": "^x", "format": "date"},
    ],
)
def test_pattern_with_format_is_refused_not_half_enforced(schema):
    """The format's regex replaced the pattern: an email not starting with b was written."""
    with pytest.raises(UserError, match="pattern together with format cannot be enforced"):
        schema_form(schema, TOK)


@pytest.mark.parametrize(
    "array,admitted",
    [
        # the library's regex wrote the whole prefix (two items for maxItems 1) ...
        ({"prefixItems": [{"type": "null"}, {"type": "null"}], "maxItems": 1}, ["[null]"]),
        # ... and too few for minItems ...
        ({"prefixItems": [{"type": "null"}], "minItems": 2}, ["[null, null]", "[null, true]"]),
        # ... and refused items: false ("Unsupported JSON Schema structure false")
        ({"items": False}, ["[]"]),
        ({"prefixItems": [{"type": "null"}], "items": False}, ["[null]"]),
    ],
)
def test_prefix_items_inside_a_hole_hold_their_counts(array, admitted):
    schema = {"anyOf": [{"type": "array", **array}, {"type": "boolean"}]}
    auto = TokenAutomaton.from_regex(schema_regex(schema), vocab_of(TOK))
    valid = jsonschema.Draft202012Validator(schema).is_valid
    texts = ["[]", "[null]", "[null, null]", "[null, true]", "[null, null, null]"]
    assert [t for t in texts if auto.accepts_text(t, TOK)] == admitted
    assert all(valid(json.loads(t)) for t in admitted)


def test_keywords_beside_a_ref_apply_as_well_as_the_target():
    """They overrode the target's: "minimum": -2 beside a $ref to "minimum": 0 wrote -2."""
    defs = {"d": {"type": "integer", "minimum": 0, "maximum": 4}}
    for extra, allowed in [({"minimum": -2}, range(0, 5)), ({"maximum": 2}, range(0, 3))]:
        schema = {"$ref": "#/$defs/d", **extra, "$defs": defs}
        auto = TokenAutomaton.from_regex(schema_regex(schema), vocab_of(TOK))
        assert {i for i in range(-5, 9) if auto.accepts_text(str(i), TOK)} == set(allowed)
    for target, message in [(False, "is false, which admits no value"),
                            (3, "points to no schema")]:
        with pytest.raises(UserError, match=re.escape(message)):
            schema_form({"$ref": "#/$defs/x", "$defs": {"x": target}}, TOK)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 5000},
        {"type": "object", "properties": {"d": {"type": "string", "maxLength": 4096},
                                          "n": {"type": "integer", "minimum": 0, "maximum": 9}}},
        {"type": "string", "pattern": "^[a-z]+$", "maxLength": 2000},
        {"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 2},
    ],
)
def test_a_max_length_longer_than_any_hole_is_filled_not_refused(schema):
    """A string's maxLength over what a hole can spell (here 34 bytes) was compiled as a
    counted repetition: refused as too large over 1000 (and 30 s to compile at 1000 on the
    demo). A hole cannot write a longer string anyway, so the bound is dropped."""
    for seed in range(2):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)


def test_a_dropped_max_length_is_kept_when_a_hole_is_wider_than_it():
    """An array hole of 20 strings is wider than 34 tokens: the string's maxLength (40 bytes
    here) is then compiled as given, so no string in it is longer."""
    holder = {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 20}
    form = schema_form(holder, TOK)
    assert form.width > 34
    auto = TokenAutomaton.from_regex(form.regex, vocab_of(TOK))

    def array(first: str) -> str:
        return "[" + ", ".join([json.dumps(first)] + ['"a"'] * 19) + "]"

    assert auto.accepts_text(array("b" * 40), TOK)
    assert not auto.accepts_text(array("b" * 41), TOK)


def test_many_escaped_property_names_keep_their_own_spelling():
    """Markers UNMASKKEY1 and UNMASKKEY10 must not be confused when they are replaced."""
    keys = [f'k"{chr(97 + i)}' for i in range(12)]  # not k1 + 0 = k10
    obj = {"type": "object", "properties": {k: {"type": "boolean"} for k in keys},
           "required": keys}
    auto = TokenAutomaton.from_regex(schema_regex({"anyOf": [obj, {"type": "null"}]}),
                                     vocab_of(TOK))
    assert auto.accepts_text(json.dumps({k: True for k in keys}), TOK)
