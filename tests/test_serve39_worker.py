"""The model worker outlives a client that leaves as its work is handed out, and holds no
finished request's decoder state (canvas, KV cache, logits buffer) once it is answered,
failed or not."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable

import pytest
import torch
from server_helpers import Echo, loaded, random_transformer, tiny_config, wait_until

import unmask.server.batching as batching
from unmask.config import SampleConfig
from unmask.sampling.protocol import DecoderRun
from unmask.server.batching import Cancelled, Job, StepSink
from unmask.server.engine import make_engine
from unmask.server.limits import ServerLimits
from unmask.server.metrics import Metrics


def test_a_request_cancelled_as_its_first_slice_is_handed_out_leaves_the_worker_alive():
    """A request of more rows than ``max_batch`` stays at the head of the queue while its first
    slice joins; its client leaving in that moment (``Engine.cancel`` resolves the queued job)
    made the worker's ``set_running_or_notify_cancel`` raise: the worker thread died and every
    later request was a 503 until the server was restarted."""
    engine = make_engine(loaded(Echo(tiny_config())), ServerLimits(max_batch=2), Metrics())
    big = Job(rows=[list(b"a"), list(b"b"), list(b"c")],
              config=SampleConfig(gen_length=2, steps=2))
    start = engine._start

    def handed(part, active, *, joining):  # noqa: ANN001, ANN202 -- the engine's own
        engine.cancel(big)  # taken off the queue by the worker, not yet started
        start(part, active, joining=joining)

    engine._start = handed
    try:
        engine.submit(big)
        exc = big.future.exception(timeout=10)
        assert isinstance(exc, Cancelled)
        engine._start = start
        after = Job(rows=[list(b"z")], config=SampleConfig(gen_length=2, steps=2))
        engine.submit(after)  # raised WorkerDown
        assert after.future.result(timeout=10).gen_ids == [[4 + ord(c) for c in "bc"]]
        assert engine.alive and engine.in_flight == 0
    finally:
        engine.close()


def test_a_request_answered_as_its_slice_starts_leaves_the_worker_alive(monkeypatch):
    """The event loop's ``Engine.cancel`` (client gone, ``--timeout``) can resolve a request
    still queued for its other slices while the worker starts one: between ``_start``'s
    ``cancelled`` check and its read of the slice's run, ``Job._release`` dropped that run and
    the worker died of ``assert part.run is not None`` (every later request a 503). The
    interleaving made deterministic: the check reads the flag, then the loop's cancel runs."""
    engine = make_engine(loaded(Echo(tiny_config())), ServerLimits(max_batch=2), Metrics())

    class Racy(Job):
        armed = False

        @property
        def cancelled(self) -> bool:
            was = self._cancelled.is_set()  # the worker reads False, then the loop cancels
            if self.armed:
                self.armed = False
                engine.cancel(self)
            return was

    big = Racy(rows=[list(b"a"), list(b"b"), list(b"c")],
               config=SampleConfig(gen_length=2, steps=2))
    claim = batching._claim

    def claimed(fut):  # noqa: ANN001, ANN202 -- the module's own
        ok = claim(fut)
        big.armed = fut is big.future  # the next ``cancelled`` read is ``_start``'s check
        return ok

    monkeypatch.setattr(batching, "_claim", claimed)
    try:
        engine.submit(big)
        assert isinstance(big.future.exception(timeout=10), Cancelled)
        after = Job(rows=[list(b"z")], config=SampleConfig(gen_length=2, steps=2))
        engine.submit(after)  # raised WorkerDown
        assert after.future.result(timeout=10).gen_ids == [[4 + ord(c) for c in "bc"]]
        assert engine.alive
        wait_until(lambda: engine.in_flight == 0)
    finally:
        engine.close()


