"""The decoder protocol: one decoding run as a state object, and what is written once over it.

Every decoder (the LLaDA loop, BD3-LM blocks, SEDD, AR with a KV cache, and the ones to
come) starts a ``DecoderRun`` for a batch of prompts and steps it until ``done``:

- ``advance()``: one step on its own (the run calls its model, or skips an empty step);
- ``shares_forward``: whether the run's steps can share one forward pass with other runs
  of the same model (continuous batching); then ``needs_model``, ``model_inputs()``,
  ``step(logits)`` and ``skip()`` let ``step_together`` drive many runs with one forward;
- ``view()``: the (B, G) generation region as it stands, ``mask_id`` where nothing is
  committed yet, always ``G = gen_length`` wide (what the live view, the server's stream and
  the engine show); ``on_view(step, view)`` is called after every step;
- ``nfe`` (model calls), ``steps``, ``done``, ``result()`` (a ``GenerateResult``).

Written once over the protocol: ``run()`` (advance until done), ``step_together``
(continuous batching), ``rows_finished`` (stopping at EOS; ``stopped_rows`` at a stop
sequence), the live-view and NFE
bookkeeping of the callers (``unmask.api``, the server's ``Engine``).

Inside: ``MaskPredictor``, ``StepCallback``, ``ViewCallback``, ``GenerateResult``,
``DecoderRun``, ``step_together``, ``StepError``, ``RowRuns``, ``rows_finished``,
``committed_lengths``, ``cut_at_eos``, ``decode_generations``, ``make_generator``, ``model_device``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from unmask.errors import UserError
from unmask.sampling.cache import call_model, shift_logits

MaskPredictor = Callable[..., Any]
"""Any callable ``model(tokens (B, L), attention_mask=(B, L) bool | None) -> logits (B, L, V)``
(or an object with ``.logits``, as Hugging Face models return). The ``prefix``/``dual``
caches also need ``cache=`` and ``start=`` keywords (``unmask.model.Transformer``)."""

StepCallback = Callable[[int, Tensor], None]
"""``callback(step, tokens)``: after each step, ``step`` = steps done so far (1-based) and
``tokens`` the (B, L) canvas. Do not modify ``tokens``."""

ViewCallback = Callable[[int, Tensor], None]
"""``on_view(step, view)``: after each step, the (B, gen_length) generation region
(``mask_id`` where nothing is committed yet). Do not modify ``view``."""


def cut_at_eos(ids: Sequence[int], eos_id: int | None) -> list[int]:
    """``ids`` (ints, or a 1-D tensor's items) up to (not including) the first ``eos_id``."""
    ids = [int(t) for t in ids]
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id)]
    return ids


def decode_generations(
    gen_ids: Sequence[Sequence[int]], tokenizer: Any, eos_id: int | None
) -> list[str]:
    """Text of each row of generated ids, cut at the first EOS (special tokens skipped)."""
    return [tokenizer.decode(cut_at_eos(ids, eos_id)) for ids in gen_ids]


