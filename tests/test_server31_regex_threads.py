"""A ``/v1/edit`` regex search (a child process for up to 5 s) holds none of asyncio's default
threads, which every other request's checks use: six slow searches made a plain request wait
for them. At most ``max_slow_checks`` run at once and ``max_queue`` more wait; beyond that
a 429."""

from __future__ import annotations

import asyncio
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config, wait_until  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402
from unmask.server.http import APIError  # noqa: E402
from unmask.server.plumbing import slow_check  # noqa: E402

edit_module = importlib.import_module("unmask.infill.edit")  # the package's edit is a function

EDIT = {"text": "abcdef", "regex": "cd"}


def _slow_search(monkeypatch):
    """``regex_spans`` waits (bounded) for the test; returns (entered count, release, seen):
    ``seen`` records whether each wait was released (False: it gave up)."""
    entered, release, seen = [], threading.Event(), []
    original = edit_module.regex_spans

    def slow(regex, text, **kwargs):
        entered.append(regex)
        seen.append(release.wait(timeout=5))
        return original(regex, text, **kwargs)

    monkeypatch.setattr(edit_module, "regex_spans", slow)
    return entered, release, seen


def _one_default_thread(c: TestClient) -> None:
    async def install() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))

    c.portal.call(install)


def test_a_slow_regex_search_holds_no_default_thread(monkeypatch):
    entered, release, seen = _slow_search(monkeypatch)
    app = create_app(loaded(Echo(tiny_config())), access_log=False)
    answers = []
    with TestClient(app) as c:
        _one_default_thread(c)  # the old code searched on it: nothing else could be checked
        worker = threading.Thread(target=lambda: answers.append(c.post("/v1/edit", json=EDIT)))
        worker.start()
        wait_until(lambda: entered)
        plain = c.post("/v1/tokenize", json={"text": "abc"})  # its check runs off the loop
        release.set()
        worker.join(timeout=30)
    assert plain.status_code == 200, plain.text
    assert seen == [True], "a plain request waited for a regex search's thread"
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["spans"] == [[2, 4]]


def test_regex_searches_beyond_the_queue_are_a_429(monkeypatch):
    entered, release, seen = _slow_search(monkeypatch)
    limits = ServerLimits(max_slow_checks=1, max_queue=1)
    app = create_app(loaded(Echo(tiny_config())), access_log=False, limits=limits)
    answers: list = []
    with TestClient(app) as c:
        state = app.state.server
        workers = [threading.Thread(target=lambda: answers.append(c.post("/v1/edit", json=EDIT)))
                   for _ in range(2)]
        for w in workers:  # one searching, one waiting for the regex thread
            w.start()
        wait_until(lambda: len(entered) == 1 and state.searches.pending == 2)
        refused = c.post("/v1/edit", json=EDIT)
        plain = c.post("/v1/edit", json={"text": "abcdef", "spans": [[1, 3]]})
        release.set()
        for w in workers:
            w.join(timeout=30)
        assert state.searches.pending == 0  # every slot given back
        again = c.post("/v1/edit", json=EDIT)
    assert refused.status_code == 429, refused.text
    err = refused.json()["error"]
    assert "regex searches" in err["message"] and err["code"] == "queue_full"
    assert plain.status_code == 200, plain.text  # spans only: no regex thread needed
    assert [a.status_code for a in answers] == [200, 200]
    assert len(entered) == 3 and all(seen)
    assert again.status_code == 200, again.text


def test_a_regex_search_waiting_past_the_timeout_is_a_504(monkeypatch):
    entered, release, seen = _slow_search(monkeypatch)
    limits = ServerLimits(max_slow_checks=1, request_timeout_s=0.2)
    app = create_app(loaded(Echo(tiny_config())), access_log=False, limits=limits)
    answers: list = []
    with TestClient(app) as c:
        state = app.state.server
        first = threading.Thread(target=lambda: answers.append(c.post("/v1/edit", json=EDIT)))
        first.start()
        wait_until(lambda: entered)
        late = c.post("/v1/edit", json=EDIT)  # waits for the one regex thread, then 504
        assert state.searches.pending == 1  # its slot given back: it never ran
        release.set()
        first.join(timeout=30)
        timeouts = state.metrics.get("timeouts")
    assert late.status_code == 504, late.text
    assert late.json()["error"]["code"] == "timeout"
    assert timeouts == 2  # the first one ran past 0.2 s too (held by the test)
    assert len(entered) == 1 and all(seen)


class _Gone:
    """A request whose client has gone away."""

    scope: dict = {}

    async def is_disconnected(self) -> bool:
        return True


def test_a_check_whose_client_left_while_it_waited_is_dropped_not_run(monkeypatch):
    entered, release, seen = _slow_search(monkeypatch)
    limits = ServerLimits(max_slow_checks=1)
    app = create_app(loaded(Echo(tiny_config())), access_log=False, limits=limits)
    answers: list = []
    ran = []
    with TestClient(app) as c:
        state = app.state.server
        first = threading.Thread(target=lambda: answers.append(c.post("/v1/edit", json=EDIT)))
        first.start()
        wait_until(lambda: entered)  # the one slow-check thread is busy

        async def abandoned() -> int:
            try:
                await slow_check(state, lambda: ran.append(1), _Gone(), on=state.searches)
            except APIError as e:
                return e.status
            return 200

        status = c.portal.call(abandoned)
        waiting = state.searches.pending  # only the first: the abandoned check was dropped
        release.set()
        first.join(timeout=30)
        cancelled = state.metrics.get("cancelled")
    assert status == 499
    assert waiting == 1 and not ran and cancelled == 1
    assert answers[0].status_code == 200, answers[0].text
