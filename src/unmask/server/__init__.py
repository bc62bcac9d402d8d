"""HTTP serving: an OpenAI-compatible API with streamed denoising, infill, forms and edit.

- ``create_app`` (``app``): the FastAPI app around one model, composed of the rest.
- ``ServerLimits`` / ``ServerState`` (``state``): limits, and what every route reads.
- ``make_engine`` (``engine``): the model worker for a checkpoint.
- ``routes/``: one module per endpoint group (completions, chat, infill/edit/forms,
  models/health/metrics/tokenize, playground).
- ``plumbing``: errors in OpenAI's shape, auth, request checks, job submit/wait/cancel.
- ``streaming``: the one server-sent-event streamer.
- ``APIError``, ``render_chat``, middlewares (body limit, metrics, access log), ``sse``
  (``http``).
- ``Engine`` / ``Job`` (``batching``): the worker thread, bounded queue and batching.
- ``Metrics`` (``metrics``): Prometheus text for ``GET /metrics``.
- ``schemas``: request bodies (pydantic, unknown fields rejected).

Needs FastAPI and uvicorn: ``bash install.sh`` installs them, or from a clone
``pip install -e '.[serve]'``; see docs/serving.md.
"""

from __future__ import annotations

from unmask.server.app import APIError, ServerLimits, create_app, render_chat
from unmask.server.batching import Engine, Job, QueueFull
from unmask.server.engine import make_engine
from unmask.server.metrics import Metrics
from unmask.server.state import ServerState

__all__ = ["APIError", "Engine", "Job", "Metrics", "QueueFull", "ServerLimits", "ServerState",
           "create_app", "make_engine", "render_chat"]
