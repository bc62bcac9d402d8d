"""JSON Schema forms, session 31: patterns in JSON Schema's own regex dialect (ECMA-262)."""

from __future__ import annotations

import copy
import json
import random
import re

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.infill.schema import fill_schema
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

jsonschema = pytest.importorskip("jsonschema")

TOK = byte_tokenizer()
torch.manual_seed(0)
MODEL = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=128)).eval()


def cfg(seed: int) -> SampleConfig:
    return SampleConfig(steps=3, seed=seed, temperature=1.0)


ECMA_DIGIT = re.compile(r"[0-9]")
ECMA_WORD = re.compile(r"[A-Za-z0-9_]")


@pytest.mark.parametrize("pattern, ascii_only", [
    (r"^\d{2}-\d{2}$", "0123456789-"),
    (r"^\w{4}$", None),
    (r"^[\d,]{3}$", "0123456789,"),
])
def test_schema_pattern_classes_are_json_schemas_not_unicode(pattern, ascii_only):
    """``\\d`` and ``\\w`` in a schema ``pattern`` are ECMA-262's (ASCII), as every JSON
    Schema validator reads them: the engine's Unicode ``\\d`` wrote digits of any script,
    some newer than Python's tables (``"𖫈𞗳-𖭓𖩦"``: 24 of 40 random fills failed
    ``jsonschema`` itself)."""
    schema = {"type": "string", "pattern": pattern}
    for seed in range(8):
        value = fill_schema(MODEL, TOK, schema, cfg(seed)).value
        jsonschema.validate(value, schema)
        if ascii_only is not None:
            assert set(value) <= set(ascii_only), value
        else:
            assert all(ECMA_WORD.fullmatch(c) for c in value), value


def test_ecma_classes_narrow_only_where_the_narrowing_is_safe():
    from unmask.infill.automaton import ecma_classes

    assert ecma_classes(r"\d{2}") == "[0-9]{2}"
    assert ecma_classes(r"[\w.]") == "[A-Za-z0-9_.]"
    assert ecma_classes(r"\\d") == r"\\d"  # a literal backslash, then d
    for kept in (r"[^\d]", r"\D", r"\W", r"[\w--x]", r"\p{L}", r"\x{41}"):
        assert ecma_classes(kept) == kept
    vocab = vocab_of(TOK)
    dot = TokenAutomaton.from_regex(ecma_classes("."), vocab)
    space = TokenAutomaton.from_regex(ecma_classes(r"\s"), vocab)
    nonspace = TokenAutomaton.from_regex(ecma_classes(r"\S"), vocab)
    # (character, ".", "\s", "\S"): what ECMA-262 and Python's re both say (U+0085 is a space
    # to Python, not to ECMA; U+FEFF the reverse)
    for ch, d, s, ns in (("a", True, False, True), ("\u2028", False, True, False),
                         ("\x85", True, False, False), ("\ufeff", True, False, False),
                         ("\u3000", True, True, False)):
        ids = TOK.encode(ch)
        assert (dot.accepts(ids), space.accepts(ids), nonspace.accepts(ids)) == (d, s, ns), ch



def test_a_non_space_class_inside_brackets_is_ecmas_too():
    """``[\\S]`` and ``[\\S-]`` kept the engine's Unicode ``\\S`` (U+FEFF, a space to ECMA, was
    filled) while ``\\S`` outside brackets was narrowed."""
    from unmask.infill.automaton import ecma_classes

    vocab = vocab_of(TOK)
    for pattern in (r"[\S]", r"[\S-]", r"[a\S\d]"):
        auto = TokenAutomaton.from_regex(ecma_classes(pattern), vocab)
        assert not auto.accepts(TOK.encode("\ufeff")), pattern
        assert auto.accepts(TOK.encode("é")) and auto.accepts(TOK.encode("x")), pattern
    assert TokenAutomaton.from_regex(ecma_classes(r"[\S-]"), vocab).accepts(TOK.encode("-"))
    assert ecma_classes(r"[^\S]") == r"[^\S]"  # negated: the Unicode reading is narrower


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {}, "additionalProperties": {"type": "integer",
                                                                  "minimum": 0, "maximum": 5}},
    {"type": "array", "minItems": 2, "maxItems": 2,
     "items": {"type": "object", "properties": {}, "additionalProperties": {"type": "boolean"}}},
])
def test_an_object_with_empty_properties_that_admits_others_is_filled(schema):
    """``"properties": {}`` lists nothing to lay out, but the object may hold any other
    property: it is one value, as without ``properties`` (it was the skeleton ``{}`` alone,
    refused as "admits one value only", which it does not)."""
    for seed in range(2):
        jsonschema.validate(fill_schema(MODEL, TOK, schema, cfg(seed)).value, schema)


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "[0-9]{2}", "minLength": 5},
    {"type": "string", "pattern": "ab|c", "minLength": 4, "maxLength": 6},
    {"type": "object", "properties": {"id": {"type": "string", "pattern": "x", "minLength": 3}},
     "required": ["id"]},
])
def test_an_unanchored_pattern_no_whole_string_of_its_lengths_matches_is_a_search(schema):
    """JSON Schema's pattern is a search: ``"12abc"`` satisfies ``{"pattern": "\\\\d{2}",
    "minLength": 5}``. unmask fills an unanchored pattern as a whole string (the model writes
    the pattern, not text around it), which here left no value: it was refused as "no value
    of this tokenizer's tokens satisfies it"."""
    for seed in range(2):
        jsonschema.validate(fill_schema(MODEL, TOK, schema, cfg(seed)).value, schema)


