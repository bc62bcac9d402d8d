"""The batch a request starts in: ``unmask_joined_total`` counts the requests that joined a
running batch, as its help and docs/serving.md say (requests taken into an idle worker
together start together, and all but the first of them were counted as joining it); and a
request that queued while a batch or a run alone ran starts once the worker is free, without
``--batch-wait`` again."""

from __future__ import annotations

import threading

from server_helpers import Echo, Stepped, loaded, tiny_config, wait_until

from unmask.config import SampleConfig
from unmask.server.batching import Job
from unmask.server.engine import make_engine
from unmask.server.metrics import Metrics
from unmask.server.state import ServerLimits


def job(prompt: str, n: int = 8) -> Job:
    return Job(rows=[list(prompt.encode())], config=SampleConfig(gen_length=n, steps=n))


def test_requests_that_start_together_did_not_join_and_a_later_one_did():
    model = Stepped(Echo(tiny_config()))
    metrics = Metrics()
    # the idle worker waits (--batch-wait) until a batch's rows are queued: four start at once
    engine = make_engine(loaded(model), ServerLimits(max_batch=4, batch_wait_s=60), metrics)
    try:
        together = [job("a", 2), job("bb"), job("ccc"), job("dddd")]
        for j in together:
            engine.submit(j)
        wait_until(lambda: model.entered == 1)  # their first forward, all four rows in it
        assert engine.in_flight == 4 and engine.queue_depth == 0
        late = job("e")  # joins the running batch once "a" has left it (2 steps)
        engine.submit(late)
        model.allow(100)
        outs = [j.future.result(timeout=10) for j in (*together, late)]
    finally:
        model.allow(100)
        engine.close()
    assert model.sizes[0] == 4 and [o.batch_rows for o in outs[:4]] == [4, 4, 4, 4]
    assert metrics.get("joined") == 1


def test_a_request_queued_behind_a_running_batch_does_not_wait_for_company_again():
    """``--batch-wait``: the idle worker waits for company before it starts a batch, so that
    requests arriving together start together. A request that queued while a batch ran (it
    could not join: the batch was full) has waited already; once the batch drained it waited
    ``batch_wait_s`` more, idle, each time (under load, a gap at every drain)."""
    model = Stepped(Echo(tiny_config()))
    engine = make_engine(loaded(model), ServerLimits(max_batch=2, batch_wait_s=60), Metrics())
    try:
        full = Job(rows=[list(b"a"), list(b"b")], config=SampleConfig(gen_length=2, steps=2))
        engine.submit(full)  # a whole batch's rows: it starts at once
        wait_until(lambda: model.entered == 1)
        behind = job("c", 2)  # no room beside it: queued
        engine.submit(behind)
        model.allow(100)
        full.future.result(timeout=10)
        wait_until(lambda: model.entered >= 3)  # behind's first forward, not 60 s later
        assert behind.future.result(timeout=10).batch_rows == 1
    finally:
        model.allow(100)
        engine.close()


def test_requests_that_arrive_together_and_cannot_share_a_batch_run_back_to_back():
    """Two requests of 3 rows at ``--max-batch 4``, sent together: the first starts once
    their rows are queued, the second is left behind it; when the first ends, the second
    starts at once (it waited ``batch_wait_s`` more, alone in the queue)."""
    model = Echo(tiny_config())
    engine = make_engine(loaded(model), ServerLimits(max_batch=4, batch_wait_s=60), Metrics())
    config = SampleConfig(gen_length=4, steps=4)
    try:
        first, second = (Job(rows=[list(p)] * 3, config=config) for p in (b"ab", b"cd"))
        engine.submit(first)
        engine.submit(second)
        assert first.future.result(timeout=10).batch_rows == 3
        assert second.future.result(timeout=10).batch_rows == 3
    finally:
        engine.close()


def test_a_request_queued_behind_a_run_alone_does_not_wait_for_company_again():
    """A request that queued while a run alone (infill, edit: ``fn``) held the worker has
    waited already: it starts once the run ends (it waited ``batch_wait_s`` more)."""
    model = Stepped(Echo(tiny_config()))
    engine = make_engine(loaded(model), ServerLimits(max_batch=4, batch_wait_s=60), Metrics())
    running, gate = threading.Event(), threading.Event()

    def alone_run() -> str:
        running.set()
        gate.wait(10)
        return "x"

    try:
        alone = Job(rows=[[1]], fn=alone_run)  # runs alone: starts at once
        engine.submit(alone)
        assert running.wait(10)
        behind = job("c", 2)
        engine.submit(behind)  # queued while the run alone holds the worker
        model.allow(100)
        gate.set()
        assert alone.future.result(timeout=10) == "x"
        assert behind.future.result(timeout=10).batch_rows == 1  # not 60 s later
    finally:
        gate.set()
        model.allow(100)
        engine.close()


def test_a_request_queued_during_a_batchs_last_forward_does_not_wait_for_company_again():
    """A request that arrives while the batch's last forward runs (after the worker last
    looked at the queue) starts once that forward ends: it waited ``batch_wait_s`` more,
    which under load, with long forwards, was most arrivals at a drain."""
    model = Stepped(Echo(tiny_config()))
    engine = make_engine(loaded(model), ServerLimits(max_batch=2, batch_wait_s=60), Metrics())
    try:
        full = Job(rows=[list(b"a"), list(b"b")], config=SampleConfig(gen_length=2, steps=2))
        engine.submit(full)  # a whole batch's rows: it starts at once
        wait_until(lambda: model.entered == 1)
        model.allow(1)
        wait_until(lambda: model.entered == 2)  # its last forward, waiting for its permit
        late = job("c", 2)
        engine.submit(late)
        model.allow(100)
        assert full.future.result(timeout=10).batch_rows == 2
        assert late.future.result(timeout=10).batch_rows == 1  # not 60 s later
    finally:
        model.allow(100)
        engine.close()


def test_a_request_sent_once_a_batch_has_ended_still_waits_for_company():
    """The worker that is free again waits for company: a request sent once the last one's
    answer came (the worker's loop may not have come round yet) did not queue while the
    worker ran others, so it waits, and a second one sent then starts with it."""
    model = Stepped(Echo(tiny_config()))
    engine = make_engine(loaded(model), ServerLimits(max_batch=2, batch_wait_s=60), Metrics())
    full = Job(rows=[list(b"a"), list(b"b")], config=SampleConfig(gen_length=2, steps=2))
    gathering = threading.Event()  # the worker waits for company once ``full`` has ended
    wait = engine._cond.wait

    def waiting(timeout: float | None = None) -> bool:
        if timeout is not None and full.future.done():  # (``_gather``: with a timeout)
            gathering.set()
        return wait(timeout)

    engine._cond.wait = waiting
    try:
        engine.submit(full)
        model.allow(100)
        full.future.result(timeout=10)
        first = job("c", 2)
        engine.submit(first)  # at once: the worker may still be finishing ``full``
        assert gathering.wait(10)  # it waits for company (60 s, or a full batch)
        second = job("d", 2)
        engine.submit(second)
        first.future.result(timeout=10)
        second.future.result(timeout=10)
    finally:
        model.allow(100)
        engine.close()
    assert model.sizes == [2, 2, 2, 2]  # each of their forwards holds both (not 1, 2, 1)
