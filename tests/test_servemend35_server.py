"""The serve follow-ups of session 35: a signal with stderr closed still shuts the server
down; a stream that ends with an error event is counted and logged with that error's status,
not the 200 it started with; a path the access log cannot encode is escaped, not a traceback;
a server run does not inherit an earlier run's abandoned-check flag."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys

import pytest

pytest.importorskip("fastapi")

from server_helpers import Broken, Echo, Gated, loaded, tiny_config  # noqa: E402


class Base:
    """uvicorn.Server's part of the protocol, one request in flight."""

    should_exit = False

    def __init__(self) -> None:
        self.server_state = type("State", (), {"tasks": {object()}})()

    def handle_exit(self, sig, frame):
        self.should_exit = True


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_with_stderr_closed_still_shuts_the_server_down(monkeypatch, sig, code):
    """With stderr closed (``unmask serve ... 2>&-``: ``sys.stderr`` is None) the first
    signal's 'stopping once the 1 request in flight ends' line raised AttributeError inside
    the handler before the shutdown started: the request in flight got a 500 and the server
    exited 1. The second signal's line raised the same way before ``os._exit``."""
    from unmask.commands import serve

    def exit_now(status):
        raise SystemExit(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(sys, "stderr", None)
    server = serve._server_class(Base)()
    server.handle_exit(sig, None)  # the first: a graceful shutdown, said to nobody
    assert server.should_exit
    with pytest.raises(SystemExit) as e:
        server.handle_exit(sig, None)  # the second: out at once
    assert e.value.code == code


def test_the_first_signal_says_its_line_once_the_shutdown_started(monkeypatch, capsys):
    """The line still comes where stderr is open, after the shutdown has started."""
    from unmask.commands import serve

    class Watched(Base):
        def handle_exit(self, sig, frame):
            assert capsys.readouterr().err == ""  # nothing said before it starts
            super().handle_exit(sig, frame)

    server = serve._server_class(Watched)()
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit
    assert capsys.readouterr().err == ("unmask serve: stopping once the 1 request in flight "
                                       "ends (a second Ctrl-C drops it)\n")


def stream_statuses(app, caplog, body):
    """POST ``body`` to /v1/completions on ``app``: the stream's last event (``[DONE]``, or
    the error event's JSON), the metrics' ``requests_total`` labels and the access log's
    status."""
    from fastapi.testclient import TestClient

    caplog.set_level(logging.INFO, logger="unmask.server.access")
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/completions", json=body)
        metrics = c.get("/metrics").text
    assert r.status_code == 200  # (the stream started: its HTTP status is sent)
    data = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    counts = dict(re.findall(r'^unmask_requests_total\{endpoint="/v1/completions",(.*)\} (\S+)$',
                             metrics, re.M))
    logged = [rec.getMessage() for rec in caplog.records
              if rec.name == "unmask.server.access" and "/v1/completions" in rec.getMessage()]
    assert len(logged) == 1, logged
    last = data[-1] if data[-1] == "[DONE]" else json.loads(data[-1])
    return last, counts, logged[0].split('" ')[1].split()[0]


STREAM = {"prompt": "ab", "max_tokens": 4, "stream": True}


def test_a_stream_whose_events_fail_counts_as_a_500(caplog):
    """A bug in a stream's events ends it with a 500 ``internal_error`` event; the metrics and
    the access log said 200 (the status the response started with), so a server bug
    mid-stream hid among the streams that succeeded."""
    from unmask.server import create_app

    app = create_app(loaded(Echo(tiny_config())))

    def broken(token: int) -> str:
        raise RuntimeError("a bug in the stream's events")

    app.state.server.decode_one = broken  # the denoising events decode every position
    last, counts, status = stream_statuses(app, caplog, {**STREAM, "stream_denoising": True})
    assert last["error"]["code"] == "internal_error", last
    assert counts == {'status="500"': "1"}, counts
    assert status == "500"


def test_a_stream_whose_model_fails_counts_as_a_500(caplog):
    from unmask.server import create_app

    last, counts, status = stream_statuses(create_app(loaded(Broken(tiny_config()))), caplog,
                                           STREAM)
    assert last["error"]["code"] == "model_error", last
    assert counts == {'status="500"': "1"}, counts
    assert status == "500"


def test_a_stream_that_times_out_counts_as_a_504(caplog):
    from unmask.server import create_app
    from unmask.server.state import ServerLimits

    model = Gated(Echo(tiny_config()))  # its forward waits (10 s at most) for the gate
    app = create_app(loaded(model), limits=ServerLimits(request_timeout_s=0.5))
    try:
        last, counts, status = stream_statuses(app, caplog, STREAM)
    finally:
        model.gate.set()
    assert last["error"]["code"] == "timeout", last
    assert counts == {'status="504"': "1"}, counts
    assert status == "504"


def test_a_stream_that_succeeds_still_counts_as_a_200(caplog):
    from unmask.server import create_app

    last, counts, status = stream_statuses(create_app(loaded(Echo(tiny_config()))), caplog,
                                           STREAM)
    assert last == "[DONE]", last
    assert counts == {'status="200"': "1"}, counts
    assert status == "200"


def test_the_access_log_escapes_a_lone_surrogate_in_a_path(caplog):
    """A path with a lone surrogate (an ASGI server that decodes with ``surrogateescape``)
    raised UnicodeEncodeError in the access log's ``finally``: a traceback for the request."""
    import asyncio

    from unmask.server.http import AccessLog

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    caplog.set_level(logging.INFO, logger="unmask.server.access")
    scope = {"type": "http", "method": "GET", "path": "/x\ud800y", "client": ("1.2.3.4", 5)}
    asyncio.run(AccessLog(app)(scope, receive, send))
    lines = [r.getMessage() for r in caplog.records if r.name == "unmask.server.access"]
    assert len(lines) == 1 and lines[0].startswith('1.2.3.4 "GET /x%5Cud800y" 404 '), lines


