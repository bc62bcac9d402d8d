"""JSON Schema forms, session 31: patterns in JSON Schema's own regex dialect (ECMA-262)."""

from __future__ import annotations

import re

import pytest
import torch

from unmask.config import SampleConfig, model_preset
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
