"""Structured-output limits on the server, as a user meets them: an array's punctuation is
not held to ``max_tokens`` (only scalar values are, named by path), a schema's size is
counted as compact JSON with its characters as sent, and an infill gap named like a type
(``float``) keeps its name in an error's ``param``."""

from __future__ import annotations

import pytest
from server_helpers import Echo, Recording, loaded, tiny_config


def _client(model, **kw):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    return TestClient(create_app(loaded(model), chat_template="plain", **kw))


def test_an_array_whose_values_fit_is_not_refused_by_max_tokens():
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 3}
    with _client(Echo(tiny_config(512))) as c:
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_json": schema,
                                            "max_tokens": 4})
        assert r.status_code == 200, r.text


def test_a_scalar_too_long_for_max_tokens_is_named_by_path():
    schema = {"type": "object", "properties": {"s": {"type": "string", "minLength": 100}},
              "required": ["s"]}
    model = Recording(Echo(tiny_config(512)))
    with _client(model) as c:
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_json": schema,
                                            "max_tokens": 10})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "max_tokens" and "$.s" in err["message"], err
        # /v1/infill's [MASK:n] is the same check (one implementation), naming the gap
        r = c.post("/v1/infill", json={"template": "x [MASK:10] y", "guided_json": schema})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert "$.s" in err["message"] and "[MASK:10]" in err["message"], err
        assert err["param"] == "guided_json", err
        assert model.sizes == []


def test_a_schema_is_counted_as_compact_json_with_its_characters():
    import json

    from unmask.server import ServerLimits

    schema = {"enum": ["\u4e00\u4e8c\u4e09" * 20 for _ in range(20)]}
    sent = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    assert len(sent) < 1500 < len(json.dumps(schema))
    with _client(Echo(tiny_config(512)), limits=ServerLimits(max_prompt_chars=1500)) as c:
        for path, body in (("/v1/completions", {"prompt": "Hi", "guided_json": schema}),
                           ("/v1/forms", {"schema": schema})):
            r = c.post(path, json=body)
            assert "longer than" not in r.text, r.text


def test_a_gap_named_like_a_type_keeps_its_name_in_param():
    with _client(Echo(tiny_config(512))) as c:
        r = c.post("/v1/infill", json={"template": "a [MASK:float] b",
                                       "choices": {"float": ["a", "b" * 300]}})
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]["param"] == "choices.float.1", r.text
