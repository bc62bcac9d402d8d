"""Block-diffusion sampling (BD3-LM): denoise one block at a time, stop at EOS.

Arriola et al. 2025 (arXiv:2503.09573, §3.3, Alg. 2) sample a block-causal model block by
block: block b is a masked diffusion conditioned on the finished blocks before it, so the
sequence grows by ``block_size`` tokens per round and can stop as soon as a block holds an
end-of-sequence token (variable-length generation).

``sample_blocks`` runs each round through the one sampler loop (``unmask.sampling.loop.Denoiser``)
on a canvas ``[prompt ; finished blocks ; one block of masks]``. The prompt is left-padded to
a multiple of ``block_size`` so that every generated block is one of the model's attention
blocks; then the ``prefix``/``dual`` KV caches of ``unmask.sampling.cache`` (K/V of the prompt
and the finished blocks computed once per round, only the block recomputed each step) give
exactly the uncached logits, because under block-causal attention nothing before the block can
see the block. Left padding does not move the real tokens relative to each other, and RoPE only
sees relative positions.

LLaDA 2.x (``ModelConfig.block_align='absolute'``, the ``llada2`` import) counts its blocks from
the first prompt token, as the publisher's ``generate`` does: the prompt's last, partial block is
completed by the first generated tokens (that block's region covers the prompt tail, locked, so
the prefix cache recomputes the whole attention block and stays exact). Prompts of a batch must
then have the same length modulo the block size. LLaDA 2.1's token-to-token editing
(``SampleConfig.edit_threshold``; Bie et al. 2026, arXiv:2602.08676; SGLang's
``JointThreshold``): at every step, a token already committed in the current block (not the
prompt) whose argmax differs from it with probability > ``edit_threshold`` is replaced, in the
same forward as the mask commits; once a row's block has no mask, edit-only steps follow until
one changes nothing in it or ``max_post_steps`` have run, and the row then waits, unchanged, for
the others' (each row as alone: ``BlockRun._edit_round``).

Inside: ``BlockRun`` (the ``bd3lm`` decoder's run), ``sample_blocks``, ``block_size_of`` (of
``unmask.sampling.cache``, whose windows start on an attention block's first column),
``edit_step``, ``plan_blocks``, ``room_after_prompt`` (the most new tokens that fit after a
prompt, whole blocks where the model writes them) and ``absolute_blocks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import Canvas, CanvasConstraint, as_rows, left_pad
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.messages import nearest_multiples
from unmask.sampling.ar import RowGenerators, row_generators
from unmask.sampling.cache import WindowCache, block_size_of
from unmask.sampling.loop import (
    START_TOKEN_NOTE,
    Denoiser,
    forbid_empty,
    loop_takes_seeds,
    row_apart,
    split_steps,
    start_empty_prompts,
    unguided_starts,
    validate,
)
from unmask.sampling.penalties import PenaltyConstraint
from unmask.sampling.policies import RowDraws, make_policy
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    MaskPredictor,
    StepCallback,
    ViewCallback,
    make_generator,
    model_device,
    rows_finished,
)
from unmask.sampling.registry import Decoder, Prompts, Target, refuse_top_k, register_decoder


def edit_step(
    logits: Tensor, tokens: Tensor, editable: Tensor, threshold: float, mask_id: int
) -> Tensor:
    """LLaDA 2.1's token-to-token edit: (B, L) bool of the ``editable`` positions (committed,
    not prompt) whose argmax token under ``logits`` (B, L, V) differs from ``tokens`` (B, L)
    with probability > ``threshold``; ``tokens`` takes those argmax tokens in place ([MASK] is
    never proposed)."""
    logits = logits.float().clone()
    logits[..., mask_id] = float("-inf")
    p, x = logits.softmax(dim=-1).max(dim=-1)  # (B, L) each
    edit = editable & (x != tokens) & (p > threshold)
    tokens[edit] = x[edit]
    return edit


def absolute_blocks(model_or_config: Any) -> bool:
    """Whether a block-diffusion model counts its blocks from the first prompt token (LLaDA
    2.x: ``ModelConfig.block_align='absolute'``) rather than padding the prompt to whole
    blocks (bd3lm); a model is read through its ``.config``."""
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "block_align", "pad") == "absolute"


def room_after_prompt(prompt_len: int, context: int | None, *, block_size: int | None = None,
                      absolute: bool = False) -> int | None:
    """The most new tokens a run may write after a prompt of ``prompt_len`` tokens in a canvas
    of at most ``context`` tokens (the model's ``max_seq_len``; with a drafter, speculative or
    hybrid, the smaller of the two: ``unmask.api.context_limit``). None: no limit known (a
    ``context`` of None); 0 or less: nothing fits.

    With a ``block_size`` (a block-diffusion model), the canvas ``BlockRun`` builds must fit:
    bd3lm pads the prompt to whole blocks and writes whole blocks, so the room is the whole
    blocks after the padded prompt; LLaDA 2.x (``absolute``) completes the prompt's last block
    first and its canvas ends on a block boundary, so the room ends at the context's last
    block boundary. One answer for ``unmask serve`` (``max_tokens``), ``unmask demo`` and
    ``unmask chat`` (history fitting)."""
    if context is None:
        return None
    if not block_size:
        return context - prompt_len
    if absolute:  # canvas: up to the block boundary at or after prompt + new tokens
        return context // block_size * block_size - prompt_len
    room = context - -(-prompt_len // block_size) * block_size  # after the padded prompt
    return room - room % block_size if room > 0 else room


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """How ``BlockRun`` splits a run into blocks (``plan_blocks``)."""

    first_new: int
    """New tokens of the first block (LLaDA 2.x's absolute layout: what completes the prompt's
    last block; else a whole block)."""
    num_blocks: int
    steps_per_block: int
    """The first block's steps (every block's, where steps are a multiple of the blocks)."""
    block_steps: tuple[int, ...] = ()
    """Each block's steps (``split_steps``: a dynamic policy's bound spread over the blocks);
    empty: ``steps_per_block`` each."""


def _too_few_steps(steps: int, blocks: int, span: str) -> UserError:
    """The refusal of fewer ``steps`` than blocks (a dynamic policy's bound) in the words of a
    block-diffusion model, whose block length is fixed: the blocks ``span`` names (from the
    gen_length asked for), a step count or a shorter generation the way out."""
    return UserError(
        f"steps ({steps}) must be at least the number of blocks {span}: each block takes a "
        f"step; try steps {blocks} or a shorter gen_length"
    )


def plan_blocks(config: SampleConfig, block_size: int, prompt_lengths: Sequence[int], *,
                absolute: bool, started: Sequence[bool] = ()) -> BlockPlan:
    """The blocks of a run of ``config`` over prompts of ``prompt_lengths`` with blocks of
    ``block_size``, or the ``UserError`` ``BlockRun`` would start with: a ``block_length``
    other than the model's, no prompts, a canvas that is not whole blocks (``absolute``:
    blocks counted from the first prompt token, LLaDA 2.x, where a batch instead needs equal
    lengths modulo the block size), steps that do not split over the blocks. The server asks
    it before a stream starts (a refusal there was a 200 and an error event). ``started``:
    per prompt, whether it is an empty prompt given a start token (``start_empty_prompts``;
    its length here is 1), which a refusal then names."""
    bs = block_size
    if bs <= 0:
        raise UserError(f"block_size must be positive, got {bs}")
    if config.block_length is not None and config.block_length != bs:
        raise UserError(
            f"block_length={config.block_length} must equal the model's "
            f"block_size={bs} (or be unset)"
        )
    config = dataclasses.replace(config, block_length=bs)
    if not prompt_lengths:
        raise UserError("no prompts given")
    if absolute:  # LLaDA 2.x: blocks counted from the first prompt token
        tails = {n % bs for n in prompt_lengths}
        if len(tails) > 1:
            note = f" ({START_TOKEN_NOTE})" if any(started) else ""
            raise UserError(
                f"prompts of lengths {sorted(set(prompt_lengths))}{note}: this model's blocks "
                f"start at the first prompt token, so a batch needs equal lengths modulo "
                f"{bs}; generate them one at a time"
            )
        first_new = bs - tails.pop()
        blocks = 1 + -(-max(config.gen_length - first_new, 0) // bs)
        span = (f"the {config.gen_length} new tokens span ({blocks}: the rest of the prompt's "
                f"last block of {bs}, then {blocks - 1} more)")
        try:
            validate(dataclasses.replace(config, gen_length=blocks * bs))
        except UserError as e:  # its gen_length is the blocks' span, not the one asked for
            if "at least the number of blocks" in str(e):
                raise _too_few_steps(config.steps, blocks, span) from None
            if "multiple of the number of blocks" not in str(e):
                raise
            raise UserError(
                f"steps ({config.steps}) must be a multiple of the number of blocks the "
                f"{config.gen_length} new tokens span ({blocks}: the rest of the prompt's last "
                f"block of {bs}, then {blocks - 1} more); try "
                f"{nearest_multiples(config.steps, blocks)}"
            ) from None
        shares = tuple(split_steps(config.steps, blocks))
        return BlockPlan(first_new, blocks, shares[0], shares)
    if config.gen_length > 0 and config.gen_length % bs:  # the block length is the model's
        raise UserError(
            f"gen_length ({config.gen_length}) must be a multiple of the model's "
            f"block_size ({bs}); try gen_length {nearest_multiples(config.gen_length, bs)}"
        )
    try:
        blocks, steps_per_block = validate(config)
    except UserError as e:  # the block length is the model's: no "longer blocks" to try
        if "at least the number of blocks" not in str(e):
            raise
        blocks = config.gen_length // bs
        raise _too_few_steps(config.steps, blocks, f"the {config.gen_length} new tokens span "
                             f"({blocks}, of the model's block_size {bs})") from None
    # a dynamic policy's steps bound it: spread over the blocks (not a multiple of them)
    return BlockPlan(bs, blocks, steps_per_block, tuple(split_steps(config.steps, blocks)))


class BlockRun(DecoderRun):
    """The ``bd3lm`` decoder's run: one ``Denoiser`` per block over ``[prompt ; finished
    blocks ; one block of masks]``, a new block started when one ends, none once every row
    holds EOS (``rows_finished``). See ``sample_blocks`` for the semantics; an empty prompt
    starts with ``start_id`` (default the EOS: ``start_empty_prompts``).

    It runs alone (``shares_forward`` False): its canvas grows block by block, and left padding
    to share a forward would move the model's attention blocks.
    """

    def __init__(
        self,
        model: MaskPredictor,
        prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
        config: SampleConfig,
        *,
        mask_id: int,
        pad_id: int,
        eos_id: int | None,
        block_size: int | None = None,
        generator: torch.Generator | RowGenerators | None = None,
        return_history: bool = False,
        step_callback: StepCallback | None = None,
        on_view: ViewCallback | None = None,
        start_id: int | None = None,
    ) -> None:
        bs = block_size if block_size is not None else block_size_of(model)
        if bs is None:
            raise UserError(
                "sample_blocks needs a block-causal model (config.block_size) "
                "or an explicit block_size"
            )
        rows, started = start_empty_prompts(prompt_ids, eos_id=eos_id, pad_id=pad_id,
                                            start_id=start_id)
        self.absolute = absolute_blocks(model)
        plan = plan_blocks(config, bs, [len(r) for r in rows], absolute=self.absolute,
                           started=started)
        config = dataclasses.replace(config, block_length=bs)
        self.first_new, self.num_blocks = plan.first_new, plan.num_blocks
        steps_per_block = plan.steps_per_block
        self._block_steps = plan.block_steps or (steps_per_block,) * plan.num_blocks
        if self.absolute:  # left padding: whole blocks (equal tails)
            P = max(len(r) for r in rows)
            need = P + self.first_new + (self.num_blocks - 1) * bs
        else:
            P = -(-max(len(r) for r in rows) // bs) * bs  # prompt columns, whole blocks
            need = P + config.gen_length
        refuse_top_k("bd3lm", config)
        max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
        if max_seq_len is not None and need > max_seq_len:
            note = f" ({START_TOKEN_NOTE})" if all(started) else ""
            raise UserError(
                f"prompt ({P} tokens after padding to blocks of {bs}) + gen_length "
                f"({config.gen_length}) exceeds the model's max_seq_len ({max_seq_len}){note}"
            )
        B = len(rows)
        device = model_device(model) or torch.device("cpu")
        x, real = left_pad(rows, P, pad_id)  # (B, P), left-padded prompts
        self.model, self.mask_id, self.eos_id = model, mask_id, eos_id
        self.gen_length, self.block_size, self.P = config.gen_length, bs, P
        self.x, self.real = x.to(device), real.to(device)  # (B, L): prompt and finished blocks
        self.prompt = unguided_starts(self.real, started, P - 1)  # (B, P): what guidance blanks out
        self._given = self.real & (self.x != mask_id)  # (B, P): the prompt tokens, locked
        self._row_gens: list[torch.Generator] | None = None
        self.generator: torch.Generator | None = None
        if generator is None or isinstance(generator, torch.Generator):
            self.generator = make_generator(config.seed, device) if generator is None \
                else generator
        else:  # a generator per row: row i draws what its run alone draws (``RowDraws``)
            if len(generator) != B:
                raise ValueError(f"{len(generator)} generators for {B} rows")
            self._row_gens = list(generator)
            # the padding row i's run alone has not: the columns its canvas is narrower by
            own = [len(r) if self.absolute else -(-len(r) // bs) * bs for r in rows]
            self._lead = [P - p for p in own]
        # Token editing runs the model every step (``_edit_round``), an empty one
        # too: no step is skipped, so every row draws in it (``Denoiser.step``'s rule)
        self.block_config = dataclasses.replace(
            config, gen_length=bs, block_length=None, steps=steps_per_block,
            skip_empty_steps=config.skip_empty_steps and config.edit_threshold is None,
        )
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)  # (B,) rows past EOS
        self.history: list[Tensor] | None = [] if return_history else None
        self.step_callback, self.on_view = step_callback, on_view
        self.nfe = self.steps = 0
        self.blocks_done = 0
        self.edit_threshold, self.max_post_steps = config.edit_threshold, config.max_post_steps
        # per row, as its run alone (token editing): the edit-only steps it has taken since
        # its block had no mask, and whether its block is final (``_edit_round``)
        self._post = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
        self._frozen = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
        self._extra = (0, 0)  # (nfe, steps) of this block's edit-only steps
        # the K/V a cache of the last block leaves, and its first columns that hold the final
        # tokens' (``WindowCache.settled``): the next block starts from them (``_carry``)
        self._kv: tuple[Any, int] | None = None
        self._need = need  # the last block's canvas: the slots a carried cache reserves
        # carried only where exact: attention blocks that are the run's, or causal attention
        # (under other attention a finished block's K/V see the blocks after it: refreshed)
        self._carries = block_size_of(model) == bs or getattr(
            getattr(model, "config", None), "attention", None) == "causal"
        self._inner: Denoiser | None = None
        self._next_block()

    @property
    def done(self) -> bool:
        return self._inner is None

    def _next_block(self) -> None:
        """Start the next block's denoiser, or none when all blocks (or all rows) are done."""
        self._inner = None
        if self.blocks_done >= self.num_blocks or bool(self.finished.all()):
            self._kv = None  # the run is over: its K/V are not kept with its result
            return
        B, L = self.x.shape[0], self.x.shape[1]
        n = self.first_new if self.blocks_done == 0 else self.block_size  # new columns
        tail = self.block_size - n  # prompt columns in this attention block (absolute only)
        device = self.x.device
        new = torch.full((B, n), self.mask_id, dtype=torch.long, device=device)  # (B, n)
        if self.eos_id is not None:
            new[self.finished] = self.eos_id  # finished rows: EOS padding, nothing to denoise
        tokens = torch.cat([self.x, new], dim=1)  # (B, L + n)
        attn = torch.cat([self.real, torch.ones(B, n, dtype=torch.bool, device=device)], dim=1)
        # Locked: the prompt's given tokens (and padding) alone. The finished blocks (and a
        # [MASK] of the prompt, once filled) are generated text, which presence and frequency
        # count (``PenaltyConstraint``: the unlocked tokens); they are no masks, so nothing
        # writes them. Locked, as ``from_tokens`` locks any given token, a block's penalties
        # forgot every block before it.
        locked = torch.zeros(B, L + n, dtype=torch.bool, device=device)
        locked[:, : self.P] = self._given
        canvas = Canvas.from_tokens(
            tokens, mask_id=self.mask_id, attention_mask=attn, locked=locked,
            region=(L - tail, L + n),
        )
        pad = torch.zeros(B, tokens.shape[1] - self.P, dtype=torch.bool, device=device)
        canvas = dataclasses.replace(canvas, prompt_index=torch.cat([self.prompt, pad], dim=1))
        forbid_empty(canvas, self.model)  # free text: no [EMPTY], as ``Denoiser.for_prompts``
        self._attn = attn
        self._base = (self.nfe, self.steps)
        self._post, self._frozen = torch.zeros_like(self._post), self.finished.clone()
        self._extra = (0, 0)
        draws: torch.Generator | RowDraws | None = self.generator
        if self._row_gens is not None:  # rows past EOS: their runs alone have ended
            draws = RowDraws(self._row_gens, [L + n - lead for lead in self._lead],
                             out=self.finished.tolist())
        self._inner = Denoiser(
            self.model,
            canvas,
            dataclasses.replace(self.block_config, steps=self._block_steps[self.blocks_done]),
            eos_id=self.eos_id,
            generator=draws,
        )  # history and step_callback are kept here: a step ends after its edits
        self._carry(self._inner)
        if self._inner.done:  # nothing to denoise in this block
            self._end_block()

    def _carry(self, inner: Denoiser) -> None:
        """Start ``inner``'s KV cache (``prefix``/``dual``) from the last block's: under
        block-causal attention whose blocks are the run's (the module docstring), a column's
        K/V never depend on the columns after it, so those of the finished blocks hold once
        their tokens are final, and the block's first call recomputes from the last block's
        stale columns on, not the whole canvas (``WindowCache.carry``): the same logits, bit
        for bit where the kernels are (float64 tested), and the same tokens. Until
        2026-12-07 every block's first call ran the whole canvas, prompt and every finished
        block, so a block's cost grew with the text. Under any other attention (an explicit
        ``block_size`` other than the model's, a bidirectional model) each block's first call
        still runs the whole canvas, as it did before (``_carries``); causal attention is
        carried too (nothing sees a later column)."""
        if not isinstance(inner.cache, WindowCache) or not self._carries:
            return
        # the one cache grows to the last canvas: doubling capped there (as the old
        # refresh's last cache held), not up to twice its slots
        inner.cache.reserve = self._need
        if self._kv is not None:
            inner.cache.carry(*self._kv)

    def _end_block(self) -> None:
        inner = self._inner
        assert inner is not None
        cache = inner.cache
        if self._carries and isinstance(cache, WindowCache) and cache.kv is not None:
            self._kv = (cache.kv, cache.settled)  # a block's first column (``start_block``);
            # else the next block builds its own and this one goes now, not after it
        L = self.x.shape[1]
        self.x, self.real = inner.x, self._attn
        self.finished |= rows_finished(self.x[:, L:], self.eos_id)
        if self.eos_id is not None:  # a stop sequence ends a row too (EOS fills the rest)
            self.finished |= self.stopped_rows(~self.finished)
        self.blocks_done += 1
        self._next_block()

    def advance(self) -> None:
        inner = self._inner
        assert inner is not None, "the run is finished"
        if self.edit_threshold is None:
            inner.advance()
        else:
            self._edit_round(inner)
        self.nfe = self._base[0] + inner.nfe + self._extra[0]
        self.steps = self._base[1] + inner.steps + self._extra[1]
        if self.history is not None:  # the canvas after the whole step, its edits included
            self.history.append(inner.x.clone())
        if self.step_callback is not None:
            self.check_finite()  # not a canvas of garbage: NaN logits
            self.step_callback(self.steps, inner.x)
        if inner.done and (self.edit_threshold is None or bool(self._frozen.all())):
            self._end_block()
        self._report()

    def _logits(self, inner: Denoiser) -> Tensor:
        tokens, attn = inner.model_inputs()
        with torch.no_grad():
            return inner.cache.logits(self.model, tokens, attn, shift=inner.shift)  # (B', L, V)

    def _edit(self, inner: Denoiser, logits: Tensor, tokens: Tensor, editable: Tensor) -> Tensor:
        """LLaDA 2.1's token-to-token edit (``edit_step``) of ``tokens`` (B, L), in place, from
        the step's model ``logits`` (B', L, V): (B, L) bool of the positions edited.

        Only the columns of the current block's generated tokens can be edited, so only they
        are read: the guidance merge and the token bans (``commit_bans``, [EMPTY], EOS under
        ``forbid_eos``) run over those columns, not the whole canvas (prompt and finished
        blocks included) the step's commits already processed, and the softmax over V runs
        there alone (per column, so the edits are the same). The canvas holds no other
        constraint than those bans and the penalties (``BlockRun`` builds it), and the
        penalties touch only masked positions, never an editable one, so they are left out."""
        start, end = inner.canvas.region
        cols = slice(max(start, self.P), end)
        sub = logits[:, cols]  # (B', n, V)
        if inner.config.cfg_scale > 0:  # un + (s + 1)(cond - un), as the step merges them
            cond, un = torch.chunk(sub, 2, dim=0)
            sub = un + (inner.config.cfg_scale + 1) * (cond - un)  # (B, n, V)
        for proc in inner.canvas.constraints:
            if not isinstance(proc, CanvasConstraint):  # a token ban: the same in every column
                sub = proc(sub)
            else:  # the only constraint that reads the canvas here
                assert isinstance(proc, PenaltyConstraint), type(proc)
        edit = torch.zeros_like(editable)
        edit[:, cols] = edit_step(sub, tokens[:, cols], editable[:, cols],  # in place: a view
                                  self.edit_threshold, self.mask_id)  # fmt: skip
        return edit

    def _editable(self, inner: Denoiser) -> Tensor:
        """(B, L) bool: committed generated tokens of the current block (not the prompt), in
        the rows whose block is not final yet (``_frozen``; rows past EOS never edit)."""
        start, end = inner.canvas.region
        editable = torch.zeros_like(inner.x, dtype=torch.bool)
        editable[:, max(start, self.P) : end] = True
        return editable & (inner.x != self.mask_id) & ~self._frozen[:, None]

    def _edit_round(self, inner: Denoiser) -> None:
        """One step under token editing, each row as its run alone. A row whose block is
        still running (``Denoiser.rows_done``) commits (M2T) and edits (T2T) from one forward;
        a row whose block is done (filled, under a dynamic policy) takes an edit-only step,
        until one changes nothing in it or ``max_post_steps`` have run, and its block is then
        final (``_frozen``): it waits, unchanged, for the other rows' (until 2026-12-07 it went
        on editing while it waited, every step, so under a dynamic policy a row wrote other
        text in a batch than alone, greedy too). The block ends when every row's is final."""
        post = inner.rows_done() & ~self._frozen  # (B,) the rows whose step is edit-only
        logits = self._logits(inner)
        editable = self._editable(inner)  # before this step's commits
        if inner.done:  # no row has a mask left: edits alone
            edit = self._edit(inner, logits, inner.x, editable)
            self._extra = (self._extra[0] + 1, self._extra[1] + 1)
        else:
            before = inner.x.clone()
            inner.step(logits)
            edit = self._edit(inner, logits, before, editable)
            inner.x[edit] = before[edit]
        self._post += post
        self._frozen |= post & ~edit.any(dim=1)  # an edit-only step that changed nothing
        self._frozen |= inner.rows_done() & (self._post >= self.max_post_steps)

    def view(self) -> Tensor:
        """(B, gen_length): finished blocks, the current block, masks (EOS for finished rows)
        where no block has started."""
        inner = self._inner
        grown = self.x[:, self.P :] if inner is None else inner.x[:, self.P :]  # (B, n)
        grown = grown[:, : self.gen_length]  # absolute blocks may run past gen_length
        B, n = grown.shape
        rest = torch.full(
            (B, self.gen_length - n), self.mask_id, dtype=grown.dtype, device=grown.device
        )
        if self.eos_id is not None:
            rest[self.finished] = self.eos_id
        return torch.cat([grown, rest], dim=1)  # (B, G)

    def result(self) -> GenerateResult:
        return GenerateResult(
            tokens=self.x,
            region=(self.P, min(self.x.shape[1], self.P + self.gen_length)),
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            history=self.history,
            attention_mask=None if bool(self.real.all()) else self.real,
        )


