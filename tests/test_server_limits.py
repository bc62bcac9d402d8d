"""Request limits of the generating endpoints, found before any costly work, in the API's
own words."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402
from unmask.server.routes import completions, guided  # noqa: E402


class CountingTokenizer:
    """The byte tokenizer, counting the characters it is asked to encode."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.encoded = 0

    def encode(self, text: str, *args: object, **kwargs: object) -> list[int]:
        self.encoded += len(text)
        return self.inner.encode(text, *args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def chat_client():
    ld = loaded(Echo(tiny_config()))
    tok = CountingTokenizer(ld.tokenizer)
    ld.tokenizer = tok  # type: ignore[assignment]
    app = create_app(ld, limits=ServerLimits(max_prompt_chars=200), chat_template="plain")
    with TestClient(app) as c:
        c.tok = tok  # type: ignore[attr-defined]
        yield c


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "x" * 201}],  # the text alone is too long
    [{"role": "user", "content": "x"}] * 30,  # short texts, too long once rendered
])
def test_overlong_chat_messages_are_refused_by_name_before_tokenizing(chat_client, messages):
    before = chat_client.tok.encoded
    r = chat_client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages" and err["code"] == "too_long"  # chat has no "prompt"
    assert "200 characters" in err["message"]
    assert chat_client.tok.encoded == before  # refused before the prompt was tokenized


def test_chat_messages_within_the_limit_are_served(chat_client):
    r = chat_client.post("/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "x" * 20}],
                               "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


def stream_chunks(client: TestClient, path: str, body: dict) -> list[dict]:
    """The JSON chunks of a streamed request (``[DONE]`` checked and left out)."""
    r = client.post(path, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    events = [b[len("data: "):] for b in r.text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "Hi", "n": 2, "stop": ["q"]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/completions", {"prompt": "Hi", "guided_choice": ["yes", "no"]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                              "guided_regex": "[a-z]{3}"}),
])
def test_include_usage_chunks_are_shaped_as_at_openai(chat_client, monkeypatch, path, body):
    """OpenAI: with include_usage, every chunk before the last has "usage": null and the last
    has the usage and no choices; every chunk of a stream has the same "created"."""
    clock = iter(range(1_000_000, 2_000_000, 7))  # a clock that moves between chunks
    monkeypatch.setattr(guided, "time", SimpleNamespace(time=lambda: next(clock)))
    monkeypatch.setattr(completions, "time", SimpleNamespace(time=lambda: next(clock)))
    chunks = stream_chunks(chat_client, path, {**body, "max_tokens": 6,
                                               "stream_options": {"include_usage": True}})
    *text_chunks, last = chunks
    assert text_chunks and all("usage" in c and c["usage"] is None for c in text_chunks)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1
    assert len({c["created"] for c in chunks}) == 1
    plain = stream_chunks(chat_client, path, {**body, "max_tokens": 6})
    assert all("usage" not in c for c in plain)  # without include_usage: no usage at all


def test_a_client_gone_before_its_body_ended_is_no_server_error(caplog):
    """A client that closes the connection in the middle of its body gets no answer: it
    was counted (metrics and access log) as a 500, a server error, and is a 499 now."""
    app = create_app(loaded(Echo(tiny_config())))
    metrics = app.state.metrics
    messages = iter([{"type": "http.request", "body": b'{"prompt": ', "more_body": True},
                     {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "path": "/v1/completions", "raw_path": b"/v1/completions",
             "query_string": b"", "root_path": "", "scheme": "http",
             "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    with caplog.at_level(logging.INFO, logger="unmask.server.access"):
        asyncio.run(app(scope, receive, send))
    assert sent == []  # nobody to answer
    assert metrics.get("requests", endpoint="/v1/completions", status="499") == 1
    assert metrics.get("requests", endpoint="/v1/completions", status="500") == 0
    assert [r.getMessage().split()[3] for r in caplog.records] == ["499"]


def test_healthz_answers_head_probes(chat_client):
    r = chat_client.head("/healthz")
    assert r.status_code == 200 and r.content == b""  # was a 405: "down" to a HEAD probe
    assert chat_client.get("/healthz").json()["status"] == "ok"


def test_max_steps_bounds_requests_that_do_not_send_steps():
    """--max-steps bounded only a sent steps: without one, a request ran one step per token
    of max_tokens, past the operator's limit."""
    app = create_app(loaded(Echo(tiny_config())), limits=ServerLimits(max_steps=8),
                     chat_template="plain")
    with TestClient(app) as c:
        chat = c.post("/v1/chat/completions", json={"messages": [{"role": "user",
                                                                   "content": "Hi"}]})
        assert chat.status_code == 200, chat.text  # its default reply: cut to --max-steps
        assert chat.json()["steps"] <= 8
        over = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 16})
        assert over.status_code == 400, over.text
        err = over.json()["error"]
        # param: what the client sent (max_tokens), not the steps it did not send
        assert err["param"] == "max_tokens" and "steps must be <= 8" in err["message"]
        assert "runs 16" in err["message"]
        for body in ({"max_tokens": 16, "steps": 8}, {"max_tokens": 8},
                     {"max_tokens": 8, "segment_length": 4},
                     {"max_tokens": 16, "policy": "threshold"}):  # at most 8 steps
            r = c.post("/v1/completions", json={"prompt": "Hi", **body})
            assert r.status_code == 200, (body, r.text)
            assert r.json()["usage"]["completion_tokens"] == body["max_tokens"]
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 16,
                                                "steps": 8}).json()["nfe"] == 8


