"""``--batch-wait``: a request that queues in the moment between the worker taking work off
the queue and the gauges counting it (``_take`` -> ``_start`` / ``_run_whole``) queued behind
running work like any other: it starts once that work ends, without waiting for company again
(it read ``in_flight`` 0 and waited ``batch_wait_s`` more)."""

from __future__ import annotations

from server_helpers import Echo, Stepped, loaded, tiny_config

from unmask.config import SampleConfig
from unmask.server.batching import Job
from unmask.server.engine import make_engine
from unmask.server.metrics import Metrics
from unmask.server.state import ServerLimits


def job(prompt: str, n: int = 2) -> Job:
    return Job(rows=[list(prompt.encode())], config=SampleConfig(gen_length=n, steps=n))


def test_a_request_queued_as_a_run_alone_is_handed_out_starts_after_it():
    engine = make_engine(loaded(Echo(tiny_config())),
                         ServerLimits(max_batch=4, batch_wait_s=60), Metrics())
    behind = job("c")
    run_whole = engine._run_whole

    def handed(batch: list[Job]) -> None:
        engine.submit(behind)  # taken off the queue, not yet counted as running
        run_whole(batch)

    engine._run_whole = handed
    try:
        alone = Job(rows=[[1]], fn=lambda: "x")  # runs alone: starts at once
        engine.submit(alone)
        assert alone.future.result(timeout=10) == "x"
        assert behind.future.result(timeout=10).batch_rows == 1  # not 60 s later
    finally:
        engine.close()


def test_a_request_queued_as_a_full_batch_is_handed_out_starts_after_it():
    model = Stepped(Echo(tiny_config()))
    engine = make_engine(loaded(model), ServerLimits(max_batch=2, batch_wait_s=60), Metrics())
    behind = job("c")
    start = engine._start
    sent: list[bool] = []

    def handed(part, active, *, joining):  # noqa: ANN001, ANN202 -- the engine's own
        if not sent:
            sent.append(True)
            engine.submit(behind)  # taken off the queue, not yet counted as running
        start(part, active, joining=joining)

    engine._start = handed
    try:
        # a whole batch's rows, one step: it starts at once and the worker takes nothing from
        # the queue until it has ended (a later ``_take`` marks those it leaves behind)
        full = Job(rows=[list(b"a"), list(b"b")], config=SampleConfig(gen_length=1, steps=1))
        engine.submit(full)
        model.allow(100)
        assert full.future.result(timeout=10).batch_rows == 2
        assert behind.future.result(timeout=10).batch_rows == 1  # not 60 s later
    finally:
        model.allow(100)
        engine.close()
