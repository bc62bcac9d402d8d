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