@pytest.mark.parametrize(("cache", "requests"), [("none", 2), ("prefix", 1), ("prefix", 2)])
def test_an_answered_request_holds_no_decoder_run(cache, requests):
    """Once answered, a request's decoder runs (canvas, KV cache, logits buffer) are freed at
    once, garbage collection off: in the continuous batch (``none``), a run alone and a
    whole-batch run of two streamed requests (``prefix``). The worker's last job stayed
    referenced while it idled, and the rest until a collection (a job and its parts, a
    whole-batch run and its step callback, refer to each other)."""
    def answered(job: Job) -> None:
        assert len(job.future.result(timeout=10).gen_ids[0]) == 8

    _runs_freed(cache, requests, answered, sink=lambda step, rows: None)


def _runs_freed(cache: str, requests: int, answered: Callable[[Job], None], *,
                sink: StepSink | None = None,
                started: Callable[[DecoderRun], None] = lambda run: None) -> None:
    """``requests`` requests of one row queued together (``cache``; each streamed to ``sink``:
    a run's step callback sees it), each ``answered``: then every decoder run the engine
    started (each passed to ``started``) dies, garbage collection off."""
    engine = make_engine(loaded(random_transformer()), ServerLimits(max_batch=4), Metrics())
    runs: list[weakref.ref] = []
    start = engine.start_run

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 -- the engine's own
        run = start(*args, **kwargs)
        started(run)
        runs.append(weakref.ref(run))
        return run

    engine.start_run = recorded
    gate = threading.Event()
    config = SampleConfig(gen_length=8, steps=8, block_length=4, cache=cache)
    gc.disable()
    try:
        engine.submit(Job(fn=lambda: gate.wait(10)))  # the requests queue behind it
        jobs = [Job(rows=[[5 + k, 6, 7]], config=config, sink=sink) for k in range(requests)]
        for job in jobs:
            engine.submit(job)
        gate.set()
        for job in jobs:
            answered(job)
        assert runs
        wait_until(lambda: all(run() is None for run in runs))
        assert engine.alive
    finally:
        gc.enable()
        engine.close()


def _out_of_memory(self, *args) -> None:  # noqa: ANN001, ANN002 -- a run's method, broken
    """A decoder run's step failing as a CUDA out-of-memory error does: its frame (and the
    error it was raised in) hold the run, as a decoder's own frames do."""
    try:
        raise KeyError("allocating the logits buffer")
    except KeyError:
        raise RuntimeError("CUDA out of memory (stand-in)") from None


@pytest.mark.parametrize(("cache", "requests", "broken"), [
    ("none", 2, "model_inputs"),  # the continuous batch's shared forward
    ("none", 2, "step"),  # a run's own step in the continuous batch
    ("none", 2, "result"),  # a run's own result in the continuous batch
    ("prefix", 1, "advance"),  # a run alone
    ("prefix", 2, "advance"),  # a whole-batch run of two requests
])
def test_a_failed_request_holds_no_decoder_run(monkeypatch, cache, requests, broken):
    """A run that fails (a CUDA out-of-memory error, most likely) is freed once its requests
    are answered, garbage collection off: each request's future held the error, its traceback
    the worker's frames, and they the run (canvas, KV cache, logits buffer) for as long as the
    worker idled after it."""
    def answered(job: Job) -> None:
        assert "CUDA out of memory" in str(job.future.exception(timeout=10))

    _runs_freed(cache, requests, answered,
                started=lambda run: monkeypatch.setattr(type(run), broken, _out_of_memory))


def test_a_failed_infill_holds_none_of_its_state():
    """Infill, forms, edit and structured output run alone on the worker, as a function: one
    that fails leaves nothing of its frames held by the answer (its error's traceback held
    them, with their canvas, until the next request)."""
    engine = make_engine(loaded(Echo(tiny_config())), ServerLimits(), Metrics())
    held: list[weakref.ref] = []

    class State:
        """What an infill's frames hold (its canvas, a decoder run)."""

    def infill() -> None:
        state = State()
        held.append(weakref.ref(state))
        _out_of_memory(state)

    gc.disable()
    try:
        job = Job(fn=infill)
        engine.submit(job)
        assert "CUDA out of memory" in str(job.future.exception(timeout=10))
        assert held
        wait_until(lambda: held[0]() is None)
        assert engine.alive
    finally:
        gc.enable()
        engine.close()