def sample_blocks(
    model: MaskPredictor,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    config: SampleConfig,
    *,
    mask_id: int,
    pad_id: int,
    eos_id: int | None,
    block_size: int | None = None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
) -> GenerateResult:
    """Generate up to ``config.gen_length`` tokens after each prompt, one block at a time (BD3-LM).

    ``block_size`` defaults to the model's (``config.block_size`` of a ``block-causal``
    model); ``config.gen_length`` must be a multiple of it and ``config.block_length`` None or
    equal to it. Each block gets ``config.steps / (gen_length / block_size)`` steps of the
    commit policy (dynamic policies: until it has no masks). A row whose generation holds
    ``eos_id`` is finished: its later blocks are filled with EOS and never run through the
    policy, and no new block is started once every row is finished, so the result may be
    shorter than ``gen_length``. ``config.cache`` ``prefix``/``dual`` is exact here (see the
    module docstring). Classifier-free guidance blanks only the prompt, as in LLaDA. An empty
    prompt starts with a start token (``start_empty_prompts``), a prompt of one token.

    The result's ``region`` covers the generated blocks; ``nfe``/``steps`` add up over blocks;
    ``history`` (when asked for) holds one canvas per step, each as long as the canvas then was.
    ``BlockRun(...).run()``.
    """
    return BlockRun(
        model,
        prompt_ids,
        config,
        mask_id=mask_id,
        pad_id=pad_id,
        eos_id=eos_id,
        block_size=block_size,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
    ).run()