@dataclass
class GenerateResult:
    """What every decoder's run returns (``DecoderRun.result()``)."""

    tokens: Tensor
    """(B, L) final canvas (prompt, padding and generation region)."""
    region: tuple[int, int]
    """[start, end) columns of the generation region."""
    nfe: int
    """Number of function (model) evaluations; with guidance one doubled batch counts as 1,
    and a cached call over a few positions counts as 1 too."""
    steps: int
    """Denoising steps run (skipped empty steps included)."""
    eos_id: int | None = None
    """EOS id used to cut the texts (``texts``)."""
    history: list[Tensor] | None = None
    """(B, L) canvases after every step, when asked for (``return_history=True``)."""
    attention_mask: Tensor | None = field(default=None, repr=False)
    """(B, L) bool padding mask of the canvas (True = real token), None if unpadded."""
    segments: list[GenerateResult] | None = field(default=None, repr=False)
    """With ``SampleConfig.segment_length``: each segment's own result (its rows are the
    rows still running when it began; ``unmask.sampling.segments``); None otherwise."""
    runs: list[GenerateResult] | None = field(default=None, repr=False)
    """A result joined from several runs (``unmask.api``: rows run apart, prompts decoded in
    groups): each run's own result, over its own rows; None: one run."""
    ended_at: int | None = None
    """The column at which a generation stopped because every row had ended (EOS in the
    finished blocks; the commit loop, ``Denoiser``): the region after it holds the EOS it
    was filled with, which no step decoded. None: it ran to the region's end."""

    @property
    def gen_ids(self) -> list[list[int]]:
        """Ids of the generation region, one list per row (EOS and anything after included)."""
        start, end = self.region
        return self.tokens[:, start:end].tolist()

    @property
    def prompt_ids(self) -> list[list[int]]:
        """The prompt of each row as it ended (a ``[MASK]`` written in it filled), padding
        dropped."""
        start = self.region[0]
        rows = self.tokens[:, :start]  # (B, P)
        if self.attention_mask is None:
            return rows.tolist()
        real = self.attention_mask[:, :start]  # (B, P)
        return [r[m].tolist() for r, m in zip(rows, real, strict=True)]

    def texts(self, tokenizer: Any) -> list[str]:
        """Generated text per row, cut at the first EOS (``decode_generations``)."""
        return decode_generations(self.gen_ids, tokenizer, self.eos_id)


def model_device(model: Any) -> torch.device | None:
    """The device of ``model``'s first parameter (None for a parameterless test double)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return None


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A generator seeded with ``seed`` on ``device``; None (global RNG) when seed is None."""
    if seed is None:
        return None
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except (ValueError, RuntimeError, OverflowError):  # beyond torch's 64 bits
        raise UserError(f"seed must be from 0 to 2**63 - 1, got {seed}") from None


def rows_finished(ids: Tensor, eos_id: int | None) -> Tensor:
    """(B,) bool: rows of ``ids`` (B, N) that hold ``eos_id`` (never, when it is None). Every
    decoder that stops early (BD3-LM after the block with EOS, AR at EOS) asks this."""
    if eos_id is None:
        return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    return (ids == eos_id).any(dim=1)


def committed_lengths(view: Tensor, mask_id: int) -> Tensor:
    """(B,) long: the columns of each row of ``view`` (B, G) before its first ``mask_id`` (G
    where it has none): the prefix a left-to-right check may read as written."""
    open_ = view == mask_id  # (B, G)
    return torch.where(open_.any(dim=1), open_.int().argmax(dim=1), view.shape[1])


