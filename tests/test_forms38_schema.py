"""Session 38 (forms): JSON Schema $ref pointers and the length of a message's path."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from unmask.errors import UserError
from unmask.infill import fill_form
from unmask.infill.schema import schema_form
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


class Uniform:
    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
                 ) -> torch.Tensor:
        return torch.zeros(*tokens.shape, TOK.vocab_size)


def test_a_ref_into_an_array_is_followed():
    # "#/properties/a/anyOf/0" is a JSON pointer through an array: "points nowhere" before
    schema = {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 3}, {"type": "null"}]},
        "b": {"$ref": "#/properties/a/anyOf/0"}}}
    form = schema_form(json.dumps(schema), TOK)
    r = fill_form(Uniform(), TOK, form)
    jsonschema.validate(r.value, schema)
    assert r.value["b"] in (1, 2, 3)


@pytest.mark.parametrize("ref", ["#/properties/a/anyOf/01", "#/properties/a/anyOf/2",
                                 "#/properties/a/anyOf/-1"])
def test_a_ref_to_no_item_still_points_nowhere(ref):
    schema = {"properties": {"a": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
                             "b": {"$ref": ref}}}
    with pytest.raises(UserError, match="points nowhere"):
        schema_form(schema, TOK)


def test_a_ref_to_the_whole_schema_is_called_recursive_not_non_local():
    with pytest.raises(UserError, match=r"^schema at \$: recursive \$ref '#'"):
        schema_form({"$ref": "#"}, TOK)


def test_a_recursive_ref_is_refused_with_a_short_path():
    schema = {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}},
                              "required": ["next"]}}, "$ref": "#/$defs/n"}
    with pytest.raises(UserError, match=r"recursive \$ref") as e:
        schema_form(schema, TOK)
    assert len(str(e.value)) < 200 and "..." in str(e.value)  # was over 300 characters
    assert "characters): " in str(e.value)  # quote_pattern's cut, which says its length


@pytest.mark.parametrize("ref", ["#/" + "x" * 5000, "#/$defs/" + "x" * 5000])
def test_a_long_ref_is_quoted_by_its_ends(ref):
    # a 5,000-character $ref was quoted whole (a 5,000-character line on the CLI)
    schema = {"$defs": {"x" * 5000: False}, "type": "object", "properties": {"a": {"$ref": ref}},
              "required": ["a"]}
    with pytest.raises(UserError, match=r"\$ref '#/.*\.\.\..*' \(50\d\d characters\)") as e:
        schema_form(schema, TOK)
    assert len(str(e.value)) < 250


@pytest.mark.parametrize("last", [5, None, ["#/x"]])
def test_a_deep_chain_ending_in_a_ref_that_is_no_text_is_one_line(last):
    """Sixteen ``$defs`` pointing on to one whose ``$ref`` is no text: the depth refusal
    quoted it (``quote_pattern``: ``len()`` of an int, a TypeError, a 500 on the server);
    it is the refusal of a ``$ref`` that is not local, as at any depth."""
    import json

    from unmask.infill.schema import schema_form
    from unmask.tokenizer import byte_tokenizer

    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(16)}
    defs["d16"] = {"$ref": last}
    with pytest.raises(UserError, match=r"only local \$ref"):
        schema_form(json.dumps({"$ref": "#/$defs/d0", "$defs": defs}), byte_tokenizer())
