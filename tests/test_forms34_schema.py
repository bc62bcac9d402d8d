"""JSON Schema forms, session 34: a string's pattern inside a composite value (an array, a
union, a list of types) admits only characters a JSON string holds as themselves, and errors
inside ``anyOf`` name the branch."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill.forms import value_automaton
from unmask.infill.schema import fill_schema, schema_form
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

jsonschema = pytest.importorskip("jsonschema")

TOK = byte_tokenizer()
EMAILS = {"type": "array", "items": {"type": "string", "pattern": "^[^@]+@[^@]+$"},
          "minItems": 1, "maxItems": 2}


def _accepts(schema: dict, text: str) -> bool:
    hole = schema_form(schema, TOK)
    return value_automaton(hole.regex, hole.bound, TOK, "t").accepts_text(text, TOK)


@pytest.mark.parametrize("schema, text", [
    (EMAILS, '["x", "y@z"]'),  # a quote closed the first string early: "x" fails the pattern
    (EMAILS, '["a\x01@b"]'),  # a raw control character: no JSON (JSONDecodeError after the fill)
    (EMAILS, '["a\\\\@b"]'),  # a backslash escapes the next character
    ({"anyOf": [{"type": "string", "pattern": r"^\S+$"}, {"type": "null"}]}, '"a\x00"'),
    ({"type": ["string", "null"], "pattern": "^.+$"}, '"a"b"'),
])
def test_a_pattern_in_a_composite_value_writes_no_character_json_escapes(schema, text):
    assert not _accepts(schema, text)


@pytest.mark.parametrize("schema, text", [
    (EMAILS, '["a@b", "c@d"]'),
    ({"anyOf": [{"type": "string", "pattern": r"^\S+$"}, {"type": "null"}]}, '"ab"'),
    ({"type": ["string", "null"], "pattern": "^[a-z]+$"}, '"abc"'),
    ({"anyOf": [{"type": "string", "pattern": '^(b|")$'}, {"type": "null"}]}, '"b"'),
])
def test_what_the_pattern_admits_in_plain_characters_stays(schema, text):
    assert _accepts(schema, text)


def test_the_filled_array_parses_and_validates():
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=256)).eval()
    for seed in range(6):
        r = fill_schema(model, TOK, EMAILS, SampleConfig(steps=4, seed=seed, temperature=1.0))
        jsonschema.validate(r.value, EMAILS)
        assert json.loads(r.text) == r.value


def test_an_error_inside_anyof_names_the_branch():
    """It said ``schema at $[0]``, which reads as an array's first item."""
    schema = {"type": "object", "additionalProperties": {"anyOf": [
        {"type": "string", "pattern": "^a+$", "minLength": 2}, {"type": "boolean"}]}}
    with pytest.raises(UserError, match=r"schema at \$\.additionalProperties\.anyOf\[0\]: "):
        schema_form(schema, TOK)


def test_the_keywords_an_enum_fails_leave_out_definitions():
    """``$defs`` constrains no value: it was named among the keywords no enum value met."""
    schema = {"$defs": {"s": {"type": "string"}},
              "allOf": [{"type": "string", "maxLength": 2}, {"enum": ["abc"]}]}
    with pytest.raises(UserError) as e:
        schema_form(schema, TOK)
    assert str(e.value).endswith("other keywords (maxLength, type)")
    assert "$defs" not in str(e.value)
