"""A stream whose client stops reading (its ``send`` held by TCP back-pressure), its
connection open, still ends at ``--timeout``: its job used to run on to its end, holding the
worker and the batch's rows (only the stream's next read of an event looked at the
deadline), and the response waited in ``send`` for ever, so a SIGTERM's graceful shutdown
never ended."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("fastapi")

from server_helpers import Echo, Stepped, loaded, tiny_config, wait_until  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402

STEPS = 40


def scope_for(body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


TIMEOUT_S = 2.0
"""The streams' ``--timeout``: room for a first forward on a loaded machine (the tests wait
for the deadline anyway); a forward that still takes longer only turns the first case into
the second, with the same counts."""


@pytest.mark.parametrize("stalled_on", ["step", "error event"])
def test_a_stream_whose_client_stops_reading_is_cancelled_at_its_deadline(stalled_on):
    """``step``: the first step's event is sent and its send never returns; the stream is cut
    ``SEND_GRACE_S`` past the deadline. ``error event``: no step comes before the deadline
    (a slow forward), so the stream times out on its own and its 504 event is what the
    client does not read; the cut then counted that one timeout a second time."""
    model = Stepped(Echo(tiny_config()))
    app = create_app(loaded(model), access_log=False,
                     limits=ServerLimits(request_timeout_s=TIMEOUT_S, keepalive_s=0))
    engine = app.state.engine
    body = json.dumps({"prompt": "ab", "max_tokens": STEPS, "steps": STEPS, "stream": True,
                       "stream_denoising": True}).encode()
    scope = scope_for(body)

    async def main() -> None:
        sent_body = asyncio.Event()
        stuck = asyncio.Event()  # never set: the client reads nothing more

        async def receive() -> dict:
            if not scope.get("_body_sent"):
                scope["_body_sent"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await stuck.wait()  # the client is there, only not reading
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                sent_body.set()
                await stuck.wait()  # the socket's buffers are full

        task = asyncio.ensure_future(app(scope, receive, send))
        if stalled_on == "step":
            model.allow(1)  # the first step: its event is sent, and its send never returns
        await asyncio.wait_for(sent_body.wait(), TIMEOUT_S + 10)
        loop = asyncio.get_running_loop()
        while loop.time() <= scope["unmask.deadline"]:  # past the request's --timeout
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        model.allow(STEPS)  # the worker may step on now: a job past its deadline does not
        await asyncio.to_thread(wait_until, lambda: engine.in_flight == 0, 10)
        # and the response ends, cut, SEND_GRACE_S past the deadline (it waited for ever)
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(main())
    finally:
        engine.close()
    metrics = app.state.metrics
    assert model.entered < STEPS, f"the job ran {model.entered} of {STEPS} forwards"
    assert metrics.get("nfe") < STEPS
    assert metrics.get("requests", endpoint="/v1/completions", status="504") == 1
    assert metrics.get("timeouts") == 1
    assert metrics.get("cancelled") == 1


def test_a_client_that_reads_nothing_does_not_hold_the_shutdown_for_ever():
    """The graceful shutdown (a SIGTERM: ``should_exit``) of the server ``unmask serve`` runs
    ends although a stream's client reads nothing more: uvicorn waited for its connection to
    close, which it never did while its unsent bytes could not be flushed."""
    import socket
    import threading

    import uvicorn

    from unmask.commands.serve import _server_class, server_config

    limits = ServerLimits(request_timeout_s=0.5, keepalive_s=0, max_batch=32)
    app = create_app(loaded(Echo(tiny_config(1024))), access_log=False, limits=limits)
    sock = socket.socket()  # a slow network: small buffers, as listen_socket binds it
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # (the connection's, inherited)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = _server_class(uvicorn.Server)(server_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    client = socket.socket()
    try:
        wait_until(lambda: server.started, 30)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        body = json.dumps({"prompt": ["a", "b", "c", "d"], "n": 8, "max_tokens": 1000,
                           "steps": 1000, "stream": True, "stream_denoising": True}).encode()
        client.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        client.recv(1)  # the stream has started; nothing more is read
        wait_until(lambda: app.state.metrics.get("timeouts") == 1, 30)  # its 504, the stream cut
        server.should_exit = True  # what SIGTERM does
        thread.join(timeout=limits.request_timeout_s + 10)
        assert not thread.is_alive(), "the shutdown waits for the client"
    finally:
        server.force_exit = True
        thread.join(timeout=10)
        client.close()


@pytest.mark.parametrize("queued", [False, True])
def test_a_stream_past_its_deadline_ends_with_a_504_event(queued):
    """Past its deadline a stream reads as a timeout (504 event, counted in ``timeouts``),
    not as the 499 of a client gone, where the timer that drops its job at the deadline
    fires a little before the stream's own wait ends (the job's end, cancelled, came first)."""
    import httpx
    from server_helpers import Gated

    gated = Gated(Echo(tiny_config()))
    app = create_app(loaded(gated), access_log=False,
                     limits=ServerLimits(request_timeout_s=0.3, keepalive_s=0, max_batch=1))
    engine = app.state.engine
    body = {"prompt": "x", "max_tokens": 2, "stream": True}

    async def main() -> list[str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as c:
            if queued:  # behind a request that holds the worker
                first = asyncio.ensure_future(c.post("/v1/completions", json=body))
                await asyncio.to_thread(wait_until, lambda: engine.in_flight == 1)
            texts = [(await c.post("/v1/completions", json=body)).text]
            if queued:
                texts.append((await first).text)
            return texts

    try:
        texts = asyncio.run(main())
    finally:
        gated.gate.set()
        engine.close()
    for text in texts:
        assert '"code": "timeout"' in text and '"cancelled"' not in text, text
    metrics = app.state.metrics
    assert metrics.get("timeouts") == len(texts)
    assert metrics.get("requests", endpoint="/v1/completions", status="504") == len(texts)
