"""The worker that runs the model: a bounded queue, continuous batching, cancellation.

Inside: ``Job`` (one request's work), ``GenOutput`` (its result), ``StartRun`` (the factory
of decoder runs the engine is built on: ``functools.partial(unmask.api.start, loaded)``),
``QueueFull``, ``Cancelled``, ``ForwardCount`` and ``Engine``.

One worker thread owns the model, so the event loop never blocks on it and requests
never race on the device. Requests wait in a bounded queue (``QueueFull`` when it is
full; the app answers 429).

Every generation job becomes a decoder run (``unmask.sampling.DecoderRun``) of the
checkpoint's own decoder, so the server decodes exactly as ``unmask generate`` does.

Continuous batching (runs that ``shares_forward``: the ``llada`` decoder without a KV
cache): the worker keeps a running batch of requests, each with its own run (own canvas,
length, steps, policy, temperature and generator). Every iteration is one step boundary:
cancelled requests leave, queued requests join (first come, first served, a request coming
when its checks, run in a thread, finish: one whose checks are slow does not hold back one
sent after it; while the batch holds at most ``max_batch`` rows; a job of more rows runs in
slices of ``max_batch`` rows that join as rows free up, and a seeded job of several rows
runs each row as a run of its own: ``Engine._split``), then one forward pass over every
request that needs the model (``unmask.sampling.step_together``: left-padded to the longest
canvas, padding masked out) and each request's own step; a request whose run is done leaves
at once and its future resolves. A row's logits do not depend on the other rows, so in exact
arithmetic a request at temperature 0 gets the same tokens alone, batched, or joining
mid-way, and a seeded request the same tokens for the same seed (tests check both, in
float32, on test models).
In floating point a differently shaped batch rounds differently and can flip a near-tie:
rarely in float32, more often in bf16 (``--dtype auto`` on a CPU with AMX): docs/serving.md
("Continuous batching"); ``--dtype fp32 --max-batch 1`` for bitwise output.

Runs alone: runs that cannot share a forward (KV caches ``prefix``/``dual``, ``bd3lm``
blocks, ``sedd``, ``ar``) and infill/edit (``fn``): the worker waits for the running batch
to drain, takes the request with every queued request of the same ``batch_key`` (up to
``max_batch`` rows, one run over all their rows) and advances it step by step to the end,
stopping early when all of them are cancelled. A seeded job runs alone, a run per row one
after another, except where its decoder gives each row a generator of its own in one run
(every built-in decoder in float32: ``Engine(seeds_in_one_run=...)``): then its rows run
as one run (slices of ``max_batch`` rows), each drawing what it draws alone, and queued
seeded jobs of the same settings but their seeds share that run (``Job._row_seeds``: batch
key ``seeded``). A queued request that runs alone stops later requests from joining until it
has run, so nothing waits forever.

Rows kept apart: a row its decoder keeps apart (a prompt of [MASK]s alone, a [MASK] in a
prompt under a KV cache: ``Engine(row_runs=...)``, ``unmask.api.row_runs``, the grouping of
``unmask generate``) is a part of its own that runs alone once the batch has drained, after
the job's other rows (one run, or a run each); identical such rows of a run that draws
nothing run once. Such a job shares no run with other jobs.

Groups: a LLaDA 2.x request of prompts of unequal lengths modulo the block (``Job.groups``,
``unmask.api.block_groups``) is split group by group, each group's rows as a job of their
own (its config, its rows' seeds): its parts run one after another, as ``api.generate``'s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import threading
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.model import NonFiniteOutput, nonfinite_error
from unmask.sampling.protocol import DecoderRun, RowRuns, ViewCallback, step_together
from unmask.sampling.stops import TextEnd
from unmask.server.metrics import Metrics

StepSink = Callable[[int, list[list[int]]], None]
"""``sink(step, region_ids)``: after each step, the job's rows of the generation region
(``mask_id`` where still masked). Called on the worker thread: keep it cheap."""

StartRun = Callable[..., DecoderRun]
"""``start_run(rows, config, *, step_callback) -> run``: the decoder run for one batch of
prompt ids (``functools.partial(unmask.api.start, loaded)``); raises ``UserError`` for
settings the checkpoint cannot do. ``step_callback(step, view (B, G))`` after every step.
Called with ``seeds=`` (one per row: ``unmask.api.start``) only where ``SeedsInOneRun``
says the run can take them, and with ``stop=`` (a ``TextEnd`` or None per row) only where a
job has stop sequences (``Job.text_end``)."""

SeedsInOneRun = Callable[..., bool]
"""``seeds_in_one_run(config, *, rows=None)``: whether rows seeded one seed each run as one
batched run with a generator per row (``unmask.api.seeds_in_one_run``: every built-in decoder
in float32), not a run per row; with ``rows`` (prompt ids), for those rows (the commit loop
keeps a run per row beside a prompt of [MASK]s alone or a [MASK] in a prompt under a KV
cache, and such a job shares no run with other jobs)."""

RowRunsOf = Callable[..., "RowRuns | None"]
"""``row_runs(config, rows, *, seeded) -> RowRuns | None``: how a job's rows run
(``unmask.api.row_runs``, the rule of ``unmask generate``): each row the decoder keeps
apart (a prompt of [MASK]s alone, a [MASK] in a prompt under a KV cache) a run of its own,
alone on the worker (it writes what it writes alone, and the rows beside it too), once for
its identical rows where the run draws nothing; the other rows as without one. None: the
settings are refused (the run says so)."""

_ids = itertools.count()


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already."""


