"""A stream whose client leaves mid-body is recorded as 499 (``CLIENT_GONE``) in the access log
and ``unmask_requests_total``, as docs/serving.md's metrics table says ("mid-body included"):
Starlette stops such a stream and returns, and it was recorded as the 200 it started with."""

from __future__ import annotations

import asyncio
import logging

import pytest

pytest.importorskip("fastapi")

from unmask.server.http import AccessLog, RecordMetrics  # noqa: E402
from unmask.server.metrics import Metrics  # noqa: E402


def streaming_app(ends: bool, fails: bool = False):
    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        if ends:  # the stream's last message (the client was still there)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # else: the client left; Starlette cancelled the body and returned
    return app


def run(middleware, fail_last: bool = False) -> None:
    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if fail_last and message["type"] == "http.response.body" and not message["more_body"]:
            raise OSError("the client went away")

    scope = {"type": "http", "method": "POST", "path": "/v1/completions",
             "client": ("127.0.0.1", 1)}
    asyncio.run(middleware(scope, receive, send))


@pytest.mark.parametrize("ends, status", [(True, "200"), (False, "499")])
def test_a_stream_left_mid_body_is_logged_and_counted_as_499(ends, status, caplog):
    logger = logging.getLogger("test_lead31")
    with caplog.at_level(logging.INFO, logger="test_lead31"):
        run(AccessLog(streaming_app(ends), logger))
    assert f'"POST /v1/completions" {status} ' in caplog.text
    metrics = Metrics()
    run(RecordMetrics(streaming_app(ends), metrics))
    assert metrics.get("requests", endpoint="/v1/completions", status=status) == 1


def test_a_last_body_message_that_could_not_be_sent_is_499(caplog):
    logger = logging.getLogger("test_lead31b")
    with caplog.at_level(logging.INFO, logger="test_lead31b"), pytest.raises(OSError):
        run(AccessLog(streaming_app(True), logger), fail_last=True)
    assert '"POST /v1/completions" 499 ' in caplog.text
