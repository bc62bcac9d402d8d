"""A schema's ``$defs`` entry named as a value keyword (``const``, ``enum``, ...) was not
searched for patterns, so ``{"$defs": {"const": {"$defs": {...}}}}`` escaped the request's
bound on its patterns together (review rf29: 14 s of CPU, refused in 0.2 s without the
wrapper)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill.schema import _patterns, schema_form
from unmask.tokenizer import byte_tokenizer


@pytest.mark.parametrize("wrap", ["const", "enum", "default", "examples", "title",
                                  "description"])
def test_patterns_under_defs_named_as_value_keywords_are_found(wrap):
    defs = {f"d{i}": {"type": "string", "enum": ["x"], "pattern": f"^{i}a$"} for i in range(3)}
    for schema, where in [
        ({"$defs": {wrap: {"$defs": defs}}}, f"$.$defs.{wrap}.$defs.d"),
        ({"definitions": {wrap: {"definitions": defs}}}, f"$.definitions.{wrap}.definitions.d"),
        ({"dependentSchemas": {wrap: {"pattern": "^0a$"}}}, f"$.dependentSchemas.{wrap}"),
        ({"patternProperties": {wrap: {"pattern": "^0a$"}}}, f"$.patternProperties.{wrap}"),
    ]:
        found = _patterns(schema, "$")
        assert "^0a$" in [p for _, p in found], (schema, found)
        assert any(where in w for w, _ in found), (where, found)
    # values are still not searched
    assert _patterns({"enum": [{"pattern": "x"}], "const": {"pattern": "y"}}, "$") == []


def test_a_const_wrapper_does_not_escape_the_request_bound(monkeypatch):
    from unmask.infill import automaton

    checked = []
    real = automaton.check_total

    def spy(patterns, what, limit=automaton.MAX_REQUEST_DFA_STATES):
        patterns = list(patterns)
        checked.append([p for _, p in patterns])
        return real(patterns, what, limit=1)  # every pattern past it

    monkeypatch.setattr("unmask.infill.schema.check_total", spy)
    defs = {"d0": {"type": "string", "pattern": "^[ab]{3}$"}}
    schema = {"$defs": {"const": {"$defs": defs}}, "type": "object",
              "properties": {"p": {"$ref": "#/$defs/const/$defs/d0"}}, "required": ["p"]}
    with pytest.raises(UserError, match="too large in all"):
        schema_form(schema, byte_tokenizer(), source="guided_json")
    assert "^[ab]{3}$" in checked[0]