def _max_steps_client(limit: int, **defaults) -> TestClient:
    cfg = dataclasses.replace(tiny_config(256), sample_defaults=defaults)
    return TestClient(create_app(loaded(Echo(cfg)), limits=ServerLimits(max_steps=limit),
                                 chat_template="plain"))


HI = [{"role": "user", "content": "Hi"}]


def test_the_max_steps_cut_of_a_default_length_follows_the_steps():
    """A chat reply without max_tokens was cut to --max-steps whatever its steps: also with
    steps sent (64 tokens in 8 steps is within the limit) or a dynamic policy (no steps
    at all). Now it is cut only where its steps are one per token; completions' default 16
    likewise (it was a 400 telling the client to send a smaller max_tokens it never sent)."""
    with _max_steps_client(8) as c:
        def tokens(path: str, body: dict) -> tuple[int, int]:
            r = c.post(path, json={**({"messages": HI} if "chat" in path else {"prompt": "Hi"}),
                                   **body})
            assert r.status_code == 200, (path, body, r.text)
            return r.json()["usage"]["completion_tokens"], r.json()["steps"]

        chat = "/v1/chat/completions"
        assert tokens(chat, {}) == (8, 8)  # one step per token: cut to the limit
        assert tokens(chat, {"steps": 8}) == (64, 8)  # the recommendation's 64 in 8 steps
        assert tokens(chat, {"policy": "threshold"})[0] == 64  # the length is not cut
        assert tokens(chat, {"policy": "threshold"})[1] <= 8  # its bound is (test_max_steps_cap)
        assert tokens("/v1/completions", {}) == (8, 8)  # 16 not sent: within the limit
        assert tokens("/v1/completions", {"steps": 4}) == (16, 4)
        assert tokens("/v1/completions", {"policy": "threshold"})[0] == 16