class Cancelled(Exception):
    """The job was cancelled before it finished."""


class WorkerDown(RuntimeError):
    """The model worker has stopped (an error nothing caught, or the engine was closed): no
    job would run, so one is refused at once rather than left to wait for its timeout."""

    def __init__(self, message: str = "the model worker has stopped") -> None:
        super().__init__(message)


@dataclass
class GenOutput:
    """What a generation job resolves to."""

    gen_ids: list[list[int]]
    """Generation region per row (EOS and after included; ``pad_id`` after EOS for causal
    models)."""
    nfe: int
    """Forward passes this job took part in."""
    steps: int
    batch_rows: int
    """Most rows (its own included) in a forward pass this job took part in."""
    prompt_ids: list[list[int]] = field(default_factory=list)
    """Each row's prompt as the run left it (a ``[MASK]`` in it filled), padding dropped."""


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
    """Whether a whole-batch run may include other jobs (False for seeded sampling there: it
    shares a run with other seeded jobs only where each row has a generator of its own,
    ``Job._row_seeds``)."""
    seeds: list[int | None] | None = None
    """Per-row seeds (``unmask.api.row_seeds``): each row then draws from its own generator
    (seeded ``seeds[i]``), so its text depends on its seed only, not on the rows beside it: a
    run per row, or one run of a generator per row where the decoder has that
    (``Engine.seeds_in_one_run``); None: the rows share one run (and ``config.seed``)."""
    block_tail: int | None = None
    """How far into its last block each prompt ends on a checkpoint whose blocks start at the
    first prompt token (``unmask.api.block_tail``, LLaDA 2.x; one for all the job's rows):
    jobs share a whole-batch run only where it is equal, as its decoder needs. Two requests
    of unequal prompt lengths modulo the block that arrived together were both refused (a
    400 naming lengths that neither sent). None: any lengths batch."""
    groups: list[tuple[list[int], SampleConfig]] | None = None
    """The rows (indices) of each run and its config where one run cannot take them all: a
    LLaDA 2.x request of prompts of unequal lengths modulo the block (``api.block_groups``),
    decoded group after group as ``unmask.api.generate`` does, each row writing what it writes
    alone (they were a 400). Such a job shares no run with other jobs. None: one config."""
    text_end: TextEnd | None = None
    """How each row's text ends besides EOS (its ``stop`` sequences: ``unmask.api.start``'s
    ``stop``): a run finishes a row whose text a stop sequence is sure to cut, and stops once
    every row has ended. None: EOS alone."""
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    id: int = field(default_factory=lambda: next(_ids))
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _row_seeds: list[int] | None = field(default=None, repr=False)
    """Every row's seed (``seeds``, or ``config.seed`` for a seeded job of one row) where the
    engine runs seeded rows as one run of a generator per row (``Engine._split``,
    ``seeds_in_one_run``): such jobs share a whole-batch run, each row drawing what it draws
    alone; None elsewhere."""
    _parts: list[_Part] = field(default_factory=list, repr=False)
    """The runs the rows are split into (``Engine._split``, at ``submit``)."""
    _same: list[int] | None = field(default=None, repr=False)
    """Per row, the row whose part writes its text (``RowRuns.same``: an identical row kept
    apart of a run that draws nothing runs once); None: every row its own."""
    _next: int = 0
    """Parts started so far (a job leaves the queue once all have)."""
    _done: int = 0
    _gen: list[list[int]] = field(default_factory=list, repr=False)
    _prompts: list[list[int]] = field(default_factory=list, repr=False)
    _nfe: int = 0
    _steps: int = 0
    _batch_rows: int = 0
    _view: list[list[int]] | None = field(default=None, repr=False)
    """The rows of every part as they stand (a job of several parts)."""
    _viewed: bool = False
    """A part stepped since the sink last saw ``_view`` (``Engine._show``)."""
    _shown: int = 0
    """Steps the sink was shown (a job of several parts): its step numbers rise by one."""
    _waited: bool = False
    """Queued while the worker ran others (``Engine.submit``: a batch stepping, a run alone),
    or left in the queue as it started or stepped others (``Engine._take``): it has waited
    already, so the worker starts it without ``batch_wait_s`` (``_loop``)."""

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def _pieced(self) -> bool:
        """Whether no one run writes all its rows (several parts, or copies of a row)."""
        return len(self._parts) > 1 or self._same is not None

    def batch_key(self) -> Hashable:
        """Jobs with equal keys may share one whole-batch run: unseeded ones (or seeded ones
        that draw nothing) of the same settings, and seeded ones of the same settings but their
        seeds whose rows each draw from a generator of their own in one run (``_row_seeds``)."""
        if (self.fn is not None or self.config is None or len(self._parts) > 1
                or any(p.alone for p in self._parts)):
            return ("alone", self.id)
        shape = (dataclasses.astuple(dataclasses.replace(self.config, seed=None)),
                 self.block_tail)
        if self._row_seeds is not None:
            return ("seeded", shape)
        if not self.batchable or self.seeds is not None:
            return ("alone", self.id)
        return ("generate", shape)

    def cancel(self) -> None:
        """Stop this job: skipped if queued, dropped from a continuous batch at the next step."""
        self._cancelled.set()

    def _release(self, _: concurrent.futures.Future | None = None) -> None:
        """Drop the decoder runs of the job's parts once it is answered (its future resolved,
        whatever way; ``Engine.submit`` registers this): a finished run keeps its canvas, KV
        cache and (B, L, V) logits buffer, and the job outlives its answer, in the worker's
        locals while it idles and, a job and its parts referring to each other, until a
        garbage collection. A run still stepping in the batch is held by the batch
        (``_Running``) until it leaves."""
        for part in self._parts:
            part.run = None


