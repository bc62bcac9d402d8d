"""HTTP plumbing of the server: OpenAI-shaped errors, ASGI middlewares, SSE, chat prompts.

Inside: ``APIError`` (an error answered as ``{"error": {"message", "type", "param",
"code"}}``), ``BodyLimit`` (413 for oversize bodies, before the app parses anything),
``RecordMetrics`` (requests and latency per endpoint), ``AccessLog`` (one log line per
request), ``sse`` (one server-sent event) and ``render_chat`` (messages → prompt).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse as _JSONResponse

from unmask.server.metrics import Metrics
from unmask.server.schemas import ChatMessage
from unmask.terminal import json_escaped


class JSONResponse(_JSONResponse):
    """FastAPI's JSON response with DEL, the C1 controls and the bidi overrides in its strings
    as JSON escapes (``terminal.json_escaped``, as ``sse`` writes them): written raw, a body a
    client printed (``curl``) could drive or reorder its terminal. Every JSON answer of the
    server is one (``app.default_response_class`` too)."""

    def render(self, content: Any) -> bytes:
        return json_escaped(super().render(content).decode("utf-8")).encode("utf-8")

ENDPOINTS = (
    "/", "/healthz", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
    "/v1/infill", "/v1/edit", "/v1/forms", "/v1/tokenize", "/playground/options",
    "/openapi.json",
)
"""Paths with their own metrics label (``endpoint_label``; anything else counts as ``other``)."""

MODEL_PATH = "/v1/models/"
"""The prefix of ``GET /v1/models/{model}``, counted as ``/v1/models/{model}`` (one label for
every id a client asks about)."""


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a request for ``path``: one of ``ENDPOINTS``, the model route's
    template, else ``other`` (a 404: any path a client invents, which must not grow the label
    set). The playground's ``/playground/options``, asked at every change of a field, and
    ``/v1/models/{model}`` counted as ``other``, among the 404s."""
    if path in ENDPOINTS:
        return path
    return MODEL_PATH + "{model}" if path.startswith(MODEL_PATH) else "other"


MAX_MESSAGE = 2000
"""Longest error message sent, in characters: a refusal that quotes the request (a regex,
a choice, a template) is cut there, so a 400 for a 400,000-character choice is not as long."""


class APIError(Exception):
    """An error answered in OpenAI's shape (a message over ``MAX_MESSAGE`` characters cut)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        if len(message) > MAX_MESSAGE:
            message = (f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more "
                       "characters)")
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code = param, code

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        body = self.body()
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "tuple", "none"}

_STATUS_TYPES = {401: "authentication_error", 404: "not_found_error",
                 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error", 504: "timeout_error"}


# -- ASGI middlewares -------------------------------------------------------------------------


class BodyLimit:
    """Reads the whole body (up to ``limit`` bytes) before the app sees it; 413 beyond."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = APIError(413, f"request body is larger than {self.limit} bytes",
                           code="body_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_big.response()(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client gone before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await too_big.response()(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then: disconnect notices

        await self.app(scope, replay, send)


CLIENT_GONE = 499
"""The status recorded for a request that got no response because its client went away
(nginx's "client closed request"), as the routes answer a client gone mid-request."""


ERROR_STATUS = "unmask.error_status"
"""The scope key under which a stream that ends with an error event (``streaming.stream_job``:
a bug of its events, a model error, the timeout) notes that error's status: ``_Status``
records it, not the 200 the response started with (a server error mid-stream hid among the
streams that succeeded, in the metrics and the access log)."""


class _Status:
    """The ``send`` of an app that notes the status of the response it starts: 500 while
    none has started (an error the outer handler answers), ``CLIENT_GONE`` when the app
    returned without one (``BodyLimit``: the client left before sending its whole body;
    counted as a 500, it read as a server error) or without its last body message (a
    stream whose client left mid-body: Starlette stops it and returns; it read as a 200),
    and a stream's ``ERROR_STATUS`` when it ended with an error event or was cut unfinished
    with one noted (its client stopped reading past its deadline)."""

    def __init__(self, send: Callable) -> None:
        self.send, self.status, self.started, self.ended = send, 500, False, False
        self.send_failed = False

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
        try:
            await self.send(message)
        except BaseException:
            self.send_failed = True  # the client gone: OSError, ...
            raise
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True  # (once sent: a send that failed, the client gone, did not end it)

    async def run(self, app: Any, scope: dict, receive: Callable) -> None:
        """``app`` on ``scope``, its response sent through this. A response cut by the app's
        own error after it started is a 500, not the client's leaving (it read as a 499, and a
        server bug hid among the clients gone); a stream whose own events raise does not get
        here cut: it ends with an error event, counted by its ``ERROR_STATUS`` (500)."""
        try:
            await app(scope, receive, self)
        except BaseException as e:
            if self.started and not self.ended:  # a send to a client gone, or cancelled
                gone = self.send_failed or isinstance(e, asyncio.CancelledError)
                self.status = CLIENT_GONE if gone else 500
            raise
        if not self.ended:  # the client gone, or a stream the server cut (a 504 noted:
            self.status = scope.get(ERROR_STATUS, CLIENT_GONE)  # ``streaming.EventStream``)
        else:
            self.status = scope.get(ERROR_STATUS, self.status)


