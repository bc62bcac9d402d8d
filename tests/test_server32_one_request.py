"""One request must not take the server down (session 32)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402


def test_an_infill_with_a_huge_block_length_neither_hangs_nor_holds_the_worker():
    """``block_length`` 2**64 on ``/v1/infill`` (a valid integer: one block longer than the
    canvas, cut to the canvas as any longer block) counted the block down one at a time on
    the worker: it held it for ever, so every later request timed out (504)."""
    app = create_app(loaded(random_transformer(0)), limits=ServerLimits(request_timeout_s=20))
    with TestClient(app) as c:
        r = c.post("/v1/infill", json={"template": "a [MASK:3] b", "block_length": 2**64})
        assert r.status_code == 200, r.text
        assert r.json()["text"].startswith("a ")
        after = c.post("/v1/infill", json={"template": "a [MASK:3] b", "steps": 3})
        assert after.status_code == 200, after.text


@pytest.mark.parametrize("path,body", [
    ("/v1/forms", {"schema": {"type": "array", "items": {"type": "integer"},
                              "minItems": 2**64}}),
    ("/v1/completions", {"prompt": "x", "max_tokens": 8,
                         "guided_json": {"type": "array", "minItems": 10**30}}),
])
def test_a_min_count_past_what_the_regex_writer_holds_is_refused_not_dropped(path, body):
    """``minItems`` 2**64 or more was dropped by the schema's regex writer (a u64): the
    answer was ``[]``, which breaks the schema; below 2**64 it is a 400 ("too large")."""
    with TestClient(create_app(loaded(random_transformer(0)))) as c:
        r = c.post(path, json={**body, "steps": 4})
    assert r.status_code == 400, r.text
    assert "minItems" in r.json()["error"]["message"] and "too large" in r.text
