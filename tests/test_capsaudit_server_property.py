"""Every answer the server gives a guided request is in its constraint's language, for a
random tiny model over several seeds, streamed or not: a JSON Schema's (validated with
``jsonschema``), a regex's, a choice's, ``json_object``'s."""

from __future__ import annotations

import json
import re

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.model import Transformer

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "exclusiveMinimum": -1, "maximum": 1.5},
        "kind": {"enum": ["cat", "dog", None]},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2}$"},
                 "minItems": 1, "maxItems": 2},
        "when": {"type": "string", "format": "date"},
        "ref": {"$ref": "#/$defs/code"},
        "either": {"anyOf": [{"type": "boolean"}, {"type": "integer", "maximum": -5}]},
    },
    "required": ["name", "age", "kind", "tags", "ref"],
    "$defs": {"code": {"type": "string", "pattern": "^[A-Z][0-9]{2}$"}},
}
REGEX = r"(?:[0-9]{3}-)?[a-f]{2,4}"
CHOICES = ["a", "ab", "abc", "日本", "日本語", "x y"]


def _client():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    torch.manual_seed(0)
    model = Transformer(tiny_config(256)).eval()
    return TestClient(create_app(loaded(model), chat_template="plain"))


def _streamed(c, body):
    text = ""
    with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice.get("text") or ""
    return text


@pytest.mark.parametrize(("field", "value"), [
    ("guided_json", SCHEMA),
    ("guided_regex", REGEX),
    ("guided_choice", CHOICES),
    ("response_format", {"type": "json_object"}),
])
def test_every_answer_is_in_the_constraints_language(field, value):
    with _client() as c:
        for seed in range(3):
            body = {"prompt": "Q:", field: value, "max_tokens": 12, "seed": seed,
                    "temperature": 1.0}
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            text = r.json()["choices"][0]["text"]
            if field == "guided_json":
                jsonschema.validate(json.loads(text), SCHEMA,
                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
            elif field == "guided_regex":
                assert re.fullmatch(REGEX, text), text
            elif field == "guided_choice":
                assert text in CHOICES, text
            else:
                assert isinstance(json.loads(text), dict), text
            assert _streamed(c, body) == text  # the stream joins to the same answer
