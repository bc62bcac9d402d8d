"""``unmask_joined_total`` counts the requests that joined a running batch, as its help and
docs/serving.md say: requests taken into an idle worker together start together (one batch
from its first forward), and all but the first of them were counted as joining it."""

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
