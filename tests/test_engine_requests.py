"""Malformed numbers in a request: one 400 that says what is wrong with them."""

from __future__ import annotations

import pytest
from server_helpers import loaded, random_transformer

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from unmask.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(loaded(random_transformer()), access_log=False)) as c:
        yield c


@pytest.mark.parametrize("field", ["temperature", "top_p", "threshold", "repetition_penalty"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_nan_or_infinite_number_is_refused_as_not_finite(client, field, value):
    """Python's JSON reads NaN and Infinity: ``"temperature": NaN`` was refused as "Input
    should be less than or equal to 2" (NaN fails every comparison), which it is not."""
    body = '{"prompt": "ab", "max_tokens": 4, "' + field + '": ' + value + "}"
    r = client.post("/v1/completions", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"] == f"{field}: Input should be a finite number", error
    assert error["param"] == field
