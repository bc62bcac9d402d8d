"""The model engine of the server, built in one place.

Inside: ``make_engine(loaded, limits, metrics)``: the ``Engine`` (worker thread, queue,
continuous batching) around one checkpoint. Nothing else in the server knows how a
checkpoint is decoded: routes submit ``Job`` s and read ``GenOutput`` s.
"""

from __future__ import annotations

import functools

from unmask.checkpoint import Loaded
from unmask.server.batching import Engine
from unmask.server.metrics import Metrics
from unmask.server.state import ServerLimits


def make_engine(loaded: Loaded, limits: ServerLimits, metrics: Metrics) -> Engine:
    """The engine that runs ``loaded`` for every request, with the queue and batch bounds of
    ``limits``, counting forward passes into ``metrics``. Every request becomes the decoder
    run that ``unmask.api.start`` gives for it (the checkpoint's own decoder, as the CLI
    uses); runs that can share a forward pass are batched continuously. Its worker thread
    starts with the first job; ``Engine.close`` stops it."""
    from unmask import api

    return Engine(functools.partial(api.start, loaded), max_batch=limits.max_batch,
                  max_queue=limits.max_queue, batch_wait_s=limits.batch_wait_s, metrics=metrics)


__all__ = ["make_engine"]
