"""The batch a request starts in: ``unmask_joined_total`` counts the requests that joined a
running batch, as its help and docs/serving.md say (requests taken into an idle worker
together start together, and all but the first of them were counted as joining it); and a
request that queued while a batch ran starts once the worker is free, without
``--batch-wait`` again."""

from __future__ import annotations

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
