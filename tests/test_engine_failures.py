"""What the model worker does after a failure: no work for a request that has its answer."""

from __future__ import annotations

import functools

from server_helpers import Mixer, loaded, tiny_config, wait_until

from unmask import api
from unmask.config import SampleConfig
from unmask.server.batching import Engine, Job
from unmask.server.metrics import Metrics
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


class FailsOnce(Mixer):
    """A model whose first forward fails; it records the rows of every forward after."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.failed = False
        self.sizes: list[int] = []

    def forward(self, tokens, attention_mask=None):
        if not self.failed:
            self.failed = True
            raise RuntimeError("boom")
        self.sizes.append(tokens.shape[0])
        return super().forward(tokens, attention_mask)


def test_a_forward_failure_ends_a_sliced_job_whose_slices_still_wait():
    """A job of more rows than ``max_batch`` runs in slices; when the shared forward of its
    first slice failed, the job got the error, but it stayed at the head of the queue and its
    other slices ran to their end (2 x 4 forwards for an answer already sent), ahead of every
    request behind it."""
    model = FailsOnce(tiny_config())
    engine = Engine(functools.partial(api.start, loaded(model)), metrics=Metrics(),
                    max_batch=1)
    config = SampleConfig(gen_length=4, steps=4)
    try:
        sliced = Job(rows=[TOK.encode(p) for p in ("ab", "cd", "ef")], config=config)
        engine.submit(sliced)
        try:
            sliced.future.result(timeout=10)
            raise AssertionError("the job should have failed")
        except RuntimeError as e:
            assert "boom" in str(e)
        after = Job(rows=[TOK.encode("x")], config=config)
        out = engine.submit(after).result(timeout=10)
        assert out.gen_ids and out.nfe == 4
        wait_until(lambda: engine.queue_depth == 0 and engine.active_rows == 0)
    finally:
        engine.close()
    assert model.sizes == [1, 1, 1, 1], model.sizes  # only the request behind it ran
