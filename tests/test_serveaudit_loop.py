"""The event loop stays free while a request is checked: its validation (tokenizing long
prompts, rendering chat messages, the checks of a refusal's advice) runs off the loop, so
``/healthz`` and running streams are answered meanwhile."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402

import unmask.infill as infill_package  # noqa: E402
from unmask import api  # noqa: E402
from unmask.chat import ChatTemplate  # noqa: E402
from unmask.server import create_app  # noqa: E402
from unmask.server.routes import completions, playground  # noqa: E402


def _slow(monkeypatch, owner, name):
    """Patch ``owner.name`` to wait (bounded) until the test releases it; returns the events
    (entered, released) and a list that records whether it was released before its wait
    ran out (False: the health probe could not be answered while it ran)."""
    entered, release, seen = threading.Event(), threading.Event(), []
    original = getattr(owner, name)

    def slow(*args, **kwargs):
        entered.set()
        seen.append(release.wait(timeout=5))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    return entered, release, seen


ROUTES = {  # a check each route makes before its work is queued: (owner, name, path, body)
    "completions": (completions, "check_generation", "/v1/completions",
                    {"prompt": "ab", "max_tokens": 3}),
    "chat": (ChatTemplate, "prompt", "/v1/chat/completions",  # rendering and tokenizing
             {"messages": [{"role": "user", "content": "x"}], "max_tokens": 3}),
    "infill": (infill_package, "parse_template", "/v1/infill", {"template": "a[MASK:2]b"}),
    "guided infill": (infill_package, "parse_form", "/v1/infill",  # automata compile
                      {"template": "a[MASK:4]", "guided_choice": ["yes", "no"]}),
    "forms": (api, "refuse_continuous", "/v1/forms", {"form": {"a": "<int>"}}),
    "edit": (api, "edit_checks", "/v1/edit", {"text": "abcdef", "spans": [[1, 3]]}),
    "tokenize": (api, "encode_prompt", "/v1/tokenize", {"text": "abc"}),
    "playground": (playground, "blank_fields", "/playground/options?max_tokens=30&steps=7",
                   None),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_healthz_answers_while_a_request_is_validated(monkeypatch, route):
    owner, name, path, body = ROUTES[route]
    entered, release, seen = _slow(monkeypatch, owner, name)
    app = create_app(loaded(Echo(tiny_config())), access_log=False, chat_template="plain")
    answers = []

    def send(c):
        answers.append(c.post(path, json=body) if body is not None else c.get(path))

    with TestClient(app) as c:
        worker = threading.Thread(target=send, args=(c,))
        worker.start()
        assert entered.wait(timeout=10)
        health = c.get("/healthz")  # on the old code: only once the check gave up waiting
        release.set()
        worker.join(timeout=30)
    assert health.status_code == 200
    assert seen and all(seen), "the health probe waited for the request's validation"
    assert answers[0].status_code == 200, answers[0].text


def test_a_refusal_found_off_the_loop_is_still_a_400():
    app = create_app(loaded(Echo(tiny_config())), access_log=False, chat_template="plain")
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 30, "steps": 7,
                                            "block_length": 5})
        assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user",
                                                               "content": "x" * 70000}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text
        r = c.post("/v1/completions", json={"prompt": [[1, 2, 10**6]], "max_tokens": 2})
        assert r.status_code == 400 and "vocabulary" in r.json()["error"]["message"], r.text
