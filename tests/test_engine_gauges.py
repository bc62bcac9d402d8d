"""The worker's gauges (``in_flight``, ``active_rows``; ``/healthz``, ``/metrics``) leave a
request before its answer does: a client that has its answer and reads them at once read
its own request still running (``in_flight`` 1) for a moment."""

from __future__ import annotations

import dataclasses
import functools

import pytest
from server_helpers import Broken, loaded, random_transformer, tiny_config

from unmask import api
from unmask.config import SampleConfig
from unmask.server.batching import Engine, Job
from unmask.server.metrics import Metrics
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def _causal():
    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    return Transformer(dataclasses.replace(tiny_config(), attention="causal")).eval()


def _engine(model, **kw) -> Engine:
    return Engine(functools.partial(api.start, loaded(model)), metrics=Metrics(), **kw)


def _gauges_when_answered(engine: Engine, job: Job) -> tuple[int, int]:
    seen: list[tuple[int, int]] = []
    # a done callback runs on the worker thread as the future resolves: what a client that
    # has just got its answer can read
    job.future.add_done_callback(lambda _: seen.append((engine.in_flight, engine.active_rows)))
    engine.submit(job)
    try:
        job.future.result(timeout=30)
    except Exception:  # noqa: BLE001 -- failing jobs are checked too
        pass
    return seen[0]


@pytest.mark.parametrize("model,config", [
    (random_transformer, SampleConfig(gen_length=4, steps=4)),  # the continuous batch
    (random_transformer, SampleConfig(gen_length=4, steps=4, block_length=4, cache="prefix")),
    (_causal, SampleConfig(gen_length=4)),  # whole-batch runs
    (lambda: Broken(tiny_config()), SampleConfig(gen_length=4, steps=4)),  # a failed forward
])
@pytest.mark.parametrize("rows", [1, 3])
def test_the_gauges_read_idle_when_a_lone_request_is_answered(model, config, rows):
    engine = _engine(model(), max_batch=2)  # 3 rows: two slices
    try:
        job = Job(rows=[TOK.encode(p) for p in ("ab", "c", "def")[:rows]], config=config)
        assert _gauges_when_answered(engine, job) == (0, 0)
    finally:
        engine.close()


def test_the_gauges_read_idle_when_a_function_job_is_answered():
    engine = _engine(random_transformer())
    try:
        assert _gauges_when_answered(engine, Job(fn=lambda: 7)) == (0, 0)
    finally:
        engine.close()
