"""A form or JSON Schema nested a few hundred levels deep is a 400 naming its field (a
one-line error from the library), not a 500: the walks that lay out a form and read a schema
recurse, and overflowed Python's stack (RecursionError) on the worker or in the checks."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer  # noqa: E402

from unmask.errors import UserError  # noqa: E402
from unmask.infill.forms import parse_form  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402


def _arrays(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _schema(depth: int) -> dict:
    node: dict = {"type": "integer"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"a": node}, "required": ["a"]}
    return node


def _post(c: TestClient, path: str, body: dict):
    return c.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize("path,body,param", [
    ("/v1/forms", {"form": _arrays(400, "<int>")}, "form"),
    ("/v1/forms", {"form": json.dumps(_arrays(400, "<int>"))}, "form"),
    ("/v1/forms", {"schema": _schema(200)}, "schema"),
    ("/v1/infill", {"template": "a[MASK:3]", "guided_json": _schema(200)}, "guided_json"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 4, "guided_json": _schema(200)},
     "guided_json"),
])
def test_a_document_nested_too_deep_is_a_400(path, body, param):
    app = create_app(loaded(random_transformer()), access_log=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _post(c, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["message"] == f"{param}: nested deeper than 128 levels of objects and arrays"


def test_a_deep_form_under_no_regex_is_a_400_not_a_500():
    """``--no-regex`` looks for ``<regex:...>`` holes in the form before it is queued: that
    walk recursed too."""
    app = create_app(loaded(random_transformer()), access_log=False,
                     limits=ServerLimits(allow_regex=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        deep = _post(c, "/v1/forms", {"form": _arrays(600, "<regex:[ab]>")})
        shallow = _post(c, "/v1/forms", {"form": _arrays(3, "<regex:[ab]>")})
    refusal = "regex constraints are turned off on this server (form)"
    for r in (deep, shallow):
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == refusal


def test_a_form_at_the_depth_limit_is_laid_out():
    tok = byte_tokenizer()
    items, holes, _ = parse_form(_arrays(128, "<int>"), tok)
    assert len(holes) == 1
    with pytest.raises(UserError, match=r"^form template: nested deeper than 128 levels"):
        parse_form(_arrays(129, "<int>"), tok)
