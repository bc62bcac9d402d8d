"""``unmask serve`` as its operator sees it: stopped by a signal while a slow check (an
``/v1/edit`` regex search, a structured answer's compile) of a client that went away still
runs, the process exits after its one line, not when the check ends (it waited for the
check's thread with the signals held, so a second Ctrl-C did nothing for the tens of seconds
a compile can take); the access log writes no control character a client put in a path."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import torch  # noqa: E402
from server_helpers import tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

LAUNCH = """\
import importlib, sys, threading
edit = importlib.import_module("unmask.infill.edit")

def edit_spans(*args, **kwargs):  # a regex search that never ends
    print("CHECK STARTED", file=sys.stderr, flush=True)
    threading.Event().wait()

edit.edit_spans = edit_spans
from unmask.cli import main
main()
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("runs") / "mine"
    return str(save_checkpoint(run, model=Transformer(tiny_config()).eval(),
                               tokenizer=byte_tokenizer()))


def wait_for_line(proc: subprocess.Popen, what: str) -> list[str]:
    """The server's stderr lines up to the first that holds ``what``."""
    lines = []
    for line in proc.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if what in line:
            return lines
    raise AssertionError(f"the server ended before {what!r}: {''.join(lines)}")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_a_signal_does_not_wait_for_a_slow_check_whose_client_left(
        ckpt, free_port, tmp_path, sig, code, word):
    launch = tmp_path / "launch.py"
    launch.write_text(LAUNCH)
    proc = subprocess.Popen(
        [sys.executable, str(launch), "serve", "--model", ckpt, "--port", str(free_port),
         "--device", "cpu", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        wait_for_line(proc, "playground at /")  # listening
        body = b'{"text": "hello world", "regex": "o"}'
        with socket.create_connection(("127.0.0.1", free_port)) as client:
            client.sendall(b"POST /v1/edit HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
            wait_for_line(proc, "CHECK STARTED")
        wait_for_line(proc, '"POST /v1/edit" 499')  # the client's request is over
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)  # (it never ended: the check never does)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code, err
    # (the request's task may still be ending: "stopping once the 1 request ..." before it)
    assert err.splitlines()[-1] == f"unmask serve: {word}" and "Traceback" not in err, err


def test_the_access_log_writes_no_control_character_of_a_path(caplog):
    """A path is decoded (``%1b`` is ESC): written as it was, one request to a 404 path put
    ESC sequences (a window title, colours), a C1 CSI, a bidi override or a newline (a forged
    log line) on the operator's terminal. It is percent-encoded again, as clients send it."""
    import logging

    from fastapi.testclient import TestClient
    from server_helpers import Echo, loaded

    from unmask.server import create_app

    caplog.set_level(logging.INFO, logger="unmask.server.access")
    with TestClient(create_app(loaded(Echo(tiny_config())))) as c:
        assert c.get("/%1b]0;pwned%07%1b[31mx%c2%9b%e2%80%ae%0a1.2.3.4 \"GET /\" 200").status_code \
            == 404
        assert c.get("/v1/models").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "unmask.server.access"]
    assert len(lines) == 2, lines
    assert lines[0].startswith('testclient "GET /%1B%5D0;pwned%07%1B%5B31mx%C2%9B%E2%80%AE'
                               '%0A1.2.3.4%20%22GET%20/%22%20200" 404 '), lines[0]
    assert lines[1].startswith('testclient "GET /v1/models" 200 '), lines[1]


def test_every_served_path_has_its_own_metrics_label():
    """The playground's ``/playground/options`` (asked at every change of a field),
    ``/openapi.json`` and ``/v1/models/{model}`` counted as ``other``, with the 404s of paths
    clients invent; an invented path still counts as ``other`` (no label per path)."""
    from fastapi.testclient import TestClient
    from server_helpers import Echo, loaded

    from unmask.server import create_app

    with TestClient(create_app(loaded(Echo(tiny_config())), access_log=False)) as c:
        for path in ("/playground/options", "/openapi.json", "/v1/models/tiny",
                     "/v1/models/other", "/nope", "/nope2"):
            c.get(path)
        metrics = c.get("/metrics").text
    counts = dict(re.findall(r"^unmask_requests_total\{(.*)\} (\S+)$", metrics, re.M))
    assert counts == {'endpoint="/playground/options",status="200"': "1",
                      'endpoint="/openapi.json",status="200"': "1",
                      'endpoint="/v1/models/{model}",status="200"': "1",
                      'endpoint="/v1/models/{model}",status="404"': "1",
                      'endpoint="other",status="404"': "2"}, counts


def test_a_stream_whose_events_fail_ends_with_an_error_event(caplog):
    """A stream whose events raised (a server bug) was cut mid-body with no event and no end
    (clients report a broken connection); docs/serving.md promises that any failure after
    the stream starts is one ``{"error": ...}`` event. It is, a 500 ``internal_error``, logged
    with its traceback."""
    import json
    import logging

    from fastapi.testclient import TestClient
    from server_helpers import Echo, loaded

    from unmask.server import create_app

    caplog.set_level(logging.ERROR, logger="unmask.server")
    app = create_app(loaded(Echo(tiny_config())), access_log=False)

    def broken(token: int) -> str:
        raise RuntimeError("a bug in the stream's events")

    with TestClient(app, raise_server_exceptions=False) as c:
        app.state.server.decode_one = broken  # the denoising events decode every position
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4, "stream": True,
                                            "stream_denoising": True})
        assert c.get("/healthz").status_code == 200  # and the server serves on
    data = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert json.loads(data[-1]) == {"error": {"message": "internal server error",
                                              "type": "server_error", "param": None,
                                              "code": "internal_error"}}, r.text
    assert any("a bug in the stream's events" in (rec.exc_text or "")
               for rec in caplog.records), caplog.records


def test_a_response_cut_by_the_app_counts_as_a_500_not_a_client_gone():
    """A response the app started and then cut by its own error was counted, and logged, as
    499 (the client went away): a server bug hid among the clients gone. A send that failed
    (the client gone) is still a 499."""
    import asyncio

    from unmask.server.http import RecordMetrics
    from unmask.server.metrics import Metrics

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise RuntimeError("a bug mid-body")

    async def gone(message):
        if message["type"] == "http.response.body":
            raise OSError("the client went away")

    async def fine(message):
        pass

    async def receive():
        return {"type": "http.disconnect"}

    metrics = Metrics()
    scope = {"type": "http", "path": "/v1/completions"}
    for send in (fine, gone):
        with pytest.raises((RuntimeError, OSError)):
            asyncio.run(RecordMetrics(app, metrics)(scope, receive, send))
    assert metrics.get("requests", endpoint="/v1/completions", status="500") == 1
    assert metrics.get("requests", endpoint="/v1/completions", status="499") == 1