@dataclass(eq=False)
class _Part:
    """Some rows of a job, run as one decoder run (``Engine._split``)."""

    job: Job
    index: list[int]
    """The job's row index of each row."""
    rows: list[list[int]]
    config: SampleConfig
    run: DecoderRun | None = None
    seeds: list[int] | None = None
    """Row i's seed, each row drawing from a generator of its own in one run (``_split``)."""
    alone: bool = False
    """A row the decoder keeps apart (``RowRunsOf``): it runs alone on the worker, with no
    other part in its forward passes."""


def _stops(jobs: list[Job]) -> dict[str, Any]:
    """``start_run``'s ``stop`` for rows of ``jobs`` (one job a row): each row's
    ``Job.text_end``; ``{}`` where no job has one (a ``start_run`` that takes no ``stop``)."""
    if all(j.text_end is None for j in jobs):
        return {}
    return {"stop": [j.text_end for j in jobs]}


def _claim(fut: concurrent.futures.Future) -> bool:
    """Mark a job's future running as its work starts; False where it has ended already:
    cancelled, or resolved by ``Engine.cancel`` or ``close`` (its client gone, its time out) in
    the moment its work was handed out (``_take`` -> ``_start``), where
    ``set_running_or_notify_cancel`` raises (it ended the worker thread: every later request
    a 503). ``done`` first: that call logs a CRITICAL line before it raises."""
    if fut.done():
        return False
    try:
        return fut.set_running_or_notify_cancel()
    except RuntimeError:  # finished in between: "Future in unexpected state"
        return False


def _resolve(
    fut: concurrent.futures.Future, result: Any = None, exc: BaseException | None = None
) -> None:
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except concurrent.futures.InvalidStateError:  # the waiter cancelled it
        pass


def _bare(e: BaseException) -> BaseException:
    """``e`` as the worker hands it to requests: without its traceback, nor those of the errors
    it was raised from or in. A request's future holds its error as long as its job lives (in
    the worker's locals until the next request), a traceback holds its frames, each frame its
    caller (``f_back``) and their locals: the failed decoder run, its canvas, KV cache and
    (B, L, V) logits buffer (a CUDA out-of-memory error kept them while the worker idled).
    An unexpected error (a bug, an out-of-memory error) keeps its traceback as text, which
    holds no frame, for the log's 500 line (``worker_traceback``, ``plumbing.job_failure``).
    Once, before ``e`` is in any future: the event loop adds its own frames to it as it
    raises it."""
    if not isinstance(e, (UserError, Cancelled)):  # a bug, an out-of-memory error: the log's
        # traceback (``worker_traceback``), as text, which holds no frame
        e._worker_traceback = "".join(traceback.format_exception(e))  # type: ignore[union-attr]
    todo, seen = [e], set()
    while todo:
        x = todo.pop()
        if id(x) not in seen:
            seen.add(id(x))
            x.with_traceback(None)
            todo += [c for c in (x.__cause__, x.__context__) if c is not None]
    return e


def worker_traceback(e: BaseException) -> str | None:
    """The traceback of a job's unexpected error as the worker caught it (``_bare``), once:
    None after the first call (every job of a failed batch holds the same error)."""
    return e.__dict__.pop("_worker_traceback", None)


@dataclass(eq=False)
class _Running:
    """A part of a job in the continuous batch."""

    part: _Part
    run: DecoderRun

    @property
    def job(self) -> Job:
        return self.part.job



def _seeds_each(job: Job) -> list[int]:
    """A seeded job's seed per row: its ``seeds``, else its config's ``seed`` for every row."""
    if job.seeds is not None:
        return list(job.seeds)
    return cast("list[int]", [cast(SampleConfig, job.config).seed] * len(job.rows))


class _Counting(threading.local):
    """The count the forwards of this thread go to (``ForwardCount.counting``); None: none."""

    count: ForwardCount | None = None


_COUNTING = _Counting()
_HOOKED = "_unmask_forward_hook"


def _seen(module: torch.nn.Module, *_: Any) -> None:
    """The forward hook: a forward of the model adds one to the count of the thread that ran
    it, if that thread counts (torch.compile traces it: no graph break, no recompile)."""
    count = _COUNTING.count
    if count is not None and count.model is module:
        count.n += 1


