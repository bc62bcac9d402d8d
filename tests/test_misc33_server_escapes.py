"""The server's JSON, streamed (server-sent events) and not, wrote DEL, the C1 controls and
the bidi overrides raw inside its strings (``json.dumps(ensure_ascii=False)``): a body a
client printed (``curl``) could drive or reorder its terminal (``\\x9b`` is CSI). They are
JSON escapes now (``unmask.terminal.json_escaped``, as ``--json`` writes them): the same
value, no raw byte."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402

RAW = "a\x7f\x9b\u202eb"


@pytest.fixture(scope="module")
def client():
    app = create_app(loaded(Echo(tiny_config())), limits=ServerLimits(max_steps=64, max_n=4),
                     chat_template="plain")
    with TestClient(app) as c:
        yield c


def _no_raw(body: str, escaped: str = "\x7f\x9b\u202e") -> None:
    assert not any(c in body for c in "\x7f\x9b\u202e"), body
    assert all(f"\\u{ord(c):04x}" in body for c in escaped), body


def test_json_bodies_escape_c1_and_bidi(client):
    r = client.post("/v1/infill", json={"template": RAW + "[MASK:2]"})  # an explicit response
    assert r.status_code == 200, r.text
    _no_raw(r.text)
    assert r.json()["text"].startswith(RAW)
    # a dict: the default response class (a byte tokenizer's pieces: DEL is one of them)
    r = client.post("/v1/tokenize", json={"text": "a\x7fb"})
    assert r.status_code == 200, r.text
    _no_raw(r.text, "\x7f")
    assert r.json()["pieces"] == ["a", "\x7f", "b"]


def test_streamed_events_escape_c1_and_bidi(client):
    r = client.post("/v1/infill", json={"template": RAW + "[MASK:2]", "stream": True})
    assert r.status_code == 200, r.text
    _no_raw(r.text, "\x7f")  # steps show byte pieces; the last event the filled text
    events = [json.loads(line[len("data: "):]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    assert any(RAW in json.dumps(e, ensure_ascii=False) for e in events), r.text
