"""A request answered in one body whose client went away while its checks ran (in a thread)
is not run: it was submitted anyway and ran until ``plumbing.wait`` first polled the
connection (a few forward passes of the model for nobody). Completions, chat, infill, forms
and edit check the connection before they submit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.model import Transformer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.fixture
def gone(monkeypatch):
    """Every client has gone away; returns the jobs the engine was given."""
    from starlette.requests import Request

    from unmask.server.batching import Engine

    async def disconnected(self) -> bool:
        return True

    submitted: list[object] = []
    real = Engine.submit

    def submit(self, job):  # noqa: ANN001, ANN202
        submitted.append(job)
        return real(self, job)

    monkeypatch.setattr(Request, "is_disconnected", disconnected)
    monkeypatch.setattr(Engine, "submit", submit)
    return submitted


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "ab", "max_tokens": 8}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "ab"}],
                              "max_tokens": 8}),
    ("/v1/infill", {"template": "a [MASK:4] b"}),
    ("/v1/forms", {"schema": {"enum": ["a", "b"]}}),
    ("/v1/edit", {"text": "the cat", "spans": [[4, 7]]}),
    ("/v1/completions", {"prompt": "ab", "max_tokens": 4, "guided_choice": ["yes", "no"]}),
])
def test_a_request_whose_client_left_during_its_checks_is_not_run(gone, path, body):
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(32))).eval()
    app = create_app(loaded(model), access_log=False, chat_template="plain")
    with TestClient(app) as c:
        r = c.post(path, json=body)
        assert r.status_code == 499 and r.json()["error"]["code"] == "cancelled", r.text
        # counted once as abandoned by its client, as a request dropped while it ran is
        assert app.state.metrics.get("cancelled") == 1
    assert gone == []
