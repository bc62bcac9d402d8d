"""The worker that runs the model: a bounded queue, request batching, cancellation.

Inside: ``Job`` (one request's work), ``GenOutput`` (its result), ``QueueFull``,
``Cancelled`` and ``Engine``.

One worker thread owns the model, so the event loop never blocks on it and requests
never race on the device. Requests wait in a bounded queue (``QueueFull`` when it is
full; the app answers 429). When the worker picks a generation job it (optionally)
waits ``batch_wait_s`` for company, then takes every queued job with the same ``batch_key``
(same canvas length and sampler settings) up to ``max_batch`` rows, and runs them as
*one* left-padded ``unmask.sampling.generate`` call: every denoising step is one forward
pass over the whole batch. Rows are independent given the attention mask, so at
temperature 0 a request gets the same tokens batched or alone (tests check this).
Infill and edit jobs (``fn``) run alone.

Cancellation: ``Job.cancel()`` (client gone, timeout) drops a queued job; a running batch
checks after every step and stops when all of its jobs are cancelled (a batch with a live
job runs on; continuous batching, joining and leaving at step boundaries, is not done).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from unmask.config import SampleConfig
from unmask.server.metrics import Metrics

StepSink = Callable[[int, list[list[int]]], None]
"""``sink(step, region_ids)``: after each step, the job's rows of the generation region
(``mask_id`` where still masked). Called on the worker thread: keep it cheap."""

OnStep = Callable[[int, torch.Tensor, tuple[int, int]], None]
"""``on_step(step, tokens (B, L), region)``, given to ``Engine.run_generate``."""

_ids = itertools.count()


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already."""


class Cancelled(Exception):
    """The job was cancelled before it finished."""


@dataclass
class GenOutput:
    """What a generation job resolves to."""

    gen_ids: list[list[int]]
    """Generation region per row (EOS and after included; ``pad_id`` after EOS for causal models)."""
    nfe: int
    steps: int
    batch_rows: int
    """Rows in the forward batch this job ran in (its own included)."""


@dataclass(eq=False)
class Job:
    """One request's work: generation rows (batchable) or a function (runs alone)."""

    rows: list[list[int]] = field(default_factory=list)
    """Prompt ids, one list per output row (a prompt with ``n`` choices appears ``n`` times)."""
    config: SampleConfig | None = None
    fn: Callable[[], Any] | None = None
    """Run alone on the worker instead of generating (infill, edit)."""
    sink: StepSink | None = None
    batchable: bool = True
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    id: int = field(default_factory=lambda: next(_ids))
    _cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def batch_key(self) -> Hashable:
        """Jobs with equal keys may share one forward batch."""
        if self.fn is not None or not self.batchable or self.config is None:
            return ("alone", self.id)
        return ("generate", dataclasses.astuple(dataclasses.replace(self.config, seed=None)))

    def cancel(self) -> None:
        """Stop this job: it is skipped if queued; its batch stops if all its jobs are cancelled."""
        self._cancelled.set()


def _resolve(fut: concurrent.futures.Future, result: Any = None, exc: BaseException | None = None) -> None:
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except concurrent.futures.InvalidStateError:  # the waiter cancelled it
        pass


class Engine:
    """The model worker: ``submit`` jobs, get ``concurrent.futures.Future`` s back.

    ``run_generate(rows, config, on_step) -> (tokens (B, L), region, nfe, steps)`` does the
    sampling (``unmask.sampling.generate`` or ``generate_ar``); it must call
    ``on_step(step, tokens (B, L), region)`` after every step, which may raise ``Cancelled``.
    """

    def __init__(
        self,
        run_generate: Callable[[list[list[int]], SampleConfig, OnStep], tuple[Any, ...]],
        *,
        max_batch: int = 8,
        max_queue: int = 64,
        batch_wait_s: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.run_generate = run_generate
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics or Metrics()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._running = 0

    # -- the caller's side -------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (not yet picked by the worker)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Jobs the worker is running now."""
        return self._running

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue ``job``; raises ``QueueFull`` when ``max_queue`` jobs wait already."""
        with self._cond:
            if self._stop:
                raise RuntimeError("the engine is closed")
            if len(self._queue) >= self.max_queue:
                raise QueueFull
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="unmask-engine", daemon=True)
                self._thread.start()
            self._cond.notify()
        return job.future

    def cancel(self, job: Job) -> None:
        """Cancel ``job`` and drop it from the queue if it is still there."""
        job.cancel()
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running or finished
        _resolve(job.future, exc=Cancelled())

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after its current batch; queued jobs fail with ``Cancelled``."""
        with self._cond:
            self._stop = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancel()
            _resolve(job.future, exc=Cancelled())
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------------

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._queue.popleft()
        key = first.batch_key()
        if key[0] == "alone" or self.max_batch <= len(first.rows):
            return [first]
        if self.batch_wait_s > 0:
            time.sleep(self.batch_wait_s)  # let requests that arrive together share the batch
        batch, rows = [first], len(first.rows)
        with self._cond:
            for job in list(self._queue):
                if rows + len(job.rows) > self.max_batch:
                    continue
                if not job.cancelled and job.batch_key() == key:
                    self._queue.remove(job)
                    batch.append(job)
                    rows += len(job.rows)
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [j for j in batch if not j.cancelled and j.future.set_running_or_notify_cancel()]
            for j in batch:
                if j not in live:
                    _resolve(j.future, exc=Cancelled())
            if not live:
                continue
            self._running = len(live)
            try:
                self._run(live)
            finally:
                self._running = 0

    def _run(self, batch: list[Job]) -> None:
        self.metrics.inc("batches")
        self.metrics.inc("batched_requests", len(batch))
        if batch[0].fn is not None:
            job = batch[0]
            try:
                _resolve(job.future, job.fn())
            except BaseException as e:  # noqa: BLE001 -- reported to the request, the worker lives on
                _resolve(job.future, exc=e)
            return
        rows = [r for j in batch for r in j.rows]
        offsets = list(itertools.accumulate([0] + [len(j.rows) for j in batch]))

        def on_step(step: int, tokens: torch.Tensor, region: tuple[int, int]) -> None:
            if all(j.cancelled for j in batch):
                raise Cancelled
            sinks = [(j, o) for j, o in zip(batch, offsets, strict=False) if j.sink is not None and not j.cancelled]
            if not sinks:
                return
            ids = tokens[:, region[0] : region[1]].tolist()
            for j, o in sinks:
                try:
                    j.sink(step, ids[o : o + len(j.rows)])  # type: ignore[misc]
                except Exception:  # noqa: BLE001 -- a broken stream must not stop the others
                    j.cancel()

        try:
            tokens, region, nfe, steps = self.run_generate(rows, batch[0].config, on_step)  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 -- every job of the batch gets the error
            for j in batch:
                _resolve(j.future, exc=Cancelled() if j.cancelled else e)
            return
        self.metrics.inc("nfe", nfe)
        gen = tokens[:, region[0] : region[1]].tolist()
        for j, o in zip(batch, offsets, strict=False):
            _resolve(j.future, GenOutput(gen_ids=gen[o : o + len(j.rows)], nfe=nfe, steps=steps, batch_rows=len(rows)))