@register_decoder("bd3lm")
class BD3LMDecoder(Decoder):
    """Block diffusion (BD3-LM): block by block, stopping after the block that holds EOS."""

    penalties = True
    row_seeds = True
    summary = "block diffusion: one block at a time over a block-causal model, stop at EOS"

    def takes_seeds(
        self, config: SampleConfig, prompts: Prompts | None = None, mask_id: int | None = None,
    ) -> bool:
        """The commit loop's rule (``rows_draw_alone``; for ``prompts``, ``row_apart``: a
        prompt of [MASK]s alone; block-causal caches recompute nothing another row changes).
        Token editing under a dynamic policy too: a row whose block is filled takes its
        edit-only steps as alone, then waits unchanged (``BlockRun._edit_round``)."""
        return loop_takes_seeds(self, config, prompts, mask_id)

    def rows_apart(self, config: SampleConfig, prompts: Prompts, mask_id: int) -> list[bool]:
        # its block-causal caches recompute nothing another row changes: the ties alone
        return [row_apart(r, mask_id) is not None for r in as_rows(prompts)]

    def uses_steps(self, config: SampleConfig) -> bool:
        return not make_policy(config).dynamic  # dynamic: steps bound the run, not set it

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        if facts.attention != "block-causal" or facts.block_size is None:
            raise UserError(
                f"decoder 'bd3lm' needs a block-causal model (objective bd3lm); this "
                f"checkpoint is {facts.attention}{facts.attention_way_out('bd3lm')}"
            )
        if config.block_length is not None and config.block_length != facts.block_size:
            raise UserError(
                f"block_length={config.block_length} must equal the model's "
                f"block_size={facts.block_size} (or be unset): decoder 'bd3lm' decodes the "
                "blocks it was trained on"
            )
        refuse_top_k(self.name, config)

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DecoderRun:
        f = target.facts
        device = model_device(target.model) or "cpu"
        return BlockRun(
            target.model,
            prompt_ids,
            config,
            mask_id=f.mask_id,
            pad_id=f.pad_id,
            eos_id=f.eos_id,
            block_size=f.block_size,
            on_view=on_view,
            generator=None if seeds is None else row_generators(seeds, device),
            start_id=f.start_id,
        )


__all__ = ["BD3LMDecoder", "BlockRun", "block_size_of", "sample_blocks"]
