"""The FastAPI app: one served model, composed from the routes.

Inside: ``create_app`` (and, re-exported, ``ServerLimits``). The pieces: ``state``
(``ServerState``: model, tokenizer, engine, limits, metrics), ``engine`` (``make_engine``:
the worker that runs the model, with continuous batching), ``plumbing`` (errors in OpenAI's
shape, auth, checks, jobs), ``streaming`` (the one SSE streamer), ``http`` (middlewares:
body limit, metrics, access log) and ``routes/`` (one module per endpoint group).

Endpoints (docs/serving.md): ``POST /v1/completions``, ``POST /v1/chat/completions``
(``stream: true`` = server-sent events in OpenAI's chunk format; ``stream_denoising`` adds
one ``denoising.step`` event per sampler step), ``POST /v1/infill`` and ``POST /v1/forms``
(``stream: true``: ``denoising.step`` events, then the response body), ``POST /v1/edit``,
``POST /v1/tokenize``, ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` and the
playground at ``/``. Every error is a JSON body ``{"error": {"message", "type", "param",
"code"}}``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI

from unmask.checkpoint import Loaded
from unmask.server.engine import make_engine
from unmask.server.http import (
    AccessLog,
    APIError,
    BodyLimit,
    JSONResponse,
    RecordMetrics,
    render_chat,
    sse,
)
from unmask.server.limits import ServerLimits, check_api_key
from unmask.server.metrics import Metrics
from unmask.server.plumbing import install_error_handlers
from unmask.server.routes import chat, completions, infill, info, playground
from unmask.server.state import ServerState
from unmask.server.state import model_name as default_name


def create_app(
    loaded_or_path: Loaded | str | os.PathLike[str],
    *,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    device: str = "cpu",
    chat_template: str | None = None,
    access_log: bool = True,
    draft: Loaded | None = None,
    draft_options: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The HTTP app around one model: a ``Loaded`` (any mask predictor with its tokenizer
    and config) or a checkpoint path (loaded on ``device``).

    ``api_key``: when set, every ``/v1/*`` and ``/metrics`` request needs
    ``Authorization: Bearer <api_key>``. ``chat_template``: the template chat requests are
    rendered with (``plain``, ``default``, a file or Jinja text; ``unmask.chat.template_arg``)
    instead of the checkpoint's own; with neither, chat is refused with a 400.
    ``access_log``: one INFO line per request on the ``unmask.server.access`` logger. The
    engine's worker thread starts with the first request and stops when the app shuts down
    (``app.state.engine.close()``); an app run again starts a new one. ``draft``: a
    diffusion checkpoint that drafts for a causal model (speculative decoding,
    ``make_engine``), with ``draft_options``.
    """
    if not isinstance(loaded_or_path, Loaded):
        from unmask.checkpoint import load

        loaded_or_path = load(loaded_or_path, device=device)
    loaded = loaded_or_path
    if api_key is not None:  # an empty key would have turned auth off; a non-ASCII one
        check_api_key(api_key)  # refused every request
    limits = limits or ServerLimits()
    import_before_threads()
    template = chat.chat_template(loaded, chat_template)  # a bad template fails here
    metrics = Metrics()
    engine = make_engine(loaded, limits, metrics, draft=draft, draft_options=draft_options)
    metrics.add_gauge("queue_depth", "Requests waiting for the model worker.",
                      lambda: state.engine.queue_depth)
    metrics.add_gauge("in_flight", "Requests the model worker is running now.",
                      lambda: state.engine.in_flight)
    metrics.add_gauge("active_rows", "Rows (prompts x n) of the requests the worker is running "
                      "now.", lambda: state.engine.active_rows)
    state = ServerState(loaded=loaded, name=model_name or default_name(loaded), limits=limits,
                        metrics=metrics, engine=engine, chat=template,
                        api_key=api_key.encode() if api_key else None, draft=draft)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.engine.alive:  # closed when an earlier run of this app shut down (a
            # second uvicorn.run or TestClient): a fresh worker, not a 503 for every request
            state.engine = app.state.engine = make_engine(
                loaded, limits, metrics, draft=draft, draft_options=draft_options)
        yield
        state.engine.close()

    app = FastAPI(title="unmask", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json",
                  default_response_class=JSONResponse)
    app.state.server = state
    app.state.engine, app.state.metrics = engine, metrics
    app.state.limits, app.state.loaded = limits, loaded
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(RecordMetrics, metrics=metrics)  # sees 413s too
    if access_log:
        app.add_middleware(AccessLog)  # outermost: every request, its whole duration
    install_error_handlers(app)
    for group in (completions, chat, infill, info, playground):
        app.include_router(group.router(state))
    return app


def import_before_threads() -> None:
    """Import here, once, the optional packages that requests' checks import lazily
    (``outlines_core``, structured output), so that no first import of one runs in a pool
    thread: checks run in threads, and a thread that imports ``outlines_core.json_schema``
    (a name its package's ``__init__`` registers last) while another is still importing the
    package found it half initialised, a ModuleNotFoundError and a 500. A broken install
    is left to the request that needs it to report."""
    import importlib

    with contextlib.suppress(ImportError):
        importlib.import_module("outlines_core")


__all__ = ["APIError", "ServerLimits", "create_app", "render_chat", "sse"]
