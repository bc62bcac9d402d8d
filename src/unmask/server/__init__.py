"""HTTP serving: an OpenAI-compatible API with streamed denoising, infill, forms and edit.

- ``create_app`` (``app``): the FastAPI app around one model, composed of the rest.
- ``ServerLimits`` (``limits``, importable without torch or FastAPI: the names here load on
  first use) and ``ServerState`` (``state``): limits, and what every route reads.
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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unmask.server.app import APIError, create_app, render_chat
    from unmask.server.batching import Engine, Job, QueueFull
    from unmask.server.engine import make_engine
    from unmask.server.limits import ServerLimits
    from unmask.server.metrics import Metrics
    from unmask.server.state import ServerState

_LAZY = {
    "APIError": "unmask.server.app", "create_app": "unmask.server.app",
    "render_chat": "unmask.server.app", "Engine": "unmask.server.batching",
    "Job": "unmask.server.batching", "QueueFull": "unmask.server.batching",
    "make_engine": "unmask.server.engine", "ServerLimits": "unmask.server.limits",
    "Metrics": "unmask.server.metrics", "ServerState": "unmask.server.state",
}


def __getattr__(name: str) -> Any:
    # Loaded on first use: ``unmask.server.limits`` is imported without FastAPI and torch
    # (``unmask serve`` checks its flags against ``ServerLimits`` before they load).
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unmask.server' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = ["APIError", "Engine", "Job", "Metrics", "QueueFull", "ServerLimits", "ServerState",
           "create_app", "make_engine", "render_chat"]
