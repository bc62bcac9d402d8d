"""A 400 for a value inside a mapping the request sent names its key (an infill gap ``"1"``),
as the request spells it: the key was dropped (``choices.0``, ``regex``) when it was not a
Python identifier, and only pydantic's own union tags are to be dropped."""

from __future__ import annotations

import pytest
from server_helpers import Echo, loaded, tiny_config


@pytest.mark.parametrize(("body", "param"), [
    ({"choices": {"1": ["x" * 257]}}, "choices.1.0"),
    ({"regex": {"1": "a" * 257}}, "regex.1"),
    ({"charset": {"my gap": "x" * 257}}, "charset.my gap"),
    ({"choices": {"city": ["x" * 257]}}, "choices.city.0"),  # an identifier: as before
])
def test_a_mapping_key_is_named(body, param):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with TestClient(create_app(loaded(Echo(tiny_config())), chat_template="plain")) as c:
        r = c.post("/v1/infill", json={"template": "a [MASK:4] b", **body})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["message"].startswith(f"{param}: "), err


def test_union_tags_are_still_dropped():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with TestClient(create_app(loaded(Echo(tiny_config())), chat_template="plain")) as c:
        r = c.post("/v1/completions", json={"prompt": ["ok", 5]})  # str | list[str] | ...
        assert r.status_code == 400, r.text
        param = r.json()["error"]["param"]
        assert param is not None and "[" not in param and "str" not in param.split("."), param
