"""Slow checks come in two kinds with threads of their own (``ServerState.searches`` for
``/v1/edit`` regex searches, ``ServerState.compiles`` for structured answers), and a request
that compiles nothing takes neither: every guided request shared two threads with the regex
searches, so one client's ``(a+)+$`` edits delayed (9.6 s against 0.21 s) or refused (429)
all structured output, a ``json_object`` and a form compiled before included. A
``/v1/forms`` schema's checks (seconds for many patterns) ran on asyncio's default threads
(a plain ``/v1/tokenize`` waited 20 s behind six). ``--timeout`` is one deadline for a
request's slow check and its model job together. Blocking stand-ins, no timing asserts."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer, wait_until  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402
from unmask.server.routes import guided  # noqa: E402

edit_module = importlib.import_module("unmask.infill.edit")  # the package's edit is a function
schema_module = importlib.import_module("unmask.infill.schema")

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
CHAT = [{"role": "user", "content": "x"}]
EDIT = {"text": "abcdef", "regex": "cd"}
JSON_OBJECT = {"messages": CHAT, "max_tokens": 12, "response_format": {"type": "json_object"}}
CASES = {
    "json_object chat": ("/v1/chat/completions", JSON_OBJECT),
    "choice": ("/v1/completions", {"prompt": "a", "max_tokens": 4,
                                   "guided_choice": ["yes", "no"]}),
    "schema": ("/v1/completions", {"prompt": "a", "max_tokens": 12, "guided_json": SCHEMA}),
    "streamed schema": ("/v1/completions", {"prompt": "a", "max_tokens": 12,
                                            "guided_json": SCHEMA, "stream": True}),
    "infill": ("/v1/infill", {"template": "a[MASK:12]", "guided_json": SCHEMA}),
}


class Blocker:
    """A stand-in for slow work: ``wrap(fn)`` waits (bounded) for ``release`` before calling
    ``fn``, where ``when(kwargs)`` holds; ``entered`` counts the waits, ``seen`` records
    whether each was released (False: it gave up)."""

    def __init__(self, when=lambda kwargs: True) -> None:
        self.entered: list[int] = []
        self.seen: list[bool] = []
        self.release = threading.Event()
        self.when = when

    def wrap(self, fn):
        def slow(*args, **kwargs):
            if self.when(kwargs):
                self.entered.append(1)
                self.seen.append(self.release.wait(timeout=10))
            return fn(*args, **kwargs)

        return slow


def _app(**limits):
    return create_app(loaded(random_transformer()), access_log=False, chat_template="plain",
                      limits=ServerLimits(**limits))


def _send(c: TestClient, answers: list, path: str, body: dict) -> threading.Thread:
    t = threading.Thread(target=lambda: answers.append(c.post(path, json=body)))
    t.start()
    return t


@pytest.mark.parametrize("case", list(CASES))
def test_structured_output_waits_for_no_regex_search(monkeypatch, case):
    searches = Blocker()
    monkeypatch.setattr(edit_module, "regex_spans", searches.wrap(edit_module.regex_spans))
    app = _app(max_slow_checks=1)
    path, body = CASES[case]
    edits: list = []
    with TestClient(app) as c:
        worker = _send(c, edits, "/v1/edit", EDIT)
        wait_until(lambda: searches.entered)  # the one search thread is busy
        answer = c.post(path, json=body)  # the old code: waited for that thread
        searches.release.set()
        worker.join(timeout=60)
    assert searches.seen == [True], "a structured answer waited for a regex search"
    assert answer.status_code == 200, answer.text
    assert edits[0].status_code == 200


@pytest.mark.parametrize("case", list(CASES))
def test_a_form_compiled_before_takes_no_slow_check(monkeypatch, case):
    path, body = CASES[case]
    compiles = Blocker(when=lambda kwargs: kwargs.get("slow", True))  # it compiles
    app = _app(max_slow_checks=1)
    others: list = []
    with TestClient(app) as c:
        first = c.post(path, json=body)  # compiles its form (nothing blocked yet)
        monkeypatch.setattr(guided, "build_form", compiles.wrap(guided.build_form))
        other = {"prompt": "b", "max_tokens": 6, "guided_regex": "[a-c]+"}
        worker = _send(c, others, "/v1/completions", other)
        wait_until(lambda: compiles.entered)  # the one compile thread is busy
        again = c.post(path, json=body)  # the old code: waited for it (its form compiled)
        compiles.release.set()
        worker.join(timeout=60)
    assert compiles.seen == [True], "a form compiled before waited for another's compile"
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    if "stream" not in body:
        assert again.json()["choices" if "choices" in again.json() else "gaps"]
    assert others[0].status_code == 200


def test_a_plain_infill_with_response_format_text_takes_no_slow_check(monkeypatch):
    compiles = Blocker(when=lambda kwargs: kwargs.get("slow", True))
    monkeypatch.setattr(guided, "build_form", compiles.wrap(guided.build_form))
    app = _app(max_slow_checks=1)
    others: list = []
    with TestClient(app) as c:
        other = {"prompt": "b", "max_tokens": 6, "guided_regex": "[a-c]+"}
        worker = _send(c, others, "/v1/completions", other)
        wait_until(lambda: compiles.entered)  # the one compile thread is busy
        plain = c.post("/v1/infill", json={"template": "a[MASK:3]",  # "text": no constraint
                                           "response_format": {"type": "text"}})
        compiles.release.set()
        worker.join(timeout=60)
    assert compiles.seen == [True], "a plain infill waited for a compile"
    assert plain.status_code == 200, plain.text
    assert others[0].status_code == 200


def test_a_forms_schema_is_checked_on_a_slow_check_thread(monkeypatch):
    checks = Blocker(when=lambda kwargs: not checks.entered)  # the request's own check
    monkeypatch.setattr(schema_module, "check_schema", checks.wrap(schema_module.check_schema))
    app = _app()
    answers: list = []
    with TestClient(app) as c:
        async def one_default_thread() -> None:  # the old code checked the schema on it
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))

        c.portal.call(one_default_thread)
        worker = _send(c, answers, "/v1/forms", {"schema": SCHEMA, "steps": 4})
        wait_until(lambda: checks.entered)
        running = getattr(app.state.server, "compiles", None)  # (the old code had none)
        running = running and running.pending
        plain = c.post("/v1/tokenize", json={"text": "abc"})  # its check: a default thread
        checks.release.set()
        worker.join(timeout=60)
    assert plain.status_code == 200, plain.text
    assert checks.seen == [True], "a plain request waited for a schema's checks"
    assert running == 1
    assert answers[0].status_code == 200, answers[0].text


def test_the_timeout_is_one_deadline_for_the_slow_check_and_the_model_job(monkeypatch):
    """A 0.6 s search, then a 0.6 s job, under a 1 s ``--timeout``: each fits, both do not
    (the old code gave each wait the whole timeout: 200 after 1.2 s)."""
    from unmask import api

    def pause(fn):
        def slow(*args, **kwargs):
            time.sleep(0.6)
            return fn(*args, **kwargs)

        return slow

    monkeypatch.setattr(edit_module, "regex_spans", pause(edit_module.regex_spans))
    monkeypatch.setattr(api, "edit", pause(api.edit))
    app = _app(request_timeout_s=1.0)
    with TestClient(app) as c:
        late = c.post("/v1/edit", json=EDIT)
        timeouts = app.state.server.metrics.get("timeouts")
    assert late.status_code == 504, late.text
    assert late.json()["error"]["code"] == "timeout"
    assert timeouts == 1


def test_a_streams_deadline_counts_its_slow_check_too(monkeypatch):
    """The same for a streamed guided completion: a 0.6 s compile, then a 0.6 s fill, under a
    1 s ``--timeout`` end in a timeout (the old code: the whole answer, the stream's own
    deadline starting after the compile)."""
    import unmask.infill

    def pause(fn, when=lambda kwargs: True):
        def slow(*args, **kwargs):
            if when(kwargs):
                time.sleep(0.6)
            return fn(*args, **kwargs)

        return slow

    monkeypatch.setattr(guided, "build_form",
                        pause(guided.build_form, lambda kwargs: kwargs.get("slow", True)))
    monkeypatch.setattr(unmask.infill, "fill_form", pause(unmask.infill.fill_form))
    app = _app(request_timeout_s=1.0)
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={**CASES["choice"][1], "stream": True, "seed": 3})
    # a 504 before its first step (``stream_job``'s first_step), else the stream's error event
    assert r.status_code in (200, 504)
    assert '"code": "timeout"' in r.text or '"code":"timeout"' in r.text, r.text[-300:]


def test_schemas_whose_properties_differ_in_order_are_different_forms():
    """The remembered form was keyed with the schema's keys sorted: a schema listing b before
    a, sent after one listing a before b, was answered with a first (review rm31)."""
    ab = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
          "required": ["a", "b"]}
    ba = {"type": "object", "properties": {"b": {"type": "boolean"}, "a": {"type": "integer"}},
          "required": ["a", "b"]}
    with TestClient(_app()) as c:
        for schema, first in ((ab, "a"), (ba, "b")):
            r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 16,
                                                "guided_json": schema, "seed": 1})
            assert r.status_code == 200, r.text
            assert next(iter(json.loads(r.json()["choices"][0]["text"]))) == first


def test_a_remembered_form_whose_automata_were_dropped_compiles_on_a_slow_check(monkeypatch):
    """A form compiled before skipped the slow check even when its automata had since been
    dropped from the automaton cache: they were built again on asyncio's default threads (no
    bound, no 429) and once more on the worker (review rm31). Once any automaton is dropped,
    a remembered form takes the slow check again."""
    from unmask.infill import automaton

    path, body = CASES["schema"]
    with TestClient(_app()) as c:
        assert c.post(path, json=body).status_code == 200  # compiled and remembered
        calls: list[bool] = []
        real = guided.build_form

        def spy(*args, **kwargs):
            calls.append(kwargs.get("slow", True))
            return real(*args, **kwargs)

        monkeypatch.setattr(guided, "build_form", spy)
        assert c.post(path, json=body).status_code == 200
        assert calls and True not in calls  # remembered: the fast look found it
        calls.clear()
        monkeypatch.setattr(automaton, "_EVICTED", [automaton.evictions() + 1])
        assert c.post(path, json=body).status_code == 200
        assert calls[0] is False and True in calls  # the fast look missed: a slow check
