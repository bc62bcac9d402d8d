"""The one server-sent-event streamer, used by every streamed endpoint.

A streamed job sends what its ``Events`` make of each sampler step (OpenAI chunks for
completions and chat, ``denoising.step`` events for infill and forms), then what they
make of the job's result, then ``data: [DONE]``. The streamer owns the rest: submitting
(429 before anything is sent), the request timeout (an ``{"error": ...}`` event), a job
that fails (the same), cancelling the work when the client goes away, a ``: keep-alive``
comment after ``ServerLimits.keepalive_s`` of silence, and a bounded backlog of steps for a
client that reads slower than the sampler steps (``MAX_UNREAD_STEPS``, ``open_stream``).

Inside: ``Events`` (what an endpoint streams), ``stream_job``, ``denoising_event``,
``DenoisingEvents`` (the whole-canvas steps of infill and forms, then the body), and
``refuse_if_gone`` (a plain answer's check before it submits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, cast

from fastapi import Request
from fastapi.responses import StreamingResponse

from unmask.server.batching import Cancelled, Job
from unmask.server.http import ERROR_STATUS, APIError, sse
from unmask.server.plumbing import crashed, deadline, drop, job_failure, submit, timed_out
from unmask.server.state import ServerState

DONE = "data: [DONE]\n\n"
KEEPALIVE = ": keep-alive\n\n"
"""An SSE comment (clients ignore it): what a stream sends after ``keepalive_s`` of silence,
so that a proxy's or client's read timeout does not cut it while its text is not final."""

MAX_UNREAD_STEPS = 16
"""Most sampler steps a stream holds for a client that reads slower than they come
(``open_stream``): each holds the job's whole canvas."""

NextEvent = Callable[..., Awaitable[tuple[str, Any]]]


class Events(Protocol):
    """What one streamed endpoint sends."""

    def opening(self) -> Iterable[str]:
        """Events before the first step (chat's role chunks)."""
        ...

    def step(self, step: int, rows: list[list[int]]) -> Iterable[str]:
        """Events for one sampler step (``rows``: the job's canvas rows, ``mask_id`` where
        still masked)."""
        ...

    def result(self, result: Any) -> Iterable[str]:
        """Events for the job's result (``[DONE]`` follows)."""
        ...


async def refuse_if_gone(state: ServerState, request: Request) -> None:
    """The 499 of a cancelled job (``plumbing.job_failure``) when the client has gone away:
    what a request answered in one body checks between its checks (run in a thread) and
    submitting its job, so that one whose client left while they ran is not run at all (it
    ran until ``plumbing.wait`` first polled, a few forward passes). A stream needs none: it
    submits as its response starts, and the response watches for the disconnect."""
    if await request.is_disconnected():
        state.metrics.inc("cancelled")  # abandoned by its client, as ``plumbing.drop`` counts
        raise job_failure(Cancelled())


def sse_error(err: APIError) -> str:
    """An error event, in the error body's shape (``param`` left out: the stream has begun)."""
    return sse({"error": {"message": err.message, "type": err.type, "param": None,
                          "code": err.code}})


def ending_error(request: Request, err: APIError) -> str:
    """``sse_error(err)``, the event that ends the stream of ``request``, with its status
    noted for the metrics and the access log (``http.ERROR_STATUS``): counted as the 200 the
    response started with, a server error mid-stream hid among the streams that succeeded."""
    request.scope[ERROR_STATUS] = err.status
    return sse_error(err)


