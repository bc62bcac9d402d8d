"""The official ``openai`` client against a live uvicorn server on 127.0.0.1 (random free port)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

import httpx  # noqa: E402
from server_helpers import Echo, Gated, echo_text, loaded, tiny_config  # noqa: E402

from unmask.server import create_app  # noqa: E402

KEY = "test-key"


@contextlib.contextmanager
def live_server(app):
    """``app`` on uvicorn in a background thread, bound to a free loopback port; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 10, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def base_url():
    app = create_app(loaded(Echo(tiny_config())), api_key=KEY, chat_template="plain")
    with live_server(app) as port:
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def client(base_url):
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=10) as c:
        yield c


def test_models(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_retrieve_model(client):
    """``client.models.retrieve`` (``GET /v1/models/{id}``) was a 404 "Not Found" for the
    served model too; now the model, and for another id OpenAI's ``model_not_found``."""
    m = client.models.retrieve("tiny")
    assert m.id == "tiny" and m.object == "model"
    assert m.model_dump() == client.models.list().data[0].model_dump()
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("org/other")
    assert e.value.body["code"] == "model_not_found" and "'org/other'" in e.value.body["message"]
    with openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.retrieve("tiny")


def test_completion(client):
    r = client.completions.create(model="tiny", prompt="Hey", max_tokens=7, extra_body={"steps": 7})
    assert r.choices[0].text == echo_text(3, 7)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7


def test_streamed_completion(client):
    stream = client.completions.create(
        model="tiny", prompt="Hey", max_tokens=9, stream=True, stop=["k"]
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == "defghij"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_plain_and_streamed(client):
    msgs = [{"role": "user", "content": "Hi"}]
    prompt_len = len("User: Hi\nAssistant:")
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == echo_text(prompt_len, 5)
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == echo_text(prompt_len, 5)


def test_errors(client, base_url):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(
            model="tiny", prompt="x", max_tokens=4, extra_body={"no_such_option": 1}
        )
    assert e.value.body["code"] == "unknown_field"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=10_000)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=4)
    with openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0, timeout=10) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


@pytest.mark.parametrize("chat", [False, True])
def test_stream_options_need_stream(client, chat):
    """As OpenAI: stream_options without stream is a 400 naming it (it was ignored)."""
    create = client.chat.completions.create if chat else client.completions.create
    prompt = {"messages": [{"role": "user", "content": "x"}]} if chat else {"prompt": "x"}
    with pytest.raises(openai.BadRequestError) as e:
        create(model="tiny", max_tokens=4, stream_options={"include_usage": True}, **prompt)
    assert e.value.body["param"] == "stream_options", e.value.body
    assert "only allowed when 'stream' is enabled" in e.value.body["message"]
    # null is no option given; with stream it is the usage chunk
    ok = create(model="tiny", max_tokens=4, extra_body={"stream_options": None}, **prompt)
    assert ok.usage.completion_tokens == 4
    chunks = list(create(model="tiny", max_tokens=4, stream=True,
                         stream_options={"include_usage": True}, **prompt))
    assert chunks[-1].usage.completion_tokens == 4


def test_stream_denoising_through_the_client(client):
    stream = client.completions.create(
        model="tiny", prompt="Hey", max_tokens=4, stream=True, extra_body={"stream_denoising": True}
    )
    chunks = list(stream)
    steps = [c for c in chunks if c.object == "denoising.step"]
    assert len(steps) == 4
    text = "".join(c.choices[0].text for c in chunks if c.object == "text_completion")
    assert text == echo_text(3, 4)


def test_client_disconnect_stops_the_work():
    gated = Gated(Echo(tiny_config()))
    app = create_app(loaded(gated))
    engine, metrics = app.state.engine, app.state.metrics
    with live_server(app) as port:
        body = {"prompt": "x", "max_tokens": 32, "stream": True, "stream_denoising": True}
        with httpx.stream(
            "POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=10
        ) as r:
            assert r.status_code == 200
            t0 = time.monotonic()
            while engine.in_flight == 0:
                assert time.monotonic() - t0 < 5
                time.sleep(0.005)
        # the client is gone: the response notices (its disconnect listener) and drops the
        # job. Open the gate only then: opened at once, a loaded machine could run all 32
        # steps before the event loop read the hang-up (the test raced; the server did not)
        t0 = time.monotonic()
        while not metrics.get("cancelled"):
            assert time.monotonic() - t0 < 5, "the disconnect was not noticed"
            time.sleep(0.005)
        gated.gate.set()
        while engine.in_flight:
            assert time.monotonic() - t0 < 5, "the work did not stop"
            time.sleep(0.005)
    assert gated.calls < 32, gated.calls


def test_client_timeout_cancels_a_plain_request(caplog: pytest.LogCaptureFixture):
    gated = Gated(Echo(tiny_config()))
    app = create_app(loaded(gated))
    engine, metrics = app.state.engine, app.state.metrics
    with live_server(app) as port:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"http://127.0.0.1:{port}/v1/completions",
                json={"prompt": "x", "max_tokens": 32},
                timeout=0.3,
            )
        t0 = time.monotonic()
        while not metrics.get("cancelled"):  # the handler polls for the disconnect
            assert time.monotonic() - t0 < 5, "the request was not cancelled"
            time.sleep(0.005)
        gated.gate.set()
        while engine.in_flight:
            assert time.monotonic() - t0 < 5
            time.sleep(0.005)
    assert gated.calls < 32, gated.calls
    # a quiet cancellation: answered (and counted) as 499, never a 500 with a traceback
    assert metrics.get("requests", endpoint="/v1/completions", status="499") == 1
    assert not metrics.get("requests", endpoint="/v1/completions", status="500")
    assert not [r for r in caplog.records if r.exc_info or "never retrieved" in r.getMessage()]