class RecordMetrics:
    """Counts responses by endpoint and status and times them to their last byte."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = endpoint_label(scope["path"])
        t0, response = time.perf_counter(), _Status(send)
        try:
            await response.run(self.app, scope, receive)
        finally:
            self.metrics.inc("requests", endpoint=endpoint, status=str(response.status))
            self.metrics.observe_latency(time.perf_counter() - t0, endpoint=endpoint)


ACCESS_FIELDS = ("rows", "prompt_tokens", "completion_tokens", "nfe")
"""What a route may add to its access-log line (``plumbing.note``), in this order."""

access_log = logging.getLogger("unmask.server.access")
"""The access log: one INFO record per request (``unmask serve`` prints them to stderr
unless ``--quiet``)."""


class AccessLog:
    """Logs one line per request when its response has ended: client, method, path,
    status, duration, and the rows and tokens the route noted (``scope["unmask.access"]``),
    e.g. ``127.0.0.1 "POST /v1/completions" 200 0.412s rows=2 prompt_tokens=4
    completion_tokens=16``."""

    def __init__(self, app: Any, logger: logging.Logger = access_log) -> None:
        self.app, self.logger = app, logger

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, response = time.perf_counter(), _Status(send)
        fields: dict[str, Any] = {}
        scope["unmask.access"] = fields
        try:
            await response.run(self.app, scope, receive)
        finally:
            client = (scope.get("client") or ("-",))[0]
            extra = "".join(f" {k}={fields[k]}" for k in ACCESS_FIELDS if k in fields)
            self.logger.info('%s "%s %s" %d %.3fs%s', client, scope["method"],
                             logged_path(scope["path"]), response.status,
                             time.perf_counter() - t0, extra)


def logged_path(path: str) -> str:
    """A request's path (decoded: ``%1b`` is ESC) as the access log writes it: what is not
    ASCII text in a URL percent-encoded again (``/%1B%5D0;title%07``). Written as decoded, any
    client could put ESC sequences (a window title, a cleared screen), bidi overrides or a
    newline (a forged log line) on the operator's terminal with one request to a 404 path.
    A lone surrogate (no UTF-8 for it: an ASGI server that decodes paths with
    ``surrogateescape``) is written as its escape, ``%5Cud800``; it raised in the log."""
    return urllib.parse.quote(path, safe="/!$&'()*+,;=:@", errors="backslashreplace")


# -- chat rendering ---------------------------------------------------------------------------

def render_chat(messages: list[ChatMessage], template: str | None = None, *,
                special: dict[str, str] | None = None) -> str:
    """The prompt for ``messages``, rendered by ``unmask.chat`` with ``add_generation_prompt``.

    With ``template`` (a Hugging Face style Jinja chat template, from the checkpoint
    config's ``chat_template``): the template sees ``messages`` and the special tokens'
    text (``special``: ``bos_token``, ``eos_token``); a ``developer`` message is a
    ``system`` one. Without: ``PLAIN_CHAT_TEMPLATE``, one line per message, ``"System: ..."``,
    ``"User: ..."``, ``"Assistant: ..."``, then ``"Assistant:"``. A template that fails
    raises a one-line ``UserError``.
    """
    from unmask.chat import PLAIN_CHAT_TEMPLATE, ChatTemplate

    special = special or {}
    chat = ChatTemplate(template or PLAIN_CHAT_TEMPLATE, bos_token=special.get("bos_token", ""),
                        eos_token=special.get("eos_token", ""))
    return chat.render(chat_messages(messages), add_generation_prompt=True)


def chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Request messages as ``unmask.chat`` takes them: read by its ``check_messages``, as
    ``api.chat`` and SFT data read them (a ``developer`` message is a ``system`` one; text
    parts joined; a ``name`` kept, for a template that renders it), so the two cannot drift."""
    from unmask.chat import check_messages

    return check_messages([m.model_dump(exclude_none=True) for m in messages])


def sse(data: dict[str, Any], *, event: str | None = None) -> str:
    """One server-sent event carrying ``data`` as JSON (``json_escaped``: no raw DEL, C1
    control or bidi override, as ``JSONResponse``)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json_escaped(json.dumps(data, ensure_ascii=False))}\n\n"
