"""A sent ``max_tokens`` bounds each value of a structured answer on completions and chat, as
``guided_choice`` and ``/v1/infill``'s ``[MASK:n]`` bound it: a value whose shortest answer
is longer is a 400 naming ``max_tokens`` (a ``"minLength": 100`` string under
``max_tokens`` 16 was answered in 102 tokens)."""

from __future__ import annotations

import pytest
from server_helpers import Echo, Recording, loaded, tiny_config

LONG = [{"type": "string", "minLength": 100},
        {"type": "integer", "minimum": 100000000000},
        {"enum": ["abcdefghijklmnopqrstuvwxyz"]}]


def _client(model):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    return TestClient(create_app(loaded(model), chat_template="plain"))


@pytest.mark.parametrize("schema", LONG)
def test_a_value_longer_than_a_sent_max_tokens_is_a_400(schema):
    model = Recording(Echo(tiny_config(512)))
    with _client(model) as c:
        for path, body in (("/v1/completions", {"prompt": "Hi"}),
                           ("/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "Hi"}]})):
            for extra in ({}, {"stream": True}):
                r = c.post(path, json={**body, **extra, "guided_json": schema,
                                       "max_tokens": 10})
                assert r.status_code == 400, r.text
                err = r.json()["error"]
                assert err["param"] == "max_tokens" and "\n" not in err["message"], err
                assert "bounds each value" in err["message"]
        assert model.sizes == []  # refused before any forward
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_json": schema})
        assert r.status_code == 200, r.text  # completions' default 16 is no bound (docs)


def test_values_that_fit_run_as_before():
    with _client(Echo(tiny_config(512))) as c:
        schema = {"type": "object", "properties": {"n": {"type": "integer"},
                                                   "s": {"type": "string", "maxLength": 8}},
                  "required": ["n", "s"]}
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_json": schema,
                                            "max_tokens": 10})
        assert r.status_code == 200, r.text


def test_a_schema_is_held_to_the_size_of_a_form():
    """A schema (``guided_json``, ``response_format``, ``/v1/forms``' ``schema``) is held to
    the characters a form's text may have: it had no bound, and its compile work grows with
    it (an enum of 5000 entries took seconds of the worker)."""
    import json

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    big = {"enum": [f"entry{i}" for i in range(200)]}
    assert len(json.dumps(big)) > 2000
    model = Recording(Echo(tiny_config(512)))
    app = create_app(loaded(model), limits=ServerLimits(max_prompt_chars=2000),
                     chat_template="plain")
    with TestClient(app) as c:
        for path, body, param in (
                ("/v1/completions", {"prompt": "Hi", "guided_json": big}, "guided_json"),
                ("/v1/completions", {"prompt": "Hi", "guided_json": json.dumps(big)},
                 "guided_json"),
                ("/v1/completions", {"prompt": "Hi", "response_format": {
                    "type": "json_schema", "json_schema": {"name": "x", "schema": big}}},
                 "response_format"),
                ("/v1/forms", {"schema": big}, "schema")):
            r = c.post(path, json=body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == param and err["code"] == "too_long", err
        assert model.sizes == []
        r = c.post("/v1/forms", json={"schema": {"enum": ["a", "b"]}})
        assert r.status_code == 200, r.text