class DecoderRun:
    """One decoding run of one batch of prompts (see the module docstring).

    Subclasses set ``model``, ``mask_id``, ``eos_id``, ``gen_length`` and keep ``nfe`` and
    ``steps`` up to date; they implement ``done``, ``advance``, ``view`` and ``result`` (and,
    when ``shares_forward``, ``needs_model``, ``model_inputs``, ``step`` and ``skip``), and
    call ``_report()`` after every step.

    ``advance()``, ``step()`` and ``skip()`` of a run that is ``done`` raise a one-line
    ``UserError`` (a run has no step past its last; check ``done`` first, as ``run()`` and
    ``step_together`` do): written once here for every subclass (``__init_subclass__``), it
    was an ``AssertionError`` from inside the decoder. Written once here too: ``result()``
    raises ``unmask.model.NonFiniteOutput`` (one line) when the run's model gave NaN or
    infinite outputs in the run's forwards (``check_finite``: one device read), and so does
    ``_report()`` before a view is shown (one small read a step where there is an
    ``on_view``; a view that is read waits for the same work, one that is not pays it; a run
    without callbacks reads once, at its result). In a forward shared with other runs
    (``step_together``) only the run's own rows count; a run that ``watch_rows`` is handed
    its rows' flags and leaves them to its caller.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrappers = {"advance": _not_after_done, "step": _not_after_done, "skip": _not_after_done,
                    "__init__": _marking, "result": _finite_result}
        for name, wrap in wrappers.items():
            if name in cls.__dict__:
                setattr(cls, name, wrap(cls.__dict__[name]))

    model: Any
    mask_id: int
    eos_id: int | None
    gen_length: int
    """Width G of ``view()``: the most tokens this run generates per row."""
    nfe: int = 0
    steps: int = 0
    shift: bool = False
    """Whether ``step`` expects logits with Dream's shift applied (``step_together`` does it)."""
    on_view: ViewCallback | None = None
    decoder: str = ""
    """Name of the registered decoder that started this run (set by ``unmask.api.start``)."""
    stop: Callable[[Tensor, Tensor], Tensor] | None = None
    """The rows whose text a stop sequence is sure to end (``unmask.sampling.stops.StopRows``,
    set by ``unmask.api.start``): a left-to-right decoder finishes them as rows that wrote
    EOS (``stopped_rows``); None: EOS alone ends a row."""

    def stopped_rows(self, active: Tensor) -> Tensor:
        """(B,) bool: the rows of ``active`` (B,) whose committed text (``view()``) is sure to
        be cut at a stop sequence (``stop``); none without one. Asked after each step by the
        decoders that stop after EOS, beside ``rows_finished``."""
        if self.stop is None:
            return torch.zeros_like(active)
        return self.stop(self.view(), active).to(active.device)

    @property
    def shares_forward(self) -> bool:
        """Whether ``step_together`` may run this run's model calls in one forward pass with
        other runs of the same model (no per-run cache, no per-run model inputs)."""
        return False

    @property
    def why_alone(self) -> str:
        """Why this run cannot share forward passes (the message of ``step_together``)."""
        return (
            f"{type(self).__name__} cannot share forward passes (a KV cache or model inputs "
            "of its own); run it alone with advance()"
        )

    @property
    def done(self) -> bool:
        raise NotImplementedError

    @property
    def needs_model(self) -> bool:
        """Whether the next step calls the model (False when done or when it may be skipped)."""
        return not self.done

    @property
    def batch_size(self) -> int:
        return int(self.view().shape[0])

    def model_inputs(self) -> tuple[Tensor, Tensor | None]:
        """(tokens (B', L), padding mask or None) of the next forward (``shares_forward`` runs)."""
        raise NotImplementedError(f"{type(self).__name__} does not share forward passes")

    def step(self, logits: Tensor) -> None:
        """One step from the logits of ``model_inputs()`` (``shares_forward`` runs)."""
        raise NotImplementedError(f"{type(self).__name__} does not share forward passes")

    def skip(self) -> None:
        """Take a step that needs no model call (``needs_model`` False, not done)."""
        raise NotImplementedError(f"{type(self).__name__} has no steps to skip")

    def advance(self) -> None:
        """One step on its own (a model call, or a skipped empty step); a ``UserError`` once
        ``done`` (see the class docstring)."""
        raise NotImplementedError

    def view(self) -> Tensor:
        """(B, gen_length) the generation region now, ``mask_id`` where nothing is committed."""
        raise NotImplementedError

    def result(self) -> GenerateResult:
        raise NotImplementedError

    def run(self) -> GenerateResult:
        """Step until done; the result."""
        with torch.no_grad():
            while not self.done:
                self.advance()
        return self.result()

    def check_finite(self) -> None:
        """Raise ``unmask.model.NonFiniteOutput`` (one line) when the model gave NaN or
        infinite outputs in this run's forwards so far (``unmask.model.check_finite``): one
        device read. ``result()`` calls it, and so does ``_report()`` before a view is shown,
        or a step callback of the decoder sees the canvas: garbage was shown before the error
        (a server stream's text, the live view)."""
        from unmask.model import check_finite

        self.take_rows()
        check_finite(getattr(self, "model", None), getattr(self, "_finite_mark", None))

    def watch_rows(self) -> None:
        """Answer for the run's NaN watch row by row from now on (the server's whole-batch run
        of several requests' rows): ``take_rows`` takes each forward's (B,) flags off the
        model's count, so ``check_finite`` and ``result()`` raise only for forwards it could
        not hand out, and the caller fails the requests whose rows were flagged, the others
        going on in the same run (rows of a batch do not mix). On the device, no read."""
        from unmask.model import nonfinite_rows_mark

        self._row_before = nonfinite_rows_mark(getattr(self, "model", None))
        self._row_batch = self.batch_size
        self._row_counts: Tensor | None = None
        self._watching = True

    def take_rows(self) -> Tensor | None:
        """(B,) int64 on the device, for a run that ``watch_rows``: in how many of its forwards
        each row was NaN or infinite so far, the last forward's flags taken off the model's
        count now (``unmask.model.take_nonfinite_rows``; one forward of B rows since the last
        take: a forward it cannot tell, another batch or an earlier one, stays counted and
        fails the run); all zeros when no row was flagged; None before a forward of its own
        was taken, or when the run does not watch its rows. No device read.
        ``check_finite`` calls it; so does the server after every step."""
        if not getattr(self, "_watching", False):
            return None
        from unmask.model import nonfinite_rows_mark, take_nonfinite_rows

        flags = take_nonfinite_rows(self.model, self._row_before, self._row_batch)
        if flags is not None:  # taken off the count: the caller answers for it
            self._row_before = nonfinite_rows_mark(self.model)
            self._row_counts = flags.long() if self._row_counts is None else (
                self._row_counts + flags)
        return self._row_counts

    def _report(self) -> None:
        if self.on_view is not None:
            self.check_finite()  # one small read a step: no garbage view is shown
            self.on_view(self.steps, self.view())