def test_an_unanchored_pattern_that_fits_its_lengths_is_still_matched_whole():
    schema = {"type": "string", "pattern": "[a-z]+", "maxLength": 4}
    for seed in range(3):
        assert re.fullmatch("[a-z]{1,4}", fill_schema(MODEL, TOK, schema, cfg(seed)).value)


# -- random schemas: every fill validates, every refusal is one line ------------------------


def _scalar(rng: random.Random) -> dict:
    kind = rng.choice(["string", "integer", "number", "boolean", "enum", "const", "format",
                       "pattern", "types"])
    if kind == "string":
        lo = rng.randint(0, 3)
        return {"type": "string", "minLength": lo, "maxLength": lo + rng.randint(0, 5)}
    if kind in ("integer", "number"):
        out: dict = {"type": kind}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if rng.random() < 0.3:
                out[key] = rng.choice([-3, 0, 2, 10, 100, -1.5, 0.25])
        return out
    if kind == "enum":
        return {"enum": rng.sample(["a", "b c", 1, 2.5, True, None, "é", [1], {"x": 1}],
                                   rng.randint(1, 3))}
    if kind == "const":
        return {"const": rng.choice(["x", 3, None, [1, 2], {"k": "v"}])}
    if kind == "format":
        return {"type": "string", "format": rng.choice(["date", "time", "email", "uuid"])}
    if kind == "pattern":
        return {"type": "string", "pattern": rng.choice([r"^\d{2}-\d{2}$", r"\w{3}", "^ab",
                                                         "x$", "^(foo|bar)$"])}
    return {"type": rng.sample(["string", "integer", "boolean", "null"], 2)}


def _schema(rng: random.Random, depth: int = 0) -> dict:
    r = rng.random()
    if depth >= 2 or r < 0.4:
        return _scalar(rng)
    if r < 0.65:
        props = {f"p{i}": _schema(rng, depth + 1) for i in range(rng.randint(1, 3))}
        return {"type": "object", "properties": props,
                "required": rng.sample(list(props), rng.randint(0, len(props))),
                "additionalProperties": rng.choice([False, True])}
    if r < 0.85:
        lo = rng.randint(0, 2)
        return {"type": "array", "items": _schema(rng, depth + 1), "minItems": lo,
                "maxItems": lo + rng.randint(0, 2)}
    return {"anyOf": [_schema(rng, depth + 1) for _ in range(2)]}