def open_stream(state: ServerState, job: Job, owner: Request) -> NextEvent:
    """Submit ``job`` with a sink that queues its steps (429 before anything is sent);
    returns ``next_event(request=None, ping_at=None)``: the next ``("step", (step, rows))``,
    then ``("done", None)`` once the job's future resolves, or ``("timeout", None)`` past the
    ``deadline`` of ``owner``, the request (its slow check's wait included). With
    ``request`` it also answers ``("gone", None)`` when the client
    has gone away (poll it only before a response starts: a ``StreamingResponse`` watches
    for the disconnect itself and cancels its body); with ``ping_at`` (a ``loop.time()``),
    ``("ping", None)`` when nothing came by then.

    At most ``MAX_UNREAD_STEPS`` steps wait to be read: past that, a new step replaces the
    newest unread one (a client that reads slower than the sampler steps gets the latest
    canvas, not a backlog of whole canvases that grows with the steps until the timeout)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    unread = 0  # steps queued and not read yet
    newest: list[Any] = []  # the box of the step queued last (its payload at [0])

    def put_step(payload: tuple[int, list[list[int]]]) -> None:  # event loop
        nonlocal unread, newest
        if unread >= MAX_UNREAD_STEPS:
            newest[0] = payload
            return
        newest = [payload]
        unread += 1
        events.put_nowait(("step", newest))

    def sink(step: int, rows: list[list[int]]) -> None:  # worker thread
        loop.call_soon_threadsafe(put_step, (step, rows))

    job.sink = sink
    submit(state, job)
    end = deadline(state, owner)
    # the work stops at the deadline even where nothing asks for the next event: a client
    # that stops reading holds the stream in ``send`` (TCP back-pressure), and its job ran on
    # to its end past ``--timeout``, holding the worker and rows of the batch
    expired = False

    def expire() -> None:  # event loop, at the deadline
        nonlocal expired
        expired = True  # a timeout, whatever comes first now (the job's end as cancelled)
        state.engine.cancel(job)

    expiry = loop.call_at(end, expire)

    def done() -> None:  # event loop
        expiry.cancel()  # (a timer left to run held the job and its result until then)
        events.put_nowait(("done", None))

    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(done))

    def take(kind: str, payload: Any) -> tuple[str, Any]:
        nonlocal unread
        if kind == "step":
            unread -= 1
            payload = payload[0]
        return kind, payload

    async def next_event(request: Request | None = None,
                         ping_at: float | None = None) -> tuple[str, Any]:
        while True:
            now = loop.time()
            remaining = end - now
            if remaining <= 0 or expired:  # (a timer may fire a little before ``end``: the
                # job's end as ``expire`` cancelled it read as a 499, the client gone)
                state.metrics.inc("timeouts")
                return "timeout", None
            if not events.empty():
                return take(*events.get_nowait())
            if ping_at is not None and ping_at <= now:
                return "ping", None
            wait = min(0.25, remaining) if request else remaining
            if ping_at is not None:
                wait = min(wait, ping_at - now)
            try:
                event = await asyncio.wait_for(events.get(), timeout=wait)
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    return "gone", None
                continue
            if not expired:
                return take(*event)

    return next_event


SEND_GRACE_S = 1.0
"""How long a stream's send may wait past the request's deadline (``EventStream``): time for
its last events (the 504 error event, ``[DONE]``) to reach a client that reads."""


class EventStream(StreamingResponse):
    """The ``text/event-stream`` response of ``stream_job``, whose sends give up at the
    request's deadline (``end``, the event loop's time; ``SEND_GRACE_S`` more): a client that
    stops reading, its connection open, held a send (TCP back-pressure) and the request with
    it for ever, past ``--timeout``, and a SIGTERM's graceful shutdown waited on it. Cut
    there, the response ends unfinished (uvicorn closes the connection, logging that it did),
    the stream's work is dropped and the request counts as a 504 (one whose ending error
    event was made already, the one held in that send, keeps that event's status and count)."""

    def __init__(self, body: AsyncIterator[str], *, state: ServerState, request: Request,
                 end: float) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.state, self.request, self.end = state, request, end

    async def stream_response(self, send: Any) -> None:
        loop = asyncio.get_running_loop()

        async def bounded(message: dict[str, Any]) -> None:
            await asyncio.wait_for(send(message), max(self.end - loop.time(), 0) + SEND_GRACE_S)

        try:
            await super().stream_response(bounded)
        except asyncio.TimeoutError:
            if ERROR_STATUS not in self.request.scope:  # (a stream that timed out on its own,
                # its 504 event then held in this send, was counted once already: one timeout)
                self.state.metrics.inc("timeouts")
                self.request.scope[ERROR_STATUS] = timed_out(self.state).status
            body = cast("AsyncGenerator[str, None]", self.body_iterator)
            await body.aclose()  # its work dropped now (its ``finally``), not when collected