def test_recommended_steps_over_max_steps_are_capped():
    """A checkpoint that recommends its steps (32 for 64 tokens) under --max-steps 16 was a
    400 asking for a smaller max_tokens the chat client never sent; now the steps are capped
    to the most within the limit that split over the run's blocks, the length kept."""
    with _max_steps_client(16, steps=32, gen_length=64) as c:
        r = c.post("/v1/chat/completions", json={"messages": HI})
        assert r.status_code == 200, r.text
        assert (r.json()["usage"]["completion_tokens"], r.json()["steps"]) == (64, 16)
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 64})
        assert r.status_code == 200 and r.json()["steps"] == 16, r.text
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 64, "steps": 32})
        assert r.status_code == 400 and r.json()["error"]["param"] == "steps"  # sent: refused
    with _max_steps_client(12, steps=32, gen_length=64, block_length=8) as c:
        r = c.post("/v1/chat/completions", json={"messages": HI})  # 8 blocks: 8 steps, not 12
        assert r.status_code == 200, r.text
        assert (r.json()["usage"]["completion_tokens"], r.json()["steps"]) == (64, 8)
    with _max_steps_client(16, policy="threshold", threshold=0.9, gen_length=64) as c:
        r = c.post("/v1/chat/completions", json={"messages": HI})  # dynamic: length not cut
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 64, r.text
        assert r.json()["steps"] <= 16  # its steps (a bound) are


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_says_down_when_the_model_worker_has_died(monkeypatch):
    """A worker thread ended by an error nothing caught answers no request again; /healthz
    said "ok" all the same, so no probe restarted the server. The requests it held, and every
    later one, are a 503 "the model worker has stopped" at once: they were queued and waited
    the whole --timeout for a misleading 504 (30 s here)."""
    app = create_app(loaded(Echo(tiny_config())), limits=ServerLimits(request_timeout_s=30))
    engine = app.state.engine

    def broken(active):
        raise RuntimeError("worker bug")

    monkeypatch.setattr(engine, "_take", broken)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's traceback
    with TestClient(app) as c:
        assert c.get("/healthz").json()["status"] == "ok"  # not started yet: fine
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 503, r.text  # the job it held: failed when it died
        assert r.json()["error"]["code"] == "worker_down"
        engine._thread.join(timeout=5)
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "down"
        assert c.head("/healthz").status_code == 503
        for path, body in [("/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
                           ("/v1/completions", {"prompt": "Hi", "max_tokens": 2,
                                                "stream": True}),
                           ("/v1/infill", {"template": "ab[MASK:3]cd"})]:
            r = c.post(path, json=body)
            assert r.status_code == 503, (path, body, r.text)
            err = r.json()["error"]
            assert err["code"] == "worker_down" and "model worker has stopped" in err["message"]
        assert engine.queue_depth == 0  # nothing left waiting for a worker


def test_max_steps_bounds_infill_forms_and_edits_that_do_not_send_steps():
    """Infill, forms and edits ran one step per masked token when ``steps`` was not sent,
    whatever --max-steps said (bounded by the context only): 24 masks, 24 forwards under
    ``--max-steps 8``. Now at most --max-steps; a sent ``steps`` over it stays a 400."""
    app = create_app(loaded(Echo(tiny_config())), limits=ServerLimits(max_steps=8))
    with TestClient(app) as c:
        r = c.post("/v1/infill", json={"template": "ab[MASK:24]cd"})
        assert r.status_code == 200, r.text
        assert r.json()["nfe"] == 8, r.json()
        r = c.post("/v1/infill", json={"template": "ab[MASK:3]cd"})
        assert r.json()["nfe"] == 3, r.json()  # fewer masks: one step each, as before
        r = c.post("/v1/forms", json={"form": {"a": "<text:20>"}})
        assert r.status_code == 200, r.text
        assert r.json()["nfe"] <= 8, r.json()
        r = c.post("/v1/edit", json={"text": "abcdefghijklmnopqrstuvwxyz", "lowest": 20})
        assert r.status_code == 200, r.text
        assert r.json()["nfe"] <= 8 + 1, r.json()  # and the forward that scores the tokens
        for path, body in (("/v1/infill", {"template": "ab[MASK:24]cd"}),
                           ("/v1/forms", {"form": {"a": "<text:20>"}})):
            r = c.post(path, json={**body, "steps": 9})
            assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text