def _deep_helper(tokens):
    return tokens.shape[5]  # an IndexError deep in a model's forward: a bug behind a 500


class _Buggy(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, tokens, attention_mask=None):
        return _deep_helper(tokens)


@pytest.mark.parametrize("body", [{"prompt": "x", "max_tokens": 2},
                                  {"prompt": "x", "max_tokens": 2, "stream": True},
                                  {"prompt": "x", "max_tokens": 2, "n": 2}])
def test_a_500_logs_the_worker_traceback_once(body, caplog):
    """A model bug behind a 500 is logged with the traceback the worker caught (the failing
    function named), once for a batch whose rows share the error; the request still gets its
    one-line 500, and the run is freed (the traceback kept as text, no frames)."""
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with caplog.at_level(logging.ERROR, logger="unmask.server"), TestClient(
            create_app(loaded(_Buggy(tiny_config()))), raise_server_exceptions=False) as c:
        r = c.post("/v1/completions", json=body)
    assert "model execution failed" in r.text
    failed = [rec.getMessage() for rec in caplog.records
              if "model execution failed" in rec.getMessage()]
    assert len(failed) == 1 and "_deep_helper" in failed[0] and "Traceback" in failed[0]


def test_a_user_error_logs_no_traceback(caplog):
    """An infill the request got wrong (a template without a gap) is a 400 with no traceback
    in the log: only unexpected errors keep theirs."""
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with caplog.at_level(logging.INFO), TestClient(
            create_app(loaded(_Buggy(tiny_config())))) as c:
        r = c.post("/v1/infill", json={"template": "no gaps"})
    assert r.status_code == 400
    assert not any("Traceback" in rec.getMessage() for rec in caplog.records)


def test_only_an_unexpected_error_keeps_its_traceback_as_text_once():
    """``_bare`` strips every job error's frames; a bug's traceback is kept as text for the
    log (``worker_traceback``, once: a failed batch's jobs share the error), a request's own
    mistake (``UserError``) and a cancellation keep none."""
    from unmask.errors import UserError

    def fail(e):
        try:
            raise e
        except BaseException as caught:
            return batching._bare(caught)

    bug = fail(IndexError("tuple index out of range"))
    assert bug.__traceback__ is None
    text = batching.worker_traceback(bug)
    assert text is not None and "IndexError" in text and "in fail" in text
    assert batching.worker_traceback(bug) is None  # logged once
    for quiet in (UserError("bad template"), Cancelled()):
        assert batching.worker_traceback(fail(quiet)) is None


def test_a_client_leaving_during_its_last_step_is_answered():
    """``Engine.cancel`` landing while a job's last (only) step runs, its part off the queue:
    the job is answered ``Cancelled`` (its future stayed unset for ever: a direct caller of the
    engine waiting on it hung; the server answers 499 itself)."""
    holder: dict = {}

    class CancelInForward(Echo):
        def forward(self, tokens, attention_mask=None):
            job = holder.get("job")
            if job is not None and not job.cancelled:
                holder["engine"].cancel(job)
            return super().forward(tokens, attention_mask)

    engine = make_engine(loaded(CancelInForward(tiny_config())), ServerLimits(max_batch=2),
                         Metrics())
    holder["engine"] = engine
    try:
        job = Job(rows=[list(b"a")], config=SampleConfig(gen_length=1, steps=1))
        holder["job"] = job
        engine.submit(job)
        assert isinstance(job.future.exception(timeout=30), Cancelled)
    finally:
        engine.close()