def test_random_schemas_fill_values_that_validate():
    """A property test over a small grammar of the enforced keywords (fixed seeds, a random
    model sampling at temperature 1): whatever the model writes validates, and a schema that
    cannot be enforced is refused in one line, never a traceback."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    filled = 0
    for seed in range(24):
        schema = _schema(random.Random(seed))
        try:
            r = fill_schema(MODEL, TOK, schema, cfg(seed))
        except UserError as e:
            assert "\n" not in str(e)
            continue
        jsonschema.validate(r.value, schema, format_checker=checker)
        assert json.loads(r.text) == r.value
        filled += 1
    assert filled >= 18


@pytest.mark.parametrize("keyword, value", [("readOnly", True), ("writeOnly", True),
                                            ("deprecated", True), ("$anchor", "item")])
def test_annotation_keywords_are_no_refusal(keyword, value):
    """JSON Schema's meta-data annotations (pydantic writes ``deprecated``, OpenAPI
    documents ``readOnly``) constrain no value: they were refused as "cannot be enforced"."""
    schema = {"type": "object", "required": ["n"], keyword: value,
              "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5,
                                   keyword: value},
                             "u": {"anyOf": [{"type": "null"}, {"type": "boolean",
                                                                keyword: value}]}}}
    jsonschema.validate(fill_schema(MODEL, TOK, schema, cfg(0)).value, schema)


TAGGED = {
    "$defs": {
        "Cat": {"type": "object", "required": ["pet_type", "lives"],
                "properties": {"pet_type": {"const": "cat", "type": "string"},
                               "lives": {"type": "integer", "minimum": 0, "maximum": 9}}},
        "Dog": {"type": "object", "required": ["pet_type", "good"],
                "properties": {"pet_type": {"const": "dog", "type": "string"},
                               "good": {"type": "boolean"}}},
    },
    "type": "object", "required": ["pet"],
    "properties": {"pet": {
        "discriminator": {"propertyName": "pet_type",
                          "mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}},
        "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}},
}


def test_a_pydantic_tagged_union_with_its_discriminator_is_filled():
    """pydantic's ``Field(discriminator=...)`` writes OpenAPI's ``discriminator`` beside the
    ``oneOf``: it was refused as "cannot be enforced"; the tags decide the branch."""
    for seed in range(2):
        value = fill_schema(MODEL, TOK, TAGGED, cfg(seed)).value
        jsonschema.validate(value, TAGGED)


@pytest.mark.parametrize("node", [
    {"type": "object", "discriminator": {"propertyName": "a"}},  # no union beside it
    {"oneOf": [{"type": "null"}, {"type": "boolean"}], "discriminator": "kind"},
])
def test_a_discriminator_without_a_union_or_a_property_name_is_refused(node):
    from unmask.infill.schema import schema_form

    with pytest.raises(UserError, match="discriminator is read beside oneOf or anyOf") as e:
        schema_form(node, TOK)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("schema", [
    {"type": "object"},
    {"type": "array", "items": {"type": "object"}, "maxItems": 2},
    {"anyOf": [{"type": "object"}, {"type": "null"}]},
])
def test_any_object_holds_finite_numbers(schema):
    """An object with no listed properties took the library's number regex, exponent
    unbounded: ``{"}HFo.": -22.02e+7246}`` parsed to -inf, and ``fill-form`` printed
    ``-Infinity`` (3 of 36 random fills), which is not JSON."""
    for seed in range(12):
        r = fill_schema(MODEL, TOK, schema, cfg(seed))
        jsonschema.validate(r.value, schema)
        json.dumps(r.value, allow_nan=False)  # ValueError for inf or nan


def _pets(**changes):
    """``TAGGED``'s pet union with ``changes`` made to its node (None: the keyword removed)."""
    schema = copy.deepcopy(TAGGED)
    pet = schema["properties"]["pet"]
    pet.update(changes)
    for key in [k for k, v in pet.items() if v is None]:
        del pet[key]
    return schema


