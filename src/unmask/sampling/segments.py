"""Generation longer than the model's context: one run in consecutive segments.

A model trained on 256-token rows cannot hold a 512-token canvas (its positions stop at 255,
and a canvas past them is refused). ``SampleConfig.segment_length = n`` asks for the
generation in segments of n tokens (the last one shorter when n does not divide
``gen_length``): segment k is an ordinary run of the checkpoint's own decoder (``ar``,
``llada``, ``bd3lm``, ``speculative``, ``hybrid``, ``sedd``), for the rows still running,
whose prompt is the latest ``limit - length_k`` tokens of that row's prompt and text so far
(a sliding window; for block diffusion cut by whole blocks, so a row keeps its length modulo
the block, and the window is whole blocks). ``limit`` is the model's
``max_seq_len`` (with a drafter, the smaller of the two). Every segment starts afresh: its
decoder's KV cache is filled from the window again (one prefill per segment, the price of a
window that moves), and positions restart at 0, as in training.

- A run whose prompt and ``gen_length`` fit in one segment is the plain run, token for token.
- Segment k's output equals a plain run on that window (tested), with ``seed`` for k = 0
  and a seed derived from it for later segments (``segment_seed``). With ``seeds`` (one per
  row, a decoder with a generator per row) row i's segment k is seeded ``segment_seed(
  seeds[i], k)``: the batch writes, row for row, what each row writes alone in segments
  under ``seed = seeds[i]``, in one run per segment for all rows.
- Steps are split over the segments as over blocks: ``steps × length_k / gen_length`` each,
  which must be whole where the decoder's work is set by them (``Decoder.uses_steps``;
  refused in one line up front, as every length and block rule is).
- A row that writes EOS is finished: later segments leave it out (its columns hold the pad
  id), and the run ends when every row has.
- A stop sequence ends the work too (``stop``: ``unmask.sampling.stops.StopRows`` over the
  whole rows, so a stop that spans two segments is found; each step it reads a row's new
  tokens only, from the committed lengths, not the text so far): a row whose text is sure to be
  cut at one ends as after EOS, inside a segment (its decoder's ``stopped_rows``) and at a
  segment's end, with the same text. Unless a row leaving the batch moves no other row
  (``stop_apart``: the weights decode in float32 or float64, and the rows draw from a
  generator each or draw nothing; else it moves the draws of one shared generator, or the
  rounding of a batch in bfloat16, whose size and left padding change), the rows stop only
  all together: a segment's rows once every one's committed text is sure to end (EOS or a
  stop), the run once every row's has.
- A ``[MASK]`` in a prompt is refused: a window that moves past it would leave it unfilled.

The text after the first window no longer sees the start of the prompt: that is the trade
(docs/sampling.md, "Longer than the context"). A published model's BOS (``prompt_bos_id``)
begins the first window only: a later window is text from the middle of a document, which
no BOS begins in training either.

Inside: ``SegmentedRun``, ``segment_lengths``, ``segment_configs``, ``segment_windows``,
``segment_seed``, ``check_segments``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from unmask.canvas import as_rows, left_pad
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    ViewCallback,
    committed_lengths,
    rows_finished,
)
from unmask.sampling.stops import StopRows

SegmentStarter = Callable[..., DecoderRun]
"""``start(prompt_rows, config, on_view)``: the decoder's run for one segment, reporting to
``on_view`` (``unmask.api.start`` passes the checkpoint's chosen decoder); for a
``SegmentedRun`` given ``seeds``, ``start(prompt_rows, config, on_view, seeds)``: the run in
which row i draws from a generator of its own seeded ``seeds[i]`` (``Decoder.start(...,
seeds=)``, a decoder with ``row_seeds``)."""

def segment_seed(seed: int | None, k: int) -> int | None:
    """The seed of segment ``k``: ``seed`` itself for the first (so one segment is the plain
    run), then a different stream per segment (the same stream again would repeat its
    draws); None stays None."""
    if seed is None or k == 0:
        return seed
    return (seed * 1_000_003 + k) % (1 << 63)


MAX_SEGMENTED_LENGTH = 1 << 20
"""The most tokens one run writes in segments (``gen_length``; 8 MiB of ids a row)."""
MAX_SEGMENTS = 1 << 16
"""The most segments one run has (a config each, made up front: about a second)."""


def segment_lengths(gen_length: int, segment_length: int) -> list[int]:
    """The lengths of the segments of ``gen_length`` tokens: ``segment_length`` each, the
    last one shorter when it does not divide ``gen_length``. Refuses in one line, before
    anything is allocated, more than ``MAX_SEGMENTED_LENGTH`` tokens or ``MAX_SEGMENTS``
    segments."""
    n, G = segment_length, gen_length
    if G > MAX_SEGMENTED_LENGTH:
        raise UserError(
            f"gen_length ({G}) is more than a run writes in segments: at most "
            f"{MAX_SEGMENTED_LENGTH} tokens"
        )
    if n >= 1 and -(-G // n) > MAX_SEGMENTS:
        raise UserError(
            f"gen_length {G} in segments of {n} tokens makes {-(-G // n)} segments, more than "
            f"{MAX_SEGMENTS}: use a segment_length of at least {-(-G // MAX_SEGMENTS)}"
        )
    return [n] * (G // n) + ([G % n] if G % n else [])


def segment_configs(
    config: SampleConfig, *, align: int = 1, uses_steps: bool = True
) -> list[SampleConfig]:
    """The config of each segment of ``config`` (``segment_length`` set): ``gen_length`` =
    the segment's length, ``steps`` its share, ``segment_length`` None, its seed. Refuses in
    one line a split the decoders could not run: lengths not whole blocks (``block_length``,
    or the model's block size ``align``) or, for a decoder whose work ``steps`` sets
    (``uses_steps``: ``Decoder.uses_steps``), steps that do not split evenly."""
    n, G = config.segment_length, config.gen_length
    if n is None:
        raise ValueError("segment_configs needs config.segment_length")
    if G <= 0:
        raise UserError(f"gen_length must be positive, got {G}")
    lengths = segment_lengths(G, n)
    block = config.block_length or align
    if block > 1 and any(length % block for length in lengths):
        # the option to change first (the server names it): the segment's length where it is
        # not whole blocks, else the length it splits
        why = (f"segment_length {n} is not whole blocks of {block}: it splits gen_length {G}"
               if n % block else
               f"gen_length {G} is not whole blocks of {block}: segments of {n} split it")
        raise UserError(
            f"{why} into {_lengths(lengths)} tokens; use a segment_length and gen_length that "
            f"are multiples of {block}"
        )
    need = math.lcm(*(G // math.gcd(G, length) for length in lengths))
    if config.steps % need and uses_steps:
        raise UserError(
            f"steps ({config.steps}) do not split evenly over segments of {_lengths(lengths)} "
            f"tokens (gen_length {G}); use steps = gen_length or a multiple of {need}"
        )
    return [
        dataclasses.replace(
            config, gen_length=length, steps=max(1, config.steps * length // G),
            segment_length=None, seed=segment_seed(config.seed, k),
        )
        for k, length in enumerate(lengths)
    ]


def _lengths(lengths: Sequence[int]) -> str:
    """The segment lengths for a message: "3 x 32", "4 x 12 + 2", "12 + 2", "12"."""
    n, last = len(lengths), lengths[-1]
    if n > 1 and last == lengths[0]:  # every segment full
        return f"{n} x {last}"
    if n > 2:
        return f"{n - 1} x {lengths[0]} + {last}"
    return " + ".join(str(x) for x in lengths)


def segment_windows(
    configs: Sequence[SampleConfig], limit: int, *, align: int = 1
) -> list[int]:
    """Context tokens each segment keeps: ``limit - gen_length``, whole blocks of ``align``;
    refuses a segment with no room for context."""
    windows = [(limit - c.gen_length) // align * align for c in configs]
    if min(windows) < 1:
        longest = max(c.gen_length for c in configs)
        raise UserError(
            f"segments of {longest} tokens leave no room for context in the model's "
            f"{limit}-token context; use a segment_length of at most {limit - align} "
            f"(half the context, {limit // 2}, keeps as much text as it writes)"
        )
    return windows


def check_segments(decoder: str, config: SampleConfig) -> None:
    """Refuse ``segment_length`` where it cannot apply: the continuous decoders write a fixed
    canvas and cannot continue one."""
    from unmask.sampling.continuous import CONTINUOUS_DECODERS

    if config.segment_length is not None and decoder in CONTINUOUS_DECODERS:
        raise UserError(
            f"segment_length applies to the token decoders, not {decoder!r} (it writes a "
            "fixed canvas)"
        )


class _SegmentDrafts:
    """The ``on_view`` of one segment when the run's own draws drafts (``LiveView``): the
    segment's drafts go to the run's view, placed in the whole region; its step views do not
    (the run reports the whole view after each step itself)."""

    def __init__(self, run: SegmentedRun) -> None:
        self.run = run

    def __call__(self, step: int, view: Tensor) -> None:
        pass

    def draft(self, step: int, view: Tensor, drafts: Tensor) -> None:
        self.run._show_drafts(step, view, drafts)


class SegmentedRun(DecoderRun):
    """One run of ``gen_length`` tokens as consecutive segment runs (module docstring).

    ``seeds``: one per row (a decoder with ``row_seeds``; ``start_segment`` then takes them):
    row i's segments are seeded as the row's alone under ``seed = seeds[i]``.
    ``stop_apart``: whether a row whose text a stop sequence ends may leave the later
    segments alone, the others' text unmoved (``unmask.api.start``: float32 or float64
    weights, and a generator a row or no draws); else it stays in the batch until every
    row's text has ended (module docstring).

    Follows the protocol of its segments: ``advance`` steps the current one, and where the
    segments share forward passes (``llada`` without a cache, say) ``step_together`` batches
    this run with others; when a segment ends the next one starts from the new window.
    ``view`` is the whole (B, gen_length) region; ``nfe`` and ``steps`` sum the segments'.
    """

    def __init__(
        self,
        start_segment: SegmentStarter,
        prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
        config: SampleConfig,
        *,
        limit: int,
        mask_id: int,
        eos_id: int | None,
        pad_id: int,
        align: int = 1,
        uses_steps: bool = True,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
        stop_apart: bool = False,
    ) -> None:
        rows = as_rows(prompt_ids)
        if seeds is not None and len(seeds) != len(rows):
            raise UserError(f"{len(seeds)} seeds for {len(rows)} rows")
        if any(mask_id in r for r in rows):
            raise UserError(
                "a [MASK] in the prompt cannot be filled when generating in segments "
                "(the window moves past it); fill it first (unmask infill) or drop "
                "segment_length"
            )
        self.configs = segment_configs(config, align=align, uses_steps=uses_steps)
        self.align = align
        self.windows = segment_windows(self.configs, limit, align=align)
        self.prompts = rows
        self.gen_length, self.mask_id, self.eos_id, self.pad_id = (
            config.gen_length, mask_id, eos_id, pad_id,
        )
        self.on_view = on_view
        self.seeds = None if seeds is None else list(seeds)
        self._stop_apart = stop_apart  # a row may leave the batch at its stop, the others unmoved
        self._stop: Callable[[Tensor, Tensor], Tensor] | None = None
        self._start_segment = start_segment
        self._k = self._offset = 0
        self._done_nfe = self._done_steps = 0
        self._parts: list[GenerateResult] = []
        self._active = list(range(len(rows)))
        self._committed = [0] * len(rows)  # per row: the committed prefix before _offset
        self._run: DecoderRun | None = None
        self.gen: Tensor | None = None  # (B, G), mask_id where nothing is committed
        self._begin()

    # -- segments ---------------------------------------------------------------------------

    def _begin(self) -> None:
        """Start segment ``_k`` for the active rows: each row's latest tokens, at most
        ``windows[k]``, cut by whole blocks of ``align`` (a row keeps its length modulo the
        block: a model whose blocks start at the first prompt token, LLaDA 2's, needs the
        rows of a batch equal modulo the block, as they were in the first segment)."""
        window = self.windows[self._k]
        history = []
        for i in self._active:
            done = [] if self.gen is None else self.gen[i, : self._offset].tolist()
            row = self.prompts[i] + done
            over = len(row) - window
            cut = -(-over // self.align) * self.align if over > 0 else 0
            history.append(row[cut:])
        # a view that draws drafts gets the segment's (a segment's step views are not passed on)
        seg_view = _SegmentDrafts(self) if hasattr(self.on_view, "draft") else None
        if self.seeds is None:
            run = self._start_segment(history, self.configs[self._k], seg_view)
        else:  # each row's own segment seed: what it draws alone in segments
            seeds = [segment_seed(self.seeds[i], self._k) for i in self._active]
            run = self._start_segment(history, self.configs[self._k], seg_view, seeds)
        if self.gen is None:
            self.model = run.model
            device = run.view().device
            self.gen = torch.full(
                (len(self.prompts), self.gen_length), self.mask_id, dtype=torch.long,
                device=device,
            )
        self._index = torch.tensor(self._active, device=self.gen.device)
        self._run = run
        if self._stop is not None:
            run.stop = self._segment_stop

    # -- stop sequences -----------------------------------------------------------------------

    @property  # type: ignore[override]
    def stop(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The rows of the whole (B, gen_length) view whose text a stop sequence is sure to
        end (``DecoderRun.stop``, set by ``unmask.api.start``); the current segment's run
        asks it through ``_segment_stop``."""
        return self._stop

    @stop.setter
    def stop(self, rule: Callable[[Tensor, Tensor], Tensor] | None) -> None:
        self._stop = rule
        if self._run is not None:
            self._run.stop = None if rule is None else self._segment_stop

    def _stopped(self, view: Tensor, active: Tensor) -> Tensor:
        """(b,) bool: of the current segment's rows, those of ``active`` (b,) whose whole
        text (the earlier segments, then ``view`` (b, <= length): this segment's columns) a
        stop is sure to cut. A ``StopRows`` reads only each row's new tokens (its window; the
        whole text on a find), from the committed lengths (``_committed``): not the whole
        text so far each step."""
        assert self._stop is not None and self.gen is not None
        off, B = self._offset, self.gen.shape[0]
        if not isinstance(self._stop, StopRows):  # another rule: the whole rows so far
            upto = self.gen[:, : off + view.shape[1]].clone()
            upto[self._index, off:] = view.to(upto.device)
            on = torch.zeros(B, dtype=torch.bool, device=upto.device)
            on[self._index] = active.to(upto.device)
            return self._stop(upto, on)[self._index].to(active.device)
        host = view.cpu()  # (b, length): one copy to the host, this segment's columns only
        first = committed_lengths(host, self.mask_id).tolist()
        lengths, live, at = [0] * B, [False] * B, {}
        for r, (i, on) in enumerate(zip(self._active, active.tolist(), strict=True)):
            done = self._committed[i]  # the earlier segments' committed prefix
            lengths[i], live[i], at[i] = off + first[r] if done == off else done, on, r

        def read(i: int, lo: int, hi: int) -> list[int]:  # row i's ids in columns lo:hi
            head = self.gen[i, lo : min(hi, off)].tolist() if lo < off else []
            return head + host[at[i], max(lo - off, 0) : max(hi - off, 0)].tolist()

        out = self._stop.ended(read, lengths, live)
        return torch.tensor([out[i] for i in self._active], device=active.device)

    def _segment_stop(self, view: Tensor, active: Tensor) -> Tensor:
        """The current segment's ``stop``: its rows (``active`` (b,) of its (b, length)
        ``view``) whose whole text, earlier segments included, a stop is sure to cut. Unless
        ``stop_apart``, none until every row of the segment is over (a stop sure, or EOS in
        its committed prefix): a row the segment finished alone would leave the later
        segments and move the other rows' text; once all are over, every text is settled."""
        out = self._stopped(view, active)
        if self._stop_apart or not bool(out.any()):
            return out
        first = committed_lengths(view, self.mask_id)  # (b,)
        prefix = torch.arange(view.shape[1], device=view.device) < first[:, None]  # (b, length)
        return self._settled(out, rows_finished(torch.where(prefix, view, self.mask_id),
                                                self.eos_id))

    def _settled(self, stopped: Tensor, ended: Tensor) -> Tensor:
        """``stopped`` (b,); unless ``stop_apart``, none of them until every row is over
        (``stopped``, or ``ended`` by EOS): the rule of ``_segment_stop`` and ``_after``."""
        if self._stop_apart or bool((stopped | ended).all()):
            return stopped
        return torch.zeros_like(stopped)

    def _show_drafts(self, step: int, view: Tensor, drafts: Tensor) -> None:
        """The current segment's drafts (its view and drafts: its rows, its columns) to the
        ``on_view`` that draws them, placed in the whole (B, gen_length) region."""
        show = getattr(self.on_view, "draft", None)
        if show is None or self.gen is None:
            return
        span = slice(self._offset, self._offset + view.shape[1])
        whole = self.gen.clone()
        whole[self._index, span] = view.to(whole.device)
        placed = torch.full_like(whole, self.mask_id)
        placed[self._index, span] = drafts.to(whole.device)
        show(self._done_steps + step, whole, placed)

    def _after(self) -> None:
        """After a step of the current segment: if it ended, keep its tokens and start the
        next (or end); then report the view."""
        run = self._run
        assert run is not None and self.gen is not None
        if run.done:
            res = run.result()
            start, end = res.region
            ids = res.tokens[:, start:end].to(self.gen.device)  # (b, <= length)
            length = self.configs[self._k].gen_length
            span = slice(self._offset, self._offset + length)
            # a decoder that stops at EOS may return a shorter region (bd3lm: the blocks it ran)
            self.gen[self._index, span] = self.pad_id
            self.gen[self._index, self._offset : self._offset + ids.shape[1]] = ids
            ended = rows_finished(ids, self.eos_id)  # (b,)
            if self._stop is not None:  # or a stop sequence (not stop_apart: every row)
                stopped = self._stopped(self.gen[self._index, span], torch.ones_like(ended))
                ended = ended | self._settled(stopped, ended)
            ended = ended.tolist()
            for i, n in zip(self._active, committed_lengths(self.gen[self._index, span],
                                                            self.mask_id).tolist(), strict=True):
                if self._committed[i] == self._offset:  # every earlier column is committed
                    self._committed[i] = self._offset + n
            for i, e in zip(self._active, ended, strict=True):
                if e:
                    self.gen[i, self._offset + length :] = self.pad_id
            self._active = [i for i, e in zip(self._active, ended, strict=True) if not e]
            self._parts.append(res)
            self._done_nfe += run.nfe
            self._done_steps += run.steps
            self._offset += length
            self._k += 1
            self._run = None
            if self._active and self._k < len(self.configs):
                self._begin()
            else:  # every row ended early: nothing was written after
                self.gen[self.gen == self.mask_id] = self.pad_id
        self._report()

    # -- the protocol -------------------------------------------------------------------------

    @property
    def nfe(self) -> int:  # type: ignore[override]
        return self._done_nfe + (self._run.nfe if self._run is not None else 0)

    @property
    def steps(self) -> int:  # type: ignore[override]
        return self._done_steps + (self._run.steps if self._run is not None else 0)

    @property
    def shift(self) -> bool:  # type: ignore[override]
        return self._run.shift if self._run is not None else False

    @property
    def done(self) -> bool:
        return self._run is None

    @property
    def shares_forward(self) -> bool:
        return self._run is not None and self._run.shares_forward

    @property
    def why_alone(self) -> str:
        return self._run.why_alone if self._run is not None else super().why_alone

    @property
    def needs_model(self) -> bool:
        return self._run is not None and self._run.needs_model

    @property
    def batch_size(self) -> int:
        return len(self.prompts)

    def model_inputs(self) -> tuple[Tensor, Tensor | None]:
        assert self._run is not None, "the run is finished"
        return self._run.model_inputs()

    def step(self, logits: Tensor) -> None:
        assert self._run is not None, "the run is finished"
        self._run.step(logits)
        self._after()

    def skip(self) -> None:
        assert self._run is not None, "the run is finished"
        self._run.skip()
        self._after()

    def advance(self) -> None:
        assert self._run is not None, "the run is finished"
        self._run.advance()
        self._after()

    def view(self) -> Tensor:
        assert self.gen is not None
        if self._run is None:
            return self.gen
        view = self.gen.clone()
        length = self.configs[self._k].gen_length
        view[self._index, self._offset : self._offset + length] = self._run.view()
        return view

    def result(self) -> GenerateResult:
        """The whole rows (prompt + every segment) in the segments' own result type, its
        counts (``SpeculativeResult``'s drafts, acceptances, rounds, ...) summed over them,
        and each segment's result in ``segments``."""
        assert self.gen is not None
        if self._run is not None:
            raise RuntimeError("the run is not finished")
        P = max(len(r) for r in self.prompts)
        prompt, real = left_pad(self.prompts, P, self.pad_id)
        prompt, real = prompt.to(self.gen.device), real.to(self.gen.device)
        attn = None
        if not bool(real.all()):
            attn = torch.cat([real, torch.ones_like(self.gen, dtype=torch.bool)], dim=1)
        first, own = self._parts[0], {f.name for f in dataclasses.fields(GenerateResult)}
        counts = {
            f.name: sum(getattr(p, f.name) for p in self._parts)
            for f in dataclasses.fields(first)
            if f.name not in own and type(getattr(first, f.name)) is int
        }
        return dataclasses.replace(
            first, tokens=torch.cat([prompt, self.gen], dim=1),
            region=(P, P + self.gen_length), nfe=self.nfe, steps=self.steps,
            eos_id=self.eos_id, history=None, attention_mask=attn, segments=self._parts,
            ended_at=None, **counts,  # each segment's own ``ended_at`` is in its columns
        )


__all__ = [
    "MAX_SEGMENTED_LENGTH",
    "MAX_SEGMENTS",
    "SegmentedRun",
    "check_segments",
    "segment_configs",
    "segment_lengths",
    "segment_seed",
    "segment_windows",
]