async def stream_job(state: ServerState, request: Request, job: Job, events: Events, *,
                     first_step: bool = False) -> StreamingResponse:
    """Stream ``job``: ``events.opening()``, ``events.step`` for every sampler step,
    ``events.result`` of its result, ``[DONE]``. An error of the events themselves (a bug)
    ends the stream with a 500 error event, logged (the connection was cut mid-body, with no
    event and no end, which clients report as a broken connection). A stream that ends with
    an error event (that one, the job's failure, the timeout) is counted and logged with the
    error's status (``ending_error``).

    ``first_step``: start the response only with the job's first step, so an error the
    worker finds before any step (a template it rejects) is still a plain JSON error
    (infill, forms); otherwise it starts at once (completions, chat: their errors are found
    before submitting)."""
    next_event = open_stream(state, job, request)  # 429 before the stream starts
    first: tuple[str, Any] | None = None
    if first_step:
        try:
            first = await next_event(request)
        except BaseException:
            drop(state, job)
            raise
        if first[0] == "gone":
            drop(state, job)
            raise APIError(499, "request cancelled", code="cancelled")
        if first[0] == "timeout":
            drop(state, job)
            raise timed_out(state)
        if first[0] == "done":
            try:
                job.future.result()
            except BaseException as e:  # noqa: BLE001
                raise job_failure(e) from None

    keepalive = state.limits.keepalive_s

    async def body() -> AsyncIterator[str]:
        finished = False
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()  # when the stream last sent something

        def next_after_quiet() -> Awaitable[tuple[str, Any]]:
            return next_event(ping_at=quiet_since + keepalive if keepalive > 0 else None)

        try:
            for event in events.opening():
                yield event
                quiet_since = loop.time()
            kind, payload = first if first is not None else await next_after_quiet()
            while kind in ("step", "ping"):
                for event in events.step(*payload) if kind == "step" else (KEEPALIVE,):
                    yield event
                    quiet_since = loop.time()
                kind, payload = await next_after_quiet()
            if kind == "timeout":
                yield ending_error(request, timed_out(state))
                return
            finished = True
            try:
                result = job.future.result()
            except BaseException as e:  # noqa: BLE001
                yield ending_error(request, job_failure(e))
                return
            for event in events.result(result):
                yield event
            yield DONE
        except Exception:  # noqa: BLE001 -- a bug of the events: an error event, as documented
            yield ending_error(request, crashed(request))
        finally:
            if not finished or not job.future.done():
                drop(state, job)

    return EventStream(body(), state=state, request=request, end=deadline(state, request))


def denoising_event(state: ServerState, rid: str, step: int, rows: list[list[int]],
                    last: list[list[int]] | None) -> str:
    """One ``denoising.step`` event: per row, each position's token text (None = masked),
    the positions committed since ``last`` (the rows one event earlier; None or another
    shape = unknown, so every unmasked position) and the masks left."""
    mask_id = state.cfg.mask_id
    choices = []
    for i, row in enumerate(rows):
        ok = last is not None and i < len(last) and len(last[i]) == len(row)
        prev = last[i] if ok else None  # type: ignore[index]
        tokens = [None if t == mask_id else state.decode_one(t) for t in row]
        new = [p for p, t in enumerate(row) if t != mask_id and (prev is None or prev[p] != t)]
        choices.append({"index": i, "tokens": tokens, "committed": new,
                        "masked": sum(t == mask_id for t in row)})
    return sse({"id": rid, "object": "denoising.step", "step": step, "choices": choices},
               event="denoising.step")


class DenoisingEvents:
    """Infill and forms: a ``denoising.step`` event per sampler step over the whole canvas
    (given text and gaps), then ``body(result)`` as one event. A step number that does not
    grow starts a new sampling run (another length, a repair): its rows are compared with
    the last ones only when they have the same shape."""

    def __init__(self, state: ServerState, rid: str, body: Callable[[Any], dict[str, Any]]
                 ) -> None:
        self.state, self.rid, self.body = state, rid, body
        self.last: list[list[int]] | None = None
        self.last_step = 0

    def opening(self) -> Iterable[str]:
        return ()

    def step(self, step: int, rows: list[list[int]]) -> Iterable[str]:
        if step <= self.last_step and (self.last is None or len(self.last) != len(rows)):
            self.last = None
        event = denoising_event(self.state, self.rid, step, rows, self.last)
        self.last, self.last_step = rows, step
        return (event,)

    def result(self, result: Any) -> Iterable[str]:
        return (sse(self.body(result)),)
