"""A stream whose text is not final yet is not silent (a ``: keep-alive`` comment after
``ServerLimits.keepalive_s``, so a proxy's read timeout does not cut it), and a client that
reads slower than the sampler steps gets the latest step, not an unbounded backlog of
whole canvases.

The app is called as ASGI directly: the test's ``send`` sees every event as the server
sends it, and can hold the server back (a slow reader) or hang up (a disconnect)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable

import pytest

pytest.importorskip("fastapi")

import torch  # noqa: E402
from server_helpers import Echo, echo_text, loaded, tiny_config  # noqa: E402
from torch import nn  # noqa: E402

from unmask.errors import UserError  # noqa: E402
from unmask.server import create_app, streaming  # noqa: E402
from unmask.server.state import ServerLimits  # noqa: E402
from unmask.server.streaming import KEEPALIVE  # noqa: E402


class Held(nn.Module):
    """Echo whose forwards wait until ``gate`` is set: by the test, or after 5 s by itself
    (so that code without the behaviour under test fails instead of hanging)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Echo(tiny_config())
        self.config = self.inner.config
        self.gate = threading.Event()
        self.calls = 0
        self.timed_out = False

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        self.calls += 1
        if not self.gate.wait(timeout=5):
            self.timed_out = True
            self.gate.set()
        return self.inner(tokens, attention_mask=attention_mask)


Send = Callable[[bytes, asyncio.Event], Awaitable[None]]


async def post(app, path: str, body: dict, on_chunk: Send | None = None) -> str:
    """POST ``body`` to ``app`` over ASGI; the response body. ``on_chunk(chunk, gone)`` sees
    every body message before it counts as sent; setting ``gone`` hangs up."""
    gone = asyncio.Event()
    payload = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("test", 80), "headers": [(b"host", b"test"),
                                                 (b"content-type", b"application/json"),
                                                 (b"content-length", str(len(payload)).encode())]}
    requested = False
    chunks: list[bytes] = []

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message.get("body"):
            if on_chunk is not None:
                await on_chunk(message["body"], gone)
            chunks.append(message["body"])

    await app(scope, receive, send)
    return b"".join(chunks).decode()


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def _same_but_ids(text: str) -> str:
    return re.sub(r'"(id|created)": ?("[^"]*"|\d+)', "", text)


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "x", "max_tokens": 8, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "max_tokens": 8, "stream": True}),
])
def test_a_quiet_stream_sends_keepalive_comments_and_otherwise_the_same_bytes(path, body):
    model = Held()
    app = create_app(loaded(model), limits=ServerLimits(keepalive_s=0.01),
                     chat_template="plain")

    async def release_on_keepalive(chunk: bytes, gone: asyncio.Event) -> None:
        if chunk == KEEPALIVE.encode():
            model.gate.set()  # the job was held: the comment came while it ran

    text = asyncio.run(post(app, path, body, release_on_keepalive))
    assert not model.timed_out, "no keep-alive came while the job was held"
    assert KEEPALIVE in text
    quiet = create_app(loaded(Echo(tiny_config())), limits=ServerLimits(keepalive_s=0),
                       chat_template="plain")
    before = asyncio.run(post(quiet, path, body))
    assert ": keep-alive" not in before
    assert _same_but_ids(text.replace(KEEPALIVE, "")) == _same_but_ids(before)
    assert before.endswith("data: [DONE]\n\n")
    events = _events(text)
    if path == "/v1/completions":  # the OpenAI-style parse sees the same text
        assert "".join(e["choices"][0]["text"] for e in events) == echo_text(1, 8)


def test_a_client_gone_during_keepalives_cancels_the_job():
    model = Held()
    app = create_app(loaded(model), limits=ServerLimits(keepalive_s=0.01))
    engine, metrics = app.state.engine, app.state.metrics

    async def hang_up_on_keepalive(chunk: bytes, gone: asyncio.Event) -> None:
        if chunk == KEEPALIVE.encode():
            gone.set()

    async def run() -> None:
        await post(app, "/v1/completions", {"prompt": "x", "max_tokens": 32, "stream": True},
                   hang_up_on_keepalive)
        assert metrics.get("cancelled") == 1  # dropped as the response ended
        model.gate.set()
        for _ in range(1000):
            if not engine.in_flight:
                break
            await asyncio.sleep(0.005)

    asyncio.run(run())
    assert not model.timed_out
    assert not engine.in_flight and model.calls < 32, model.calls


def test_a_slow_reader_gets_the_latest_step_not_a_backlog(monkeypatch):
    monkeypatch.setattr(streaming, "MAX_UNREAD_STEPS", 4)
    app = create_app(loaded(Echo(tiny_config())))
    engine = app.state.engine
    held = []

    async def slow_reader(chunk: bytes, gone: asyncio.Event) -> None:
        if not held and b"denoising.step" in chunk:  # stop reading until the job is done
            held.append(chunk)
            for _ in range(2000):
                if not engine.in_flight:
                    break
                await asyncio.sleep(0.005)
            assert not engine.in_flight

    body = {"prompt": "x", "max_tokens": 32, "stream": True, "stream_denoising": True}
    text = asyncio.run(post(app, "/v1/completions", body, slow_reader))
    events = _events(text)
    steps = [e for e in events if e["object"] == "denoising.step"]
    # the first, then at most 4 that waited, the newest replaced by the latest
    assert len(steps) <= 5, [e["step"] for e in steps]
    assert steps[-1]["step"] == 32 and steps[-1]["choices"][0]["masked"] == 0
    assert steps[-1]["choices"][0]["tokens"] == list(echo_text(1, 32))
    texts = [e["choices"][0]["text"] for e in events if e["object"] == "text_completion"]
    assert "".join(texts) == echo_text(1, 32)  # nor the result
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert text.endswith("data: [DONE]\n\n")


def test_keepalive_limit_is_checked():
    assert ServerLimits(keepalive_s=0).keepalive_s == 0
    with pytest.raises(UserError, match="keepalive_s"):
        ServerLimits(keepalive_s=-1)