class ForwardCount:
    """The forward passes of a worker's jobs that run alone (``Job.fn``: infill, forms, edit,
    structured output) so far (``n``), counted by a forward hook on the model: what such a
    job adds to the ``nfe`` metric when it ends, the forwards of a job cancelled or failed
    part way included (its result, which counts them too, never comes). One per engine
    (``on``), counting only the forwards its worker thread runs in ``counting``: two apps on
    one model, or a closed app's worker still finishing beside its successor's, never count
    each other's forwards, and only that one thread writes ``n``."""

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        self.n, self.model = 0, model

    @classmethod
    def on(cls, model: torch.nn.Module) -> ForwardCount:
        """A new count of ``model``'s forwards. The hook is registered once per model, before
        a compiled twin (``compile_for_decoding``) traces it, and serves every count."""
        if not model.__dict__.get(_HOOKED):
            model.register_forward_hook(_seen)
            model.__dict__[_HOOKED] = True
        return cls(model)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count the forwards of this count's model (``on``) that this thread runs in the block."""
        before, _COUNTING.count = _COUNTING.count, self
        try:
            yield
        finally:
            _COUNTING.count = before


class Engine:
    """The model worker: ``submit`` jobs, get ``concurrent.futures.Future`` s back.

    ``start_run(rows, config, *, step_callback) -> run`` starts the decoder run of a job
    (``functools.partial(unmask.api.start, loaded)``); runs that ``shares_forward`` join the
    continuous batch, the others run alone, ``advance()`` by ``advance()`` (see the module
    docstring). ``seeds_in_one_run(config, rows=)`` (``SeedsInOneRun``; None: never): whether
    a seeded job's rows run as one run, ``start_run(..., seeds=)``, not a run per row.
    ``row_runs(config, rows, seeded=)`` (``RowRunsOf``; None: no row kept apart): the rows a
    decoder keeps apart, each a part that runs alone. ``forwards`` (``ForwardCount.on(model)``;
    None: a count of no model, which no hook feeds): the forwards of the jobs that run alone,
    added to the ``nfe`` metric when each ends.
    """

    def __init__(
        self,
        start_run: StartRun,
        *,
        max_batch: int = 8,
        max_queue: int = 64,
        batch_wait_s: float = 0.0,
        metrics: Metrics | None = None,
        seeds_in_one_run: SeedsInOneRun | None = None,
        row_runs: RowRunsOf | None = None,
        forwards: ForwardCount | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.start_run = start_run
        self.seeds_in_one_run = seeds_in_one_run
        self.row_runs = row_runs
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics or Metrics()
        self.forwards = forwards if forwards is not None else ForwardCount()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._running = 0
        self._rows = 0
        self._whole: list[Job] = []
        """The jobs of the whole-batch run under way (``close`` cancels them)."""
        self._handing = False
        """``_take`` handed work out that the gauges do not count yet (``submit``: a job
        queued in that moment waits behind it, as behind a counted run)."""

    # -- the caller's side -------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (not yet picked by the worker)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Jobs the worker is running now."""
        return self._running

    @property
    def active_rows(self) -> int:
        """Rows of the jobs the worker is running now."""
        return self._rows

    @property
    def alive(self) -> bool:
        """Whether the worker can run jobs: not started yet (the first ``submit`` starts it),
        or running. False once it has died of an error nothing caught (every job would then
        wait for its timeout) or the engine is closed."""
        thread = self._thread
        return not self._stop and (thread is None or thread.is_alive())

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue ``job``; raises ``QueueFull`` when ``max_queue`` jobs wait already, and
        ``WorkerDown`` once the worker has stopped (``alive`` False): it would wait forever."""
        job._parts = self._split(job)
        job.future.add_done_callback(job._release)
        with self._cond:
            if not self.alive:
                raise WorkerDown()
            if len(self._queue) >= self.max_queue:
                raise QueueFull
            self._queue.append(job)
            # (0 from a run's end on: ``_step``, ``_idle``)
            job._waited = self._running > 0 or self._handing
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="unmask-engine", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return job.future

    def cancel(self, job: Job) -> None:
        """Cancel ``job``: dropped from the queue now, or from the running batch at its next
        step."""
        job.cancel()
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running or finished
        _resolve(job.future, exc=Cancelled())

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker at its next step boundary; queued and running jobs fail with
        ``Cancelled``, a whole-batch run (an infill, a form) included: it ran to its end,
        past ``timeout``, and the process could exit with the worker inside a torch call
        (an abort)."""
        with self._cond:
            self._stop = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancel()
            _resolve(job.future, exc=Cancelled())
        for job in list(self._whole):
            job.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------------

    def _split(self, job: Job) -> list[_Part]:
        """The runs of a generation job: one per row with ``seeds`` (each its own generator)
        unless its decoder gives each row a generator of its own in one run
        (``seeds_in_one_run``), else slices of at most ``max_batch`` rows (a request of more
        rows than ``max_batch`` runs in several runs, as the batch admits them: the operator's
        bound on the rows of one forward holds for a single request too). A row its decoder
        keeps apart (``row_runs``) is a part of its own that runs alone, after the others
        (``unmask generate``'s grouping, so the server writes its text)."""
        if job.config is None or job.fn is not None:
            return []
        if job.groups is not None:
            return self._grouped(job, job.groups)
        seeded = job.seeds is not None or (not job.batchable and job.config.seed is not None)
        runs = None if self.row_runs is None else self.row_runs(
            job.config, job.rows, seeded=seeded)
        if runs is not None and any(runs.apart):
            return self._apart(job, runs, seeded)
        together = seeded and self.seeds_in_one_run is not None and self.seeds_in_one_run(
            job.config, rows=job.rows)
        if together:  # a generator per row: any seeded jobs of these settings may share a run
            job._row_seeds = _seeds_each(job)
        if job.seeds is not None and not together:
            return [_Part(job, [k], [row], dataclasses.replace(job.config, seed=seed))
                    for k, (row, seed) in enumerate(zip(job.rows, job.seeds, strict=True))]
        return self._slices(job, list(range(len(job.rows))), cast("list[int] | None", job.seeds))

    def _grouped(self, job: Job, groups: list[tuple[list[int], SampleConfig]]) -> list[_Part]:
        """The parts of a job in ``groups`` (``Job.groups``): each group's rows split as a job
        of their own (``_split``: its config, its rows' seeds), one group after another."""
        parts: list[_Part] = []
        same = list(range(len(job.rows)))
        for idx, config in groups:
            own = Job(rows=[job.rows[i] for i in idx], config=config, batchable=job.batchable,
                      seeds=None if job.seeds is None else [job.seeds[i] for i in idx])
            parts += [dataclasses.replace(p, job=job, index=[idx[i] for i in p.index])
                      for p in self._split(own)]
            for k, j in enumerate(own._same or ()):  # a copy of a row kept apart
                same[idx[k]] = idx[j]
        job._same = None if same == list(range(len(job.rows))) else same
        return parts

    def _slices(self, job: Job, index: list[int], seeds: list[int] | None) -> list[_Part]:
        """The rows ``index`` of ``job`` as parts of at most ``max_batch`` rows (``seeds``:
        a generator per row, else None)."""
        size = self.max_batch
        return [_Part(job, index[o : o + size], [job.rows[i] for i in index[o : o + size]],
                      cast(SampleConfig, job.config),
                      seeds=None if seeds is None else [seeds[i] for i in index[o : o + size]])
                for o in range(0, max(len(index), 1), size)]

    def _apart(self, job: Job, runs: RowRuns, seeded: bool) -> list[_Part]:
        """The parts of a job holding a row kept apart (``RowRuns``): the groups of
        ``runs``, the shared one in slices of ``max_batch`` rows, a row each seeded with its
        own seed (``seeded``), the rows kept apart marked to run alone."""
        config = cast(SampleConfig, job.config)
        seeds = _seeds_each(job) if seeded else None
        job._same = runs.same
        parts: list[_Part] = []
        for idx in runs.groups:
            if len(idx) > 1:
                parts += self._slices(job, idx, cast("list[int] | None", seeds))
                continue
            i = idx[0]
            one = config if seeds is None else dataclasses.replace(config, seed=seeds[i])
            parts.append(_Part(job, [i], [job.rows[i]], one, alone=runs.apart[i]))
        return parts

    def _sink_callback(self, part: _Part) -> ViewCallback | None:
        """The run's step callback that streams the part's rows to its job's sink. A job of
        several parts keeps every row as they stand (``Job._view``); the sink sees them once
        per forward the job took part in (``_show``), numbered 1, 2, ... over its parts:
        each part showed its own steps, so parts stepped together sent every step once per
        part and parts run one after another sent 1..n again for each."""
        job = part.job
        if job.sink is None:
            return None
        sink = job.sink
        whole = not job._pieced

        def callback(step: int, view: torch.Tensor) -> None:
            if not whole:
                assert job._view is not None
                for i, row in zip(part.index, view.tolist(), strict=True):
                    job._view[i] = row
                if job._same is not None:  # the copies of a row show it
                    job._view[:] = [job._view[j] for j in job._same]
                job._viewed = True
                return
            try:
                sink(step, view.tolist())
            except Exception:  # noqa: BLE001 -- a broken stream must not stop the others
                job.cancel()

        return callback

    @staticmethod
    def _show(job: Job) -> None:
        """Show the sink of a job of several parts its rows, once for the forward its parts
        just made (nothing if none of them stepped)."""
        if job.sink is None or not job._viewed or job._view is None or job.cancelled:
            return
        job._viewed = False
        job._shown += 1
        try:
            job.sink(job._shown, [list(r) for r in job._view])
        except Exception:  # noqa: BLE001 -- a broken stream must not stop the others
            job.cancel()

    def _begin(self, part: _Part) -> DecoderRun:
        """Start ``part``'s run (once); raises the decoder's refusal."""
        if part.run is None:
            view = self._sink_callback(part)
            stop = _stops([part.job] * len(part.rows))
            if part.seeds is None:
                part.run = self.start_run(part.rows, part.config, step_callback=view, **stop)
            else:  # one run, a generator per row
                part.run = self.start_run(part.rows, part.config, step_callback=view,
                                          seeds=part.seeds, **stop)
            job = part.job
            if job._view is None and job.sink is not None and job._pieced:
                blank = part.run.view()[0].tolist()  # the region before any step: every
                job._view = [list(blank) for _ in job.rows]  # row's is the same
        return part.run

    def _kind(self, job: Job) -> str:
        """``join`` (continuous batch), ``alone`` or ``failed`` (its settings were refused:
        the future holds the error). Starts the run of the job's next part the first time."""
        if job.fn is not None or job.config is None:
            return "alone"
        part = job._parts[min(job._next, len(job._parts) - 1)]
        try:
            run = self._begin(part)
        except BaseException as e:  # noqa: BLE001 -- bad settings fail this job only
            self._fail(job, _bare(e))
            return "failed"
        return "join" if run.shares_forward and not part.alone else "alone"

    def _fail(self, job: Job, e: BaseException) -> None:
        """End ``job`` with ``e``: its running parts leave the batch at the next step."""
        job._cancelled.set()
        _resolve(job.future, exc=e)

    def _work(self) -> None:
        """The worker thread: ``_loop``; if that dies of an error nothing caught, every job
        it held or that waits fails at once with ``WorkerDown`` (they waited for their
        timeout, a 504), then the error goes on to ``threading.excepthook`` (logged)."""
        active: list[_Running] = []
        try:
            self._loop(active)
        except BaseException:
            with self._cond:
                self._stop = True  # ``alive`` is False from now: submit refuses
                pending = [*self._queue, *self._whole, *(r.job for r in active)]
                self._queue.clear()
            for job in pending:
                job.cancel()
                _resolve(job.future, exc=WorkerDown())
            self._running = self._rows = 0
            self._handing = False
            raise

    def _loop(self, active: list[_Running]) -> None:
        while True:
            with self._cond:
                while not self._queue and not active and not self._stop:
                    self._cond.wait()
                if self._stop:
                    break
                head = self._queue[0] if not active and self._queue else None
                # a job that others may join: in a whole batch (its key) or in the continuous
                # batch (a seeded sampled request, drawn seed included, steps with any other)
                fresh = head is not None and not head.cancelled and (
                    head.batch_key()[0] != "alone" or self._kind(head) == "join")
                # (one queued while others ran starts at once: it waited already, and
                # waited batch_wait_s more each time a batch or a run alone ended under load)
                if fresh and self.batch_wait_s > 0 and not head._waited:
                    self._gather()
                    if self._stop:
                        break
            joined, whole = self._take(active)
            if whole:
                self._run_whole(whole)
                continue
            running = bool(active)  # requests taken into an idle worker start together:
            for part in joined:  # none of them joined a running batch (all but one counted)
                self._start(part, active, joining=running)
            self._handing = False  # (counted by ``_start`` now)
            self._step(active)
        for r in active:
            r.job.cancel()
            _resolve(r.job.future, exc=Cancelled())
        self._running = self._rows = 0

    def _gather(self) -> None:
        """Let requests that arrive together start together (``batch_wait_s``, under
        ``_cond``): wait until a batch's rows are queued or the engine closes, at most
        ``batch_wait_s`` (a sleep waited it out with a full batch queued, and held ``close``
        for all of it)."""
        self._cond.wait_for(lambda: self._stop or sum(
            len(j.rows) for j in self._queue) >= self.max_batch,
            min(self.batch_wait_s, threading.TIMEOUT_MAX))  # (past it: an OverflowError)

    def _take(self, active: list[_Running]) -> tuple[list[_Part], list[Job]]:
        """(parts that join the continuous batch, a run alone) from the head of the queue.
        A job whose parts do not all fit stays at the head: later jobs wait (first come,
        first served) while its parts join as rows free up."""
        rows = sum(len(r.part.rows) for r in active)
        joined: list[_Part] = []
        dropped: list[Job] = []
        whole: list[Job] = []
        with self._cond:
            while self._queue:
                job = self._queue[0]
                if job.cancelled:
                    dropped.append(self._queue.popleft())
                    continue
                kind = self._kind(job)
                if kind == "failed":
                    self._queue.popleft()
                elif kind == "join":
                    while job._next < len(job._parts):
                        part = job._parts[job._next]
                        if part.alone or (active or joined) and (
                                rows + len(part.rows) > self.max_batch):
                            break  # a part kept apart runs once the batch has drained
                        try:
                            self._begin(part)
                        except BaseException as e:  # noqa: BLE001 -- fails this job only
                            self._fail(job, _bare(e))
                            break
                        joined.append(part)
                        rows += len(part.rows)
                        job._next += 1
                    if job._next < len(job._parts) and not job.cancelled:
                        break  # first come, first served: later jobs wait too
                    self._queue.popleft()
                else:
                    if not active and not joined:  # runs alone wait for the batch to drain
                        whole = self._take_whole()
                    break
            for job in self._queue:  # left behind others: no batch_wait_s for them later
                job._waited = True
            self._handing = bool(joined or whole)
        for job in dropped:
            _resolve(job.future, exc=Cancelled())
        return joined, whole  # (``_start`` answers a job cancelled since: Engine.cancel did not)

    def _take_whole(self) -> list[Job]:
        """The head job and its queued peers of the same ``batch_key`` (caller holds the lock)."""
        first = self._queue.popleft()
        key = first.batch_key()
        batch, rows = [first], len(first.rows)
        if key[0] == "alone":
            return batch
        for job in list(self._queue):
            if rows + len(job.rows) > self.max_batch:
                continue
            if not job.cancelled and job.batch_key() == key and self._kind(job) == "alone":
                self._queue.remove(job)
                batch.append(job)
                rows += len(job.rows)
        return batch

    def _start(self, part: _Part, active: list[_Running], *, joining: bool) -> None:
        # the run read once, first: ``Engine.cancel`` on the event loop answers a job still
        # queued for its other slices at any moment, and its ``Job._release`` drops the run
        job, run = part.job, part.run
        if part is job._parts[0] and not _claim(job.future):
            job.cancel()
        if job.cancelled or run is None:
            _resolve(job.future, exc=Cancelled())
            return
        active.append(_Running(part, run))
        if joining and part is job._parts[0]:
            self.metrics.inc("joined")
        self._count(active)

    def _count(self, active: list[_Running]) -> None:
        self._running = len({id(r.job) for r in active})
        self._rows = sum(len(r.part.rows) for r in active)

    def _finish(self, part: _Part, result: Any, steps: int, batch_rows: int) -> None:
        """Record a finished part; the job's future resolves with its last part."""
        job = part.job
        if not job._gen:
            job._gen = [[] for _ in job.rows]
            job._prompts = [[] for _ in job.rows]
        for i, gen, prompt in zip(part.index, result.gen_ids, result.prompt_ids, strict=True):
            job._gen[i], job._prompts[i] = gen, prompt
        job._steps = max(job._steps, steps)
        job._batch_rows = max(job._batch_rows, batch_rows)
        job._done += 1
        if job._done == len(job._parts):
            if job._same is not None:  # a row kept apart ran once for its copies
                job._gen = [list(job._gen[j]) for j in job._same]
                job._prompts = [list(job._prompts[j]) for j in job._same]
            _resolve(job.future, GenOutput(gen_ids=job._gen, prompt_ids=job._prompts,
                                           nfe=job._nfe, steps=job._steps,
                                           batch_rows=job._batch_rows))

    def _step(self, active: list[_Running]) -> None:
        """One step boundary of the continuous batch: drop the cancelled, step, release the done."""
        gone = [r for r in active if r.job.cancelled]
        for r in gone:
            active.remove(r)
        self._count(active)
        for r in gone:
            _resolve(r.job.future, exc=Cancelled())
        if not active:
            return
        rows = self._rows
        failed: dict[DecoderRun, BaseException] = {}  # a run's own error fails its job only
        before = {id(r): r.run.nfe for r in active}
        try:
            forward = step_together([r.run for r in active], on_error=failed.__setitem__)
        except BaseException as e:  # noqa: BLE001 -- every job of the forward gets the error
            e = _bare(e)
            ended = [r.job for r in active]
            active.clear()
            self._count(active)
            for job in ended:  # and ends: its slices not yet started leave the queue (they
                # ran to their end for an answer already sent, ahead of the others)
                self._fail(job, Cancelled() if job.cancelled else e)
                self._unqueue(job)
            return
        if forward:
            self.metrics.inc("nfe")
            self.metrics.inc("forward_rows", forward)
        jobs = {id(r.job): r.job for r in active}
        for job in jobs.values():
            self._show(job)
        for key, job in jobs.items():  # forwards a job took part in (its parts share them)
            mine = [r for r in active if id(r.job) == key]
            job._nfe += max(r.run.nfe - before[id(r)] for r in mine)
            job._batch_rows = max(job._batch_rows, rows)
        ended = [r for r in active if r.run in failed or r.run.done]
        for r in ended:  # the gauges leave them before their futures resolve (a client that
            active.remove(r)  # has its answer reads them gone, and a request it sends next
        self._count(active)  # finds the worker free: ``submit``)
        for r in ended:
            run = r.run
            if run in failed:
                self._fail(r.job, _bare(failed[run]))
                self._unqueue(r.job)
            elif run.done:
                try:  # its own failure fails its job only: raised here, it ended the worker
                    # thread, and every request after it waited for its timeout
                    result = run.result()
                except Exception as e:  # noqa: BLE001 -- reported to the request
                    self._fail(r.job, _bare(e))
                    self._unqueue(r.job)
                    continue
                if r.job.cancelled:  # (its last part off the queue: Engine.cancel did not)
                    _resolve(r.job.future, exc=Cancelled())
                else:
                    self._finish(r.part, result, run.steps, rows)

    def _unqueue(self, job: Job) -> None:
        """Take a failed job's parts not yet started off the queue."""
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                pass

    def _run_whole(self, batch: list[Job]) -> None:
        live = [j for j in batch if not j.cancelled and (  # its parts may have run already
            j.future.running() or _claim(j.future))]
        for j in batch:
            if j not in live:
                _resolve(j.future, exc=Cancelled())
        self._running, self._rows = len(live), sum(len(j.rows) for j in live)
        self._handing = False
        if not live:
            return
        self._whole = live
        if self._stop:  # closed while these were taken from the queue
            for j in live:
                j.cancel()
        try:
            self._run(live)
        finally:
            self._idle()

    def _idle(self) -> None:
        """The whole-batch run is over: the gauges read idle before its futures resolve, so a
        client that has its answer reads ``in_flight`` 0 (it read 1 for a moment)."""
        self._running = self._rows = 0
        self._whole = []

    def _run(self, batch: list[Job]) -> None:
        if batch[0].fn is not None:
            job = batch[0]
            seen = self.forwards.n
            out, error = None, None
            try:
                with self.forwards.counting():
                    out = job.fn()
            except BaseException as e:  # noqa: BLE001 -- reported to the request, the worker lives on
                error = _bare(e)
            # its forwards, answered or not: a client that left mid-way had them run all the same
            self.metrics.inc("nfe", self.forwards.n - seen)
            self._idle()
            _resolve(job.future, out, exc=error)
            return
        if len(batch) == 1:  # its parts one after another (one run: its rows together)
            job = batch[0]
            try:
                for part in job._parts[job._next:]:  # those not run in the batch already
                    run = self._begin(part)
                    self._advance(run, [job], len(part.rows))
                    job._nfe += run.nfe
                    result = run.result()
                    if part is job._parts[-1]:
                        self._idle()
                    self._finish(part, result, run.steps, len(part.rows))
            except BaseException as e:  # noqa: BLE001 -- reported to the request
                self._idle()
                _resolve(job.future, exc=Cancelled() if job.cancelled else _bare(e))
            return
        rows = [r for j in batch for r in j.rows]
        offsets = list(itertools.accumulate([0] + [len(j.rows) for j in batch]))
        started: list[DecoderRun] = []  # the run, once started (``on_view`` reads its flags)
        shown: set[int] = set()  # the jobs whose stream was sent a step of this run

        def bad(counts: list[int], j: Job, o: int) -> int:
            """Forwards in which a row of ``j`` went NaN (the most of any of its rows)."""
            return max(counts[o : o + len(j.rows)], default=0) if counts else 0

        def flagged() -> list[int]:
            """Per row, the forwards of the run so far in which it went NaN (``take_rows``;
            [] before the run started or before its first forward was handed out)."""
            flags = started[0].take_rows() if started else None
            return [] if flags is None else flags.tolist()

        def on_view(step: int, view: torch.Tensor) -> None:
            sinks = [
                (j, o)
                for j, o in zip(batch, offsets, strict=False)
                if j.sink is not None and not j.cancelled
            ]
            if not sinks:
                return
            ids = view.tolist()
            counts = flagged()  # checked before shown
            for j, o in sinks:
                if bad(counts, j, o):
                    continue  # its rows went NaN: never shown, it fails at the end
                shown.add(j.id)
                try:
                    j.sink(step, ids[o : o + len(j.rows)])  # type: ignore[misc]
                except Exception:  # noqa: BLE001 -- a broken stream must not stop the others
                    j.cancel()

        seeds: dict[str, list[int]] = {}  # seeded jobs: a generator per row, seeded as alone
        if batch[0]._row_seeds is not None:
            seeds["seeds"] = [s for j in batch for s in cast("list[int]", j._row_seeds)]
        streams = any(j.sink is not None for j in batch)
        try:  # one run over the rows of every job of the batch
            run = self.start_run(rows, batch[0].config,  # type: ignore[arg-type]
                                 step_callback=on_view if streams else None, **seeds,
                                 **_stops([j for j in batch for _ in j.rows]))
            run.watch_rows()  # a job whose rows go NaN fails alone, the others go on
            started.append(run)
            self._advance(run, batch, len(rows))
            result = run.result()
            gen, prompts = result.gen_ids, result.prompt_ids
            counts = flagged()
            started.clear()  # (the run's ``on_view`` reads it: a cycle that held the run)
        except BaseException as e:  # noqa: BLE001 -- every job of the batch gets the error
            e = _bare(e)
            self._idle()
            # NaN in a forward the run could not hand out row by row (not one of B rows: a
            # guided forward of 2B): the jobs not flagged nor streamed yet run again alone
            again = isinstance(e, NonFiniteOutput) and bool(started)
            counts = flagged() if again else []
            started.clear()
            for j, o in zip(batch, offsets, strict=False):
                if again and j.id not in shown and not j.cancelled and not bad(counts, j, o):
                    self._again_alone(j)
                else:
                    _resolve(j.future, exc=Cancelled() if j.cancelled else e)
            return
        self._idle()
        for j, o in zip(batch, offsets, strict=False):
            n = bad(counts, j, o)
            if n:
                _resolve(j.future, exc=nonfinite_error(run.model, n))
                continue
            _resolve(
                j.future,
                GenOutput(
                    gen_ids=gen[o : o + len(j.rows)],
                    prompt_ids=prompts[o : o + len(j.rows)],
                    nfe=run.nfe,
                    steps=run.steps,
                    batch_rows=len(rows),
                ),
            )

    def _again_alone(self, job: Job) -> None:
        """Run ``job`` again alone after the whole-batch run it shared went NaN or infinite in
        a forward that could not be handed out row by row (``_run``): a fresh run, whose NaN
        watch starts at its own first forward, so only the job whose rows go NaN fails again."""
        for part in job._parts:
            part.run = None  # begun before the shared run: its watch would count that run
        self._run_whole([job])

    def _advance(self, run: DecoderRun, batch: list[Job], rows: int) -> None:
        """Advance a run alone to its end; ``Cancelled`` once every job of ``batch`` is."""
        while not run.done:
            if all(j.cancelled for j in batch):
                raise Cancelled
            nfe = run.nfe
            try:
                run.advance()
                run.take_rows()  # this step's NaN rows answer for their own job only
            finally:  # a step that raised (its check) made its forwards all the same
                self.metrics.inc("nfe", run.nfe - nfe)
                self.metrics.inc("forward_rows", (run.nfe - nfe) * rows)
            for job in batch:
                self._show(job)