@pytest.mark.parametrize("schema", [
    _pets(discriminator={"propertyName": "nope"}),  # no branch has it
    _pets(discriminator={"propertyName": "pet_type",  # routes dog to Cat
                         "mapping": {"dog": "#/$defs/Cat", "cat": "#/$defs/Dog"}}),
    _pets(discriminator={"propertyName": "pet_type", "mapping": {"bird": "#/$defs/Cat"}}),
    _pets(anyOf=[{"$ref": "#/$defs/Cat"}, {"type": "object", "required": ["pet_type"],
                                             "properties": {"pet_type": {"type": "string"}}}],
          oneOf=None),  # a branch with no tag
    _pets(anyOf=[{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Cat"}], oneOf=None),  # one tag
    {"anyOf": [{"type": "integer"}, {"type": "null"}], "discriminator": {"propertyName": "x"}},
])
def test_a_discriminator_the_branches_tags_do_not_decide_is_refused(schema):
    """OpenAPI routes a value by its discriminator; unmask reads it as an annotation only
    where the branches' const tags already decide the branch (they were accepted, and a
    mapping that sends ``"dog"`` to ``Cat`` was filled with a dog that ``Cat`` refuses)."""
    from unmask.infill.schema import schema_form

    with pytest.raises(UserError, match="discriminator '(nope|pet_type|x)' cannot be "
                                        "enforced") as e:
        schema_form(schema, TOK)
    assert "\n" not in str(e.value)


def test_a_discriminator_over_single_enum_tags_and_names_in_its_mapping_is_accepted():
    from unmask.infill.schema import schema_form

    schema = _pets(discriminator={"propertyName": "pet_type",
                                  "mapping": {"cat": "Cat", "dog": "#/$defs/Dog"}})
    schema["$defs"]["Dog"]["properties"]["pet_type"] = {"enum": ["dog"]}
    schema_form(schema, TOK)
    value = fill_schema(MODEL, TOK, schema, cfg(0)).value
    jsonschema.validate(value, schema)


_LIZARDS = {  # pydantic 2.14's Owner with pet: Union[Cat, Lizard] = Field(discriminator=...)
    "$defs": {
        "Cat": {"properties": {"pet_type": {"const": "cat", "type": "string"},
                               "meows": {"type": "integer"}},
                "required": ["pet_type", "meows"], "type": "object"},
        "Lizard": {"properties": {"pet_type": {"enum": ["reptile", "lizard"], "type": "string"},
                                  "scales": {"type": "boolean"}},
                   "required": ["pet_type", "scales"], "type": "object"}},
    "properties": {"pet": {
        "discriminator": {"mapping": {"cat": "#/$defs/Cat", "lizard": "#/$defs/Lizard",
                                      "reptile": "#/$defs/Lizard"}, "propertyName": "pet_type"},
        "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Lizard"}]}},
    "required": ["pet"], "type": "object"}
_BY_INT = {  # pydantic's x: Union[One, Two] = Field(discriminator="kind"), kind: Literal[1]
    "$defs": {
        "One": {"properties": {"kind": {"const": 1, "type": "integer"},
                               "a": {"type": "integer"}},
                "required": ["kind", "a"], "type": "object"},
        "Two": {"properties": {"kind": {"const": 2, "type": "integer"},
                               "b": {"type": "integer"}},
                "required": ["kind", "b"], "type": "object"}},
    "properties": {"x": {
        "discriminator": {"mapping": {"1": "#/$defs/One", "2": "#/$defs/Two"},
                          "propertyName": "kind"},
        "oneOf": [{"$ref": "#/$defs/One"}, {"$ref": "#/$defs/Two"}]}},
    "required": ["x"], "type": "object"}


@pytest.mark.parametrize("schema", [_LIZARDS, _BY_INT])
def test_pydantics_tagged_unions_with_several_or_integer_tags_are_accepted(schema):
    """A branch's tags may be an enum (``Literal["reptile", "lizard"]``) and a tag a number
    (``Literal[1]``, named ``"1"`` in the mapping, whose keys are strings): both were refused
    (review rl31), though the tags decide the branch."""
    from unmask.infill.schema import schema_form

    schema_form(schema, TOK)
    value = fill_schema(MODEL, TOK, schema, cfg(0)).value
    jsonschema.validate(value, schema)


def _changed(schema, path, value):
    schema = copy.deepcopy(schema)
    node = schema
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return schema


@pytest.mark.parametrize("schema", [
    # a tag in two branches' enums (anyOf: a oneOf is refused before, as not disjoint)
    _changed(_changed(_LIZARDS, ("$defs", "Cat", "properties", "pet_type"),
                      {"enum": ["cat", "lizard"]}),
             ("properties", "pet"), {"anyOf": _LIZARDS["properties"]["pet"]["oneOf"],
                                     "discriminator": {"propertyName": "pet_type"}}),
    # "1" sent to the branch tagged 2
    _changed(_BY_INT, ("properties", "x", "discriminator", "mapping"), {"1": "#/$defs/Two"}),
    # a key that names no tag
    _changed(_BY_INT, ("properties", "x", "discriminator", "mapping"), {"3": "#/$defs/One"}),
])
def test_overlapping_tags_or_a_mapping_against_the_tags_are_still_refused(schema):
    from unmask.infill.schema import schema_form

    with pytest.raises(UserError, match="discriminator '(pet_type|kind)' cannot be enforced"):
        schema_form(schema, TOK)
