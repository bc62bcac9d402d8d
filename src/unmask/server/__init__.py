"""HTTP serving: an OpenAI-compatible API with streamed denoising, infill and edit.

- ``create_app`` / ``ServerLimits`` (``app``): the FastAPI app around one model.
- ``APIError``, ``render_chat``, middlewares, ``sse`` (``http``): the HTTP plumbing.
- ``Engine`` / ``Job`` (``batching``): the worker thread, bounded queue and batching.
- ``Metrics`` (``metrics``): Prometheus text for ``GET /metrics``.
- ``schemas``: request bodies (pydantic, unknown fields rejected).

Needs the ``serve`` extra (``pip install 'unmask[serve]'``); see docs/serving.md.
"""

from __future__ import annotations

from unmask.server.app import APIError, ServerLimits, create_app, render_chat
from unmask.server.batching import Engine, Job, QueueFull
from unmask.server.metrics import Metrics

__all__ = ["APIError", "Engine", "Job", "Metrics", "QueueFull", "ServerLimits", "create_app", "render_chat"]
