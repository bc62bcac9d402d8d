"""A structured answer's automata compile (seconds for a large schema) among a request's
checks: a guided completion or chat compiled them on the event loop (every client, /healthz
included, waited 29 s behind one schema), a guided infill on one of asyncio's default
threads (that every other request's checks use). Both now run on the slow-check threads
(``plumbing.slow_check``)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer  # noqa: E402

from unmask.server import create_app  # noqa: E402
from unmask.server.routes import guided  # noqa: E402

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
CHAT = [{"role": "user", "content": "x"}]
GUIDED = {
    "completion": ("/v1/completions", {"prompt": "a", "max_tokens": 12, "guided_json": SCHEMA}),
    "streamed completion": ("/v1/completions", {"prompt": "a", "max_tokens": 12,
                                                "guided_json": SCHEMA, "stream": True}),
    "chat": ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 12,
                                      "response_format": {"type": "json_object"}}),
    "infill": ("/v1/infill", {"template": "a[MASK:12]", "guided_json": SCHEMA}),
}


def _slow_compile(monkeypatch):
    """``guided.build_form`` waits (bounded) for the test: (entered, release, seen), ``seen``
    recording whether the wait was released (False: it gave up)."""
    entered, release, seen = threading.Event(), threading.Event(), []
    original = guided.build_form

    def slow(*args, **kwargs):
        if kwargs.get("slow", True):  # it compiles (not a cheap look in the compiled forms)
            entered.set()
            seen.append(release.wait(timeout=5))
        return original(*args, **kwargs)

    monkeypatch.setattr(guided, "build_form", slow)
    return entered, release, seen


@pytest.mark.parametrize("case", list(GUIDED))
def test_a_compiling_guided_request_holds_neither_the_loop_nor_a_default_thread(
        monkeypatch, case):
    path, body = GUIDED[case]
    entered, release, seen = _slow_compile(monkeypatch)
    app = create_app(loaded(random_transformer()), access_log=False, chat_template="plain")
    answers = []
    with TestClient(app) as c:
        async def one_default_thread() -> None:  # the old infill compiled on it
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))

        c.portal.call(one_default_thread)
        worker = threading.Thread(target=lambda: answers.append(c.post(path, json=body)))
        worker.start()
        assert entered.wait(timeout=10)
        health = c.get("/healthz")  # the old completions and chat: blocked on the loop
        running = app.state.server.compiles.pending  # on a slow-check thread
        plain = c.post("/v1/tokenize", json={"text": "abc"})  # its check: a default thread
        release.set()
        worker.join(timeout=60)
    assert health.status_code == 200 and plain.status_code == 200
    assert seen == [True], "a request waited for a guided request's compile"
    assert answers[0].status_code == 200, answers[0].text
    assert running == 1 and app.state.server.compiles.pending == 0


def test_a_guided_refusal_found_in_the_compile_is_still_a_400_naming_the_field():
    app = create_app(loaded(random_transformer()), access_log=False)
    bad = {"type": "object", "properties": {"a": {"type": "nope"}}}
    with TestClient(app) as c:
        for stream in (False, True):
            r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 8,
                                                "guided_json": bad, "stream": stream})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "guided_json"