def _not_after_done(method: Callable[..., None]) -> Callable[..., None]:
    """``method`` (a step of a ``DecoderRun``), refusing in one line to step a run that is
    ``done``."""
    if getattr(method, "_checks_done", False):
        return method

    @functools.wraps(method)
    def checked(self: DecoderRun, *args: Any, **kwargs: Any) -> None:
        if self.done:
            raise UserError(f"the run is done ({self.steps} steps): {method.__name__}() has no "
                            "step left; check run.done before stepping, then run.result()")
        method(self, *args, **kwargs)

    checked._checks_done = True  # type: ignore[attr-defined]
    return checked


def _marking(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` (a run's ``__init__``), noting where its model's count of non-finite forwards
    stands (``unmask.model.nonfinite_mark``; no device read) for ``_finite_result``."""

    @functools.wraps(init)
    def marked(self: DecoderRun, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        from unmask.model import nonfinite_mark

        self._finite_mark = nonfinite_mark(getattr(self, "model", None))

    return marked


def _finite_result(result: Callable[[DecoderRun], Any]) -> Callable[[DecoderRun], Any]:
    """``result`` (a run's), raising ``unmask.model.NonFiniteOutput`` in one line when the
    model gave NaN or infinity during the run (``check_finite``: one device read per run,
    none per step); without it the run returned garbage tokens without a word."""

    @functools.wraps(result)
    def checked(self: DecoderRun) -> Any:
        self.check_finite()
        return result(self)

    return checked


def _own_rows_only(runs: Sequence[DecoderRun], sizes: Sequence[int], flags: Tensor) -> None:
    """Hand a shared forward's NaN watch out row by row (``flags`` (N,) bool, taken off the
    model's count: ``unmask.model.take_nonfinite_rows``): a run counts the forward as
    non-finite only where one of its own rows (``sizes``, in order) was. Counted per model,
    one request's NaN row failed every request batched with it, and the requests that waited
    to join. On the device: two small kernels a run, no device read."""
    row = 0
    for r, n in zip(runs, sizes, strict=True):
        mark = getattr(r, "_finite_mark", None)
        if mark is not None:  # its mark moves down: check_finite reads count - mark
            r._finite_mark = mark.add(flags[row : row + n].any(), alpha=-1)
        row += n


StepError = Callable[[DecoderRun, BaseException], None]
"""``on_error(run, exc)``: a run's own step failed (see ``step_together``)."""


class RowRuns(NamedTuple):
    """How the rows of one request run (``unmask.api.row_runs``: ``generate``, ``run_rows``,
    the server's ``Engine``, the task scorer, one rule): ``groups``, the runs as lists of row
    indices (the rows that may share a run first, in order); ``apart``, per row, whether the
    decoder keeps it apart (``Decoder.rows_apart``: it runs alone); ``same``, per row, the
    row whose run writes its text (itself, or an identical row of a run that draws nothing,
    which runs once for all its copies; a row that copies is in no group)."""

    groups: list[list[int]]
    apart: list[bool]
    same: list[int]


def step_together(runs: Sequence[DecoderRun], *, on_error: StepError | None = None) -> int:
    """One step of every run, sharing one forward pass among those that need the model.

    The runs must all ``shares_forward`` and share one model; they may differ in canvas
    length, generation length, steps, policy, temperature and generator. Inputs shorter than
    the longest are left-padded (padding masked out), so each row's logits at its own columns
    are those of the row alone; a row's logits are cut back to its own columns (and shifted,
    for ``logit_shift`` models) before its ``step``. Runs whose next step needs no model call
    skip it instead. Finished runs are left alone. Returns the number of rows in the forward
    (0 = none).

    A failure of the shared forward raises. With ``on_error``, a failure of one run's own
    step (its policy, constraints or step callback) is passed to ``on_error`` instead and the
    others step on; the failed run is left mid-step and must not be stepped again.
    """

    def guarded(r: DecoderRun, fn: Callable[[], Any]) -> bool:
        if on_error is None:
            fn()
            return True
        try:
            fn()
        except Exception as e:  # noqa: BLE001 -- handed to the caller, the others go on
            on_error(r, e)
            return False
        return True

    todo = []
    for r in runs:
        if r.done or (not r.needs_model and not guarded(r, r.skip)):
            continue
        if r.needs_model:
            todo.append(r)
    if not todo:
        return 0
    model = todo[0].model
    if any(r.model is not model for r in todo):
        raise ValueError("step_together needs runs of one model")
    for r in todo:
        if not r.shares_forward:
            raise UserError(r.why_alone)
    from unmask.model import nonfinite_rows_mark, take_nonfinite_rows

    inputs = [r.model_inputs() for r in todo]
    if len(inputs) == 1:
        tokens, attn = inputs[0]
    else:
        L = max(t.shape[1] for t, _ in inputs)
        padded = any(t.shape[1] < L or a is not None for t, a in inputs)
        parts, masks = [], []
        for r, (t, a) in zip(todo, inputs, strict=True):
            pad = L - t.shape[1]
            # any id will do for padding: it is masked out
            parts.append(torch.nn.functional.pad(t, (pad, 0), value=r.mask_id))
            if padded:
                real = torch.ones_like(t, dtype=torch.bool) if a is None else a.bool()
                masks.append(torch.nn.functional.pad(real, (pad, 0), value=False))
        tokens = torch.cat(parts, dim=0)  # (N, L)
        attn = torch.cat(masks, dim=0) if padded else None  # (N, L)
    before = nonfinite_rows_mark(model)
    with torch.no_grad():
        logits = call_model(model, tokens, attn)  # (N, L, V)
    flags = take_nonfinite_rows(model, before, tokens.shape[0])  # (N,) bool or None
    if flags is not None:
        _own_rows_only(todo, [t.shape[0] for t, _ in inputs], flags)
    row = 0
    for r, (t, _) in zip(todo, inputs, strict=True):
        n, length = t.shape
        own = logits[row : row + n, logits.shape[1] - length :]  # (n, length, V)
        row += n
        guarded(r, lambda r=r, own=own: r.step(shift_logits(own) if r.shift else own))
    return tokens.shape[0]


__all__ = [
    "DecoderRun",
    "GenerateResult",
    "MaskPredictor",
    "RowRuns",
    "StepCallback",
    "StepError",
    "ViewCallback",
    "committed_lengths",
    "cut_at_eos",
    "decode_generations",
    "make_generator",
    "model_device",
    "rows_finished",
    "step_together",
]
