"""The sampler loop: model(canvas) → logits → proposals → commit policy, until done.

Inside:

- ``Denoiser``: the one loop over a ``Canvas`` (generation, infilling, editing) as a state
  object stepped one denoising step at a time (``step(logits)``).
- ``sample``: ``Denoiser(...).run()``, the whole loop in one call.
- ``generate``: prompts → canvas with masks appended → ``sample`` (LLaDA's ``generate``).
- ``step_together``: one step of several denoisers (different lengths, settings, seeds)
  sharing one forward pass: the server's continuous batching.
- ``GenerateResult``: final canvas, generated ids, NFE, optional history.
- ``add_gumbel_noise``, ``forbid_tokens``, ``validate``, ``shift_logits`` (from ``cache``),
  ``cut_at_eos``, ``decode_generations``: the pieces, usable alone.

Commit policies (``policies``: scheduled LLaDA counts or the parallel threshold / factor /
entropy rules) and cache policies (``cache``: none / prefix / dual) plug into the one loop.

The semantics follow LLaDA (Nie et al. 2025, arXiv:2502.09992) and its reference
``generate.py`` (ML-GSAI/LLaDA) token for token at temperature 0 (but for an exact tie of
confidences, which its ``torch.topk`` breaks by the row's place in the tensor and this loop
by column order: ``policies.topk_per_row``); random draws happen in
the same order and shapes, so with ``generator=None`` and ``torch.manual_seed(s)`` the
reference and this loop agree at any temperature too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import Canvas, as_rows
from unmask.config import SampleConfig, check_block_length
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.messages import nearest_multiples
from unmask.sampling.ar import (
    RowGenerators,
    check_token_ids,
    row_generators,
    separate_head,
    start_empty_prompts,
)
from unmask.sampling.cache import (
    NoCache,
    check_cache_name,
    exact_head,
    make_cache,
    widened,
)
from unmask.sampling.cache import shift_logits as shift_logits  # re-exported: it used to live here
from unmask.sampling.penalties import (
    Penalties,
    PenaltyConstraint,
    banned_ids,
    special_ids,
)
from unmask.sampling.policies import (
    CONFIDENCES,
    POLICIES,
    REMASKING,
    Draws,
    RowDraws,
    StepState,
    _rand,
    make_policy,
    most_confident,
    num_transfer_tokens,
    random_confidence,
    scorer,
)

# Re-exported: these lived here before the decoder protocol (``protocol``) took them.
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    MaskPredictor,
    StepCallback,
    StepError,
    ViewCallback,
    cut_at_eos,
    decode_generations,
    make_generator,
    rows_finished,
    step_together,
)
from unmask.sampling.protocol import model_device as _model_device
from unmask.sampling.registry import (
    MAX_STEPS,
    SIGMA_HINT,
    Decoder,
    Prompts,
    Target,
    check_steps,
    refuse_top_k,
    register_decoder,
)
from unmask.schedules import schedule_of


def add_gumbel_noise(
    logits: Tensor,
    temperature: float,
    generator: Draws = None,
    window: tuple[int, int] | None = None,
) -> Tensor:
    """Gumbel-max perturbation whose argmax samples ``softmax(logits / temperature)``.

    LLaDA's ``add_gumbel_noise`` in float64 (low precision Gumbel-max hurts quality,
    arXiv:2409.02908), taken in log space: ``logits - temperature * log(-log u)``, the log of
    LLaDA's ``exp(logits) / (-log u) ** temperature``, so the same argmax, but finite at any
    temperature (LLaDA's form overflows past ~150 and underflows to 0 / 0 = NaN on a forbidden
    token, which argmax then picks); temperature 0 returns the logits unchanged (argmax
    decoding). With ``window = (lo, hi)`` only columns ``[lo, hi)``
    are perturbed and returned, (B, hi - lo, V), while the uniform draws still cover the
    whole (B, L, V) shape, so the generator's stream, and the samples, are the same.
    ``generator``: one, or one per row (``RowDraws``: each row draws as alone).
    """
    temperature = min(temperature, 1e300)  # as uniform as any larger one; the product stays
    # finite (log(-log u) lies within about [-37, 4])
    if window is not None:
        lo, hi = window
        if temperature == 0:
            return logits[:, lo:hi]
        noise = _rand(logits.shape, torch.float64, logits.device, generator)[:, lo:hi]  # (B, W, V)
        return logits[:, lo:hi].to(torch.float64) - temperature * (-torch.log(noise)).log()
    if temperature == 0:
        return logits
    noise = _rand(logits.shape, torch.float64, logits.device, generator)  # (B, L, V)
    return logits.to(torch.float64) - temperature * (-torch.log(noise)).log()


_COLUMN_POLICIES = {name: POLICIES[name] for name in ("llada", "threshold", "factor", "entropy")}
"""The built-in commit policies: each reads the logits of the step's candidates alone."""
_OWN_SCORES = {name: REMASKING[name] for name in ("low_confidence", "random")}
"""The built-in remasking scores (a random one draws with the run's ``Draws``)."""
_OWN_CONFIDENCES = {name: CONFIDENCES[name] for name in ("prob", "margin", "neg_entropy")}
"""The built-in confidence measures (none draws)."""


def rows_draw_alone(config: SampleConfig) -> bool:
    """Whether the commit loop under ``config`` can run rows seeded one seed each in one
    batch (``Denoiser(generator=[...])``), each row drawing what it draws alone: its commit
    policy and remasking are built-in ones, whose draws and choices are row by row (a
    registered one, or a registered confidence measure, may compare rows or draw from the
    generator as it likes)."""
    return (POLICIES.get(config.policy) is _COLUMN_POLICIES.get(config.policy) is not None
            and REMASKING.get(config.remasking) is _OWN_SCORES.get(config.remasking) is not None
            and CONFIDENCES.get(config.confidence)
            is _OWN_CONFIDENCES.get(config.confidence) is not None)


def rows_apart(prompts: Prompts, mask_id: int, *, cache: str = "none") -> str | None:
    """Why a row of ``prompts`` seeded one seed each must run a run of its own in the commit
    loop, though its options let seeded rows share one (``rows_draw_alone``), else None: in
    a batch beside other rows (of these prompts, or a server's other requests) it would not
    write what it writes alone. A run of that row alone is what it is, of course.

    - A prompt of [MASK]s alone: its canvas is all [MASK], so every column of a model without
      absolute positions has the same hidden state and the confidences tie in exact
      arithmetic; rounding breaks the tie, and a batch (other matrix shapes) rounds otherwise
      than the row alone (float64 too). An empty prompt has a start token instead
      (``start_empty_prompts``).
    - A [MASK] in a prompt under a KV cache other than ``none`` (``llada``): the cache
      recomputes from the batch's first earlier mask (``WindowCache``), in every row, so the
      other rows' approximate logits are not those of their runs alone.

    The rows to run alone are those ``row_apart`` names (``Decoder.rows_apart``); the others
    still share one run (``unmask.api.run_rows``, and greedy batches of ``api.generate``)."""
    why = [row_apart(r, mask_id, cache=cache) for r in as_rows(prompts)]
    return next((w for w in why if w is not None and w.startswith("a prompt of")),
                next((w for w in why if w is not None), None))


def row_apart(row: Sequence[int] | Tensor, mask_id: int, *, cache: str = "none") -> str | None:
    """Why the row ``row`` (prompt ids) must run alone (``rows_apart``), else None: the rows
    to run apart are these, while the others of a batch still share one run."""
    ids = [int(t) for t in row]
    if ids and all(t == mask_id for t in ids):
        return "a prompt of [MASK]s alone"
    if cache != "none" and mask_id in ids:
        return f"a [MASK] in a prompt under cache {cache!r}"
    return None


def model_logit_shift(model: Any) -> bool:
    """Whether ``model.config.logit_shift`` is set (default False)."""
    return bool(getattr(getattr(model, "config", None), "logit_shift", False))


START_TOKEN_NOTE = (
    "an empty prompt counts 1 token here: the decoder starts it with a start token, the "
    "model's EOS (in unmask's training data, the separator every document follows), or the "
    "BOS a published model records"
)
"""What a length refusal adds where an empty prompt was given its start token, under every
decoder that gives one (``ModelFacts.starts_empty_prompts``: ``start_empty_prompts`` here and
in ``bd3lm``, the causal decoders' ``start_id``; ``api._check_fits``): ``ModelFacts.start_id``.
"""


def unguided_starts(prompt_index: Tensor, started: Sequence[bool], column: int) -> Tensor:
    """``prompt_index`` (B, L) with ``column`` cleared in the ``started`` rows: a start token
    (``start_empty_prompts``) that guidance does not blank out."""
    if not any(started):
        return prompt_index
    out = prompt_index.clone()
    out[torch.tensor(started, device=out.device), column] = False
    return out


def forbid_tokens(token_ids: Sequence[int]) -> Callable[[Tensor], Tensor]:
    """A logits processor that sets the given tokens' logits to ``-inf`` (LLaDA
    ``logits_eos_inf``)."""
    ids = list(token_ids)

    def proc(logits: Tensor) -> Tensor:  # (B, L, V), filled in place (no copy per step)
        index = torch.tensor(ids, dtype=torch.long, device=logits.device)
        return logits.index_fill_(-1, index, float("-inf"))

    proc.columnwise = True  # type: ignore[attr-defined]  # each column's logits alone
    return proc


def commit_bans(model_config: Any, mask_id: int) -> list[int]:
    """The ids the commit loop (``Denoiser``) never proposes, so never commits: ``mask_id``
    and the checkpoint's ``banned_ids`` ([PAD], BOS, the FIM sentinels; not EOS) but
    ``[EMPTY]``, the filler an infilled gap's unused slots take (``unmask.infill``: its gap
    constraint decides where); free text bans it too (``Denoiser.for_prompts``, ``BlockRun``).
    The ban is on the logits, before proposals and confidences, so a confidence is that of
    an allowed token. A model without a config (a plain callable) bans ``mask_id`` alone."""
    empty = getattr(model_config, "empty_id", None)
    return sorted({*banned_ids(model_config), int(mask_id)} - {empty})


def forbid_empty(canvas: Canvas, model: Any) -> None:
    """Keep ``[EMPTY]`` (``model.config.empty_id``, where the model was trained with it) out
    of free text: a ban on ``canvas``'s logits, which ``commit_bans`` leaves out because an
    infilled gap's unused slots take it. The flat loop (``Denoiser.for_prompts``) and each
    block of ``BlockRun`` add it; a model without one adds nothing."""
    empty_id = getattr(getattr(model, "config", None), "empty_id", None)
    if empty_id is not None:
        canvas.constraints.append(forbid_tokens([empty_id]))


def split_steps(steps: int, num_blocks: int) -> list[int]:
    """``steps`` over ``num_blocks`` blocks as evenly as they go, the extra ones first (10 over
    4: 3, 3, 2, 2; a multiple: ``steps / num_blocks`` each): the total is ``steps``."""
    base, extra = divmod(steps, num_blocks)
    return [base + (b < extra) for b in range(num_blocks)]


def busy_blocks(masked: Tensor, num_blocks: int) -> list[bool]:
    """Which of ``num_blocks`` equal blocks of the (B, region_len) ``masked`` region hold a
    mask in some row (one host read)."""
    return masked.reshape(masked.shape[0], num_blocks, -1).any(dim=2).any(dim=0).tolist()


def spread_steps(steps: int, busy: Sequence[bool]) -> list[int]:
    """``steps`` over the blocks where ``busy`` (``split_steps``), none to the others (an
    infill template's text between its gaps: a block with no mask takes no step,
    ``Denoiser._settle``), so the run takes the steps asked for where masks are; every block
    where none is busy or all are (``split_steps``)."""
    if all(busy) or not any(busy):
        return split_steps(steps, len(busy))
    shares = iter(split_steps(steps, sum(busy)))
    return [next(shares) if b else 0 for b in busy]


def validate(
    config: SampleConfig, *, prompt_length: int = 0, max_seq_len: int | None = None,
    split: bool = False, busy: Sequence[bool] | None = None,
) -> tuple[int, int]:
    """Check lengths and options; return (num_blocks, steps_per_block). Raises ``UserError``.

    ``steps`` must be a multiple of the number of blocks for the scheduled ``llada`` policy
    (LLaDA's rule), unless ``split`` (a caller that computes the steps, as infilling under a
    cap: they are spread over the blocks, ``split_steps``). Dynamic policies (threshold,
    factor, entropy) take ``steps`` as their bound, spread the same way. Where steps are
    spread they must be at least the blocks (each block takes a step); steps_per_block is
    then the first block's share. ``busy``, under ``split``: which blocks hold a mask (the
    others take no step, ``spread_steps``); the steps must then be at least those.
    """
    if config.gen_length <= 0:
        raise UserError(f"gen_length must be positive, got {config.gen_length}")
    if config.steps <= 0:
        raise UserError(f"steps must be positive, got {config.steps}")
    check_steps(config)  # MAX_STEPS
    check_block_length(config.gen_length, config.block_length)
    block_length = config.gen_length if config.block_length is None else config.block_length
    num_blocks = config.gen_length // block_length
    dynamic = make_policy(config).dynamic  # also checks the policy name and its parameters
    working = num_blocks  # the blocks that take a step
    if split and busy is not None and len(busy) == num_blocks and any(busy):
        working = sum(map(bool, busy))
    if config.steps < working and (dynamic or split):
        some = working < num_blocks  # the others hold no mask: they take no step
        raise UserError(
            f"steps ({config.steps}) must be at least the number of blocks"
            f"{' with a mask' * some} ({f'{working} of ' * some}{num_blocks} = gen_length "
            f"{config.gen_length} / block_length {block_length}): each block"
            f"{' with a mask' * some} takes a step; try {working} or longer blocks"
        )
    if config.steps % num_blocks and not (dynamic or split):
        raise UserError(
            f"steps ({config.steps}) must be a multiple of the number of blocks ({num_blocks} = "
            f"gen_length {config.gen_length} / block_length {block_length}); "
            f"try {nearest_multiples(config.steps, num_blocks)}"
        )
    if not (config.temperature >= 0 and math.isfinite(config.temperature)):
        raise UserError(f"temperature must be a finite number >= 0, got {config.temperature}")
    if not (config.cfg_scale >= 0 and math.isfinite(config.cfg_scale)):
        raise UserError(f"cfg_scale must be a finite number >= 0, got {config.cfg_scale}")
    scorer(config)  # raises for an unknown remasking or confidence name
    check_cache_name(config.cache)
    if max_seq_len is not None and prompt_length + config.gen_length > max_seq_len:
        raise UserError(
            f"prompt ({prompt_length} tokens) + gen_length ({config.gen_length}) = "
            f"{prompt_length + config.gen_length} exceeds the model's max_seq_len ({max_seq_len}); "
            f"use gen_length <= {max(max_seq_len - prompt_length, 0)} or a shorter prompt"
        )
    return num_blocks, split_steps(config.steps, num_blocks)[0]


def check_ids(canvas: Canvas, vocab_size: int | None) -> None:
    """Refuse in one line a canvas holding an id the model has no embedding for (negative, or
    ``>= vocab_size``, as an id of another tokenizer): it failed inside the embedding with an
    ``IndexError``. Padding counts too (the model embeds it); ``vocab_size`` None (a plain
    callable) checks nothing."""
    check_token_ids(canvas.tokens, vocab_size)


class Denoiser(DecoderRun):
    """One sampling run as a state object: the loop of ``sample``, one step at a time.

    The ``llada`` decoder's run (``unmask.sampling.protocol.DecoderRun``); it shares forward
    passes (``step_together``) unless a KV cache holds state of its own canvas.

    ``sample`` is ``Denoiser(...).run()``; a server that shares forward passes between
    requests drives many denoisers with ``step_together``. The run is the same either way:

    - ``needs_model``: whether the next step calls the model (False for a step the policy
      knows is empty under ``skip_empty_steps``; ``skip()`` takes it);
    - ``model_inputs()``: the (B, L) tokens and padding mask of the next forward (2B rows
      with classifier-free guidance: the conditional rows, then the unconditional ones);
    - ``step(logits)``: given the logits of those inputs (after the logit shift), one
      denoising step: guidance, constraints, proposals, confidences, commit;
    - ``advance()``: one step through the ``cache`` policy (which calls the model itself);
    - ``done``, ``result()``.

    Blocks start and end inside ``step``/``skip``, in the order of LLaDA's loop. See
    ``sample`` for the semantics; construction validates and raises ``UserError``.
    """

    def __init__(
        self,
        model: MaskPredictor,
        canvas: Canvas,
        config: SampleConfig,
        *,
        eos_id: int | None = None,
        generator: torch.Generator | RowGenerators | RowDraws | None = None,
        return_history: bool = False,
        step_callback: StepCallback | None = None,
        on_view: ViewCallback | None = None,
        split: bool = False,
        stop_at_eos: bool = False,
    ) -> None:
        if config.decoder not in ("auto", "llada", "bd3lm"):
            raise UserError(
                f"decoder {config.decoder!r} is not the commit loop: it has its own loop "
                "(unmask.sampling.choose_decoder picks it; `unmask generate` runs it)"
            )
        region_len = canvas.region[1] - canvas.region[0]
        max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
        check = dataclasses.replace(config, gen_length=region_len)
        busy = self._busy(canvas, config) if split else None
        self.num_blocks, self.steps_per_block = validate(
            check, prompt_length=canvas.length - region_len, max_seq_len=max_seq_len,
            split=split, busy=busy,
        )
        # the total: steps (split: over the blocks that hold a mask, the others take none)
        self._block_steps = (split_steps(config.steps, self.num_blocks) if busy is None
                             else spread_steps(config.steps, busy))
        self.block_length = region_len // self.num_blocks
        refuse_top_k("llada" if config.decoder == "auto" else config.decoder, config)
        self.model, self.config, self.eos_id = model, config, eos_id
        self.gen_length = region_len
        # prompt_masks 'fill': the schedule of a block counts every mask before its end (a
        # [MASK] in the prompt too), so every mask is filled; 'reference': only the block's
        # own masks, as LLaDA's reference (prompt masks then take their budget).
        self._count_from_zero = config.prompt_masks == "fill"
        self.score = scorer(config)
        self.policy = make_policy(config)
        # the counts follow the schedule the checkpoint was trained with (linear: LLaDA's)
        self.schedule = schedule_of(getattr(model, "config", None))
        self.policy.use_schedule(self.schedule)
        self._floor: Tensor | None = None  # (B, steps_per_block): a dynamic policy's minimum
        self.cache = make_cache(config, model)

        check_ids(canvas, getattr(getattr(model, "config", None), "vocab_size", None))
        device = _model_device(model) or canvas.device
        canvas = canvas.to(device).clone()
        if config.forbid_eos:
            if eos_id is None:
                raise UserError("forbid_eos needs the EOS id (eos_id is None)")
            canvas.constraints.append(forbid_tokens([eos_id]))
        # Never propose [MASK] (a committed mask would leave its position open and stall a
        # dynamic block) nor another special token but EOS ([PAD], BOS, the FIM sentinels):
        # ``commit_bans``. Trained models never rank them first (they are never a target), so
        # this keeps LLaDA's reference output; an untrained model wrote [PAD] and BOS.
        canvas.constraints.append(forbid_tokens(
            commit_bans(getattr(model, "config", None), canvas.mask_id)))
        penalties = Penalties.of(config)
        if penalties is not None:
            ids = {*special_ids(getattr(model, "config", None)), canvas.mask_id,
                   *(() if eos_id is None else (eos_id,)), *penalties.exempt}

            def penalty(p: Penalties) -> PenaltyConstraint:
                return PenaltyConstraint(p, mask_id=canvas.mask_id, locked=canvas.locked,
                                         attention_mask=canvas.attention_mask,
                                         exempt=sorted(ids))

            # r, a and f first, on the model's own logits as in unconstrained generation: a
            # gap's constraint shifts its best allowed logit to 0, which CTRL's division
            # cannot lower (a penalty after it did nothing); the bans after them still ban.
            if penalties.counted:
                canvas.constraints.insert(0, penalty(dataclasses.replace(penalties, ngram=0)))
            # the n-gram ban last: it never takes a position's last allowed token
            if penalties.ngram:
                canvas.constraints.append(penalty(dataclasses.replace(
                    penalties, repetition=1.0, presence=0.0, frequency=0.0)))
        self.canvas = canvas
        self.generator: Draws = (make_generator(config.seed, device) if generator is None
                                 else generator if isinstance(generator, torch.Generator)
                                 else self._row_draws(generator, config))  # a generator a row
        self.shift = model_logit_shift(model)
        # None: the model's whole logits (a forward without hidden states; a compiled twin,
        # whose graphs were compiled, and CUDA graphs captured, for its logits: as ``ar``)
        self._head = None if hasattr(model, "_orig_mod") else separate_head(model)

        self.x = canvas.tokens  # (B, L), updated in place
        self.attn = canvas.attention_mask
        self._attn2 = (
            None if self.attn is None else torch.cat([self.attn, self.attn], dim=0)
        )  # (2B, L)
        self.history: list[Tensor] | None = [] if return_history else None
        self.step_callback = step_callback
        self.on_view = on_view
        self.mask_id = canvas.mask_id
        self.nfe = 0
        self.steps = 0  # steps done, skipped empty steps included
        self.block = 0
        self.block_step = 0
        # generation (``for_prompts``): a row whose finished blocks hold EOS has ended
        self._stop_at_eos = stop_at_eos and eos_id is not None and not config.forbid_eos
        self._ended_at: int | None = None  # where every row had ended (``_all_ended``)
        self._lo: tuple[int, int] | None = None  # (step, first column) of ``_read_window``
        self._fill_alone = (isinstance(self.generator, RowDraws) or not self.policy.dynamic
                            or not (config.temperature > 0
                                    or config.remasking != "low_confidence"))
        self._enter_block()
        self._settle()

    @staticmethod
    def _busy(canvas: Canvas, config: SampleConfig) -> list[bool] | None:
        """Under ``split``: which blocks of the region hold a mask in some row (``validate``,
        ``spread_steps``); None where the blocks do not divide the region (``validate``
        refuses) or a mask lies before it (it stays a candidate of every block, so a block
        with none of its own may still commit)."""
        start, end = canvas.region
        bl = end - start if config.block_length is None else config.block_length
        if bl <= 0 or end <= start or (end - start) % bl:
            return None
        masked = canvas.masked
        if bool(masked[:, :start].any()):
            return None
        return busy_blocks(masked[:, start:end], (end - start) // bl)

    def _row_draws(self, generators: RowGenerators | RowDraws,
                   config: SampleConfig) -> RowDraws:
        """A generator per row (``RowDraws``): row i's run alone has the canvas of its real
        columns (the padding is on the left), whose draws it makes here (given as
        ``RowDraws``: the widths it says, as ``BlockRun``'s blocks)."""
        if not rows_draw_alone(config):
            raise UserError(f"policy {config.policy!r}, remasking {config.remasking!r}, "
                            f"confidence {config.confidence!r}: a registered one (not built "
                            "in) draws from one generator per run, so seeded rows need a "
                            "run each")
        if isinstance(generators, RowDraws):
            return generators
        tokens = self.canvas.tokens
        return RowDraws.of(generators, (tokens.shape[0], tokens.shape[1]),
                           self.canvas.attention_mask)

    # -- state -------------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def shares_forward(self) -> bool:
        """True without a KV cache (a cache holds per-block state of this canvas)."""
        return isinstance(self.cache, NoCache)

    @property
    def why_alone(self) -> str:
        return (
            f"cache {self.config.cache!r} cannot share forward passes; use cache 'none' "
            "(or run it alone)"
        )

    def view(self) -> Tensor:
        start, end = self.canvas.region
        return self.x[:, start:end]  # (B, G)

    @property
    def done(self) -> bool:
        """Whether every block is finished."""
        return self.block >= self.num_blocks

    @property
    def block_bounds(self) -> tuple[int, int]:
        """[start, end) columns of the current block."""
        start = self.canvas.region[0] + self.block * self.block_length
        return start, start + self.block_length

    @property
    def needs_model(self) -> bool:
        """Whether the next step calls the model (False when done or when it may be skipped)."""
        return not self.done and not (
            self.config.skip_empty_steps and self.policy.step_is_empty(self.block_step)
        )

    def _counted(self, masked: Tensor) -> Tensor:
        """The masks (B, n) the current block's schedule counts (see ``prompt_masks``)."""
        block_start, block_end = self.block_bounds
        return masked[:, 0 if self._count_from_zero else block_start : block_end]

    def rows_done(self) -> Tensor:
        """(B,) bool: the rows whose runs alone have finished the current block (every row
        once the run is done; under a dynamic policy also a row with none of the masks its
        block counts left, which waits for the batch's: ``step`` gives it no candidate)."""
        if self.done or not self.policy.dynamic:
            return torch.full((self.batch_size,), self.done, dtype=torch.bool,
                              device=self.x.device)
        return ~self._counted(self.canvas.masked).any(dim=1)

    def _enter_block(self) -> None:
        block_start, block_end = self.block_bounds
        masked = self.canvas.masked  # (B, L)
        # a block with no share (``spread_steps``) starts with no mask and is skipped
        # (``_settle``); one step should a mask be left (never with the built-in policies)
        self.steps_per_block = max(1, self._block_steps[self.block])
        counted = self._counted(masked)  # llada: LLaDA's masks
        if self.policy.dynamic:
            # The share is for the block's own masks; the masks before it (a [MASK] of the
            # prompt) are candidates it commits too, so they come on top: one step per token
            # never binds. No more than one step per mask: each commits >= 1 per row.
            # Each row's own bound and floor, so a row writes what it writes alone: another
            # row's prompt masks must not shorten or stretch its schedule.
            counted = masked[:, :block_end]  # every candidate, prompt masks too (reference)
            before = masked[:, :block_start].sum(dim=1).tolist()  # (B,)
            own = counted.sum(dim=1).tolist()  # (B,)
            bounds = [min(self.steps_per_block + int(b), max(1, int(n)))
                      for b, n in zip(before, own, strict=True)]
            self.steps_per_block = max(bounds)
            # the minimum commits of each step (LLaDA 2.x): each row's masks are committed
            # within its own bound (zeros after it: the row has none left)
            floor = torch.zeros(len(bounds), self.steps_per_block, dtype=torch.long,
                                device=masked.device)  # (B, steps_per_block)
            for i, steps in enumerate(bounds):
                floor[i, :steps] = num_transfer_tokens(counted[i : i + 1], steps, self.schedule)[0]
            self._floor = floor
        self.policy.start_block(counted, self.steps_per_block)
        self.cache.start_block(masked, block_start, block_end)
        self.block_step = 0
        # (B,) the rows with no candidate in this block (every mask before its end filled):
        # alone, such a row's run skips the block (``_settle``), so here it draws nothing
        self._idle = ~masked[:, :block_end].any(dim=1)
        self._idle_rows = int(self._idle.sum())  # one read a block, none a step

    def _settle(self) -> None:
        """Move on past finished blocks (starting the next one) until one has work or none is
        left. A block that starts with no candidate in any row (no mask before its end: an
        infill template's text between its gaps, under ``block_length``) is finished at once:
        no policy can commit anything in it, and its steps ran the model for nothing (the
        ``llada`` schedule's share of steps each; the dynamic policies ended it already)."""
        while not self.done:
            bound = self.policy.dynamic and self.block_step >= self.steps_per_block
            idle = self.block_step == 0 and self._idle_rows == self.batch_size
            if not (bound or idle) and not self.policy.block_done(
                self.block_step, self.steps_per_block, self._counted(self.canvas.masked)
            ):
                return
            self.block += 1
            if self._stop_at_eos and not self.done and self._all_ended():
                self.block = self.num_blocks  # the run is done: nothing after EOS is shown
            if not self.done:
                self._enter_block()

    def _all_ended(self) -> bool:
        """At a block boundary of a generation: fill the masks after the finished blocks of
        each row that has ended (no mask up to the boundary, EOS in its region, or text a stop
        sequence is sure to cut: ``DecoderRun.stopped_rows``) with EOS, and
        whether every row has (the run then stops there: ``GenerateResult.ended_at``). Exact
        for the text: the loop only commits masks, so what a row wrote up to its EOS never
        changes after; an ended row's later blocks would only pad it (as ``BlockRun``'s EOS
        fill, which stops the same way). A row gets the same ids alone as in a batch.

        A row is filled before the others end only where that cannot move another row's
        draws: a generator per row (``RowDraws``), a policy whose steps per block are fixed,
        or a run that draws nothing. Under one generator shared by the batch, a dynamic
        policy and draws (temperature, random remasking), the filled row's block would take
        fewer steps, so fewer draws, and the other rows' later noise would shift: there the
        rows are filled only when every row has ended, and the run stops."""
        end = self.block_bounds[0]  # the finished blocks' end
        x, masked = self.x, self.canvas.masked
        done = ~masked[:, :end].any(dim=1)  # (B,) rows with every column up to it committed
        ended = done & (rows_finished(x[:, self.canvas.region[0] : end], self.eos_id)
                        | self.stopped_rows(done))  # EOS, or a stop sequence (B,)
        every = bool(ended.all())
        if not bool(ended.any()) or not (every or self._fill_alone):
            return False
        rest = x[:, end:]  # a view: written in place
        rest[ended.unsqueeze(1) & masked[:, end:]] = self.eos_id
        if isinstance(self.generator, RowDraws):  # an ended row draws no more, as alone
            self.generator.out = [o or e for o, e in zip(
                self.generator.out, ended.tolist(), strict=True)]
        if not every:
            return False
        self._ended_at = end
        return True

    def _after_step(self) -> None:
        self.steps += 1
        self.block_step += 1
        self._settle()  # first: the EOS a finished block's end fills (``_all_ended``) is shown
        if self.history is not None:
            self.history.append(self.x.clone())
        if self.step_callback is not None:
            self.check_finite()  # not a canvas of garbage: NaN logits
            self.step_callback(self.steps, self.x)
        self._report()

    # -- stepping ----------------------------------------------------------------------------------

    def model_inputs(self) -> tuple[Tensor, Tensor | None]:
        """(tokens (B, L) or (2B, L) with guidance, padding mask or None) of the next forward."""
        if self.config.cfg_scale > 0:
            un_x = self.x.clone()
            un_x[self.canvas.prompt_index] = self.canvas.mask_id  # unconditional: prompt masked out
            return torch.cat([self.x, un_x], dim=0), self._attn2  # (2B, L)
        return self.x, self.attn

    def skip(self) -> None:
        """Take a step that commits nothing without calling the model (``skip_empty_steps``):
        the canvas, and so the logits, stay as they are."""
        assert not self.needs_model, "skip() needs a skippable step"
        self._after_step()

    def step(self, logits: Tensor) -> None:
        """One denoising step from the logits (B', L, V) of ``model_inputs()`` (logit shift
        applied)."""
        config, canvas, x = self.config, self.canvas, self.x
        if config.cfg_scale > 0:
            cond, un = torch.chunk(logits, 2, dim=0)
            logits = un + (config.cfg_scale + 1) * (cond - un)  # (B, L, V)
        self.nfe += 1
        logits = canvas.apply_constraints(logits)
        masked = canvas.masked  # (B, L)
        block_start, block_end = self.block_bounds

        candidates = masked.clone()
        candidates[:, block_end:] = False
        live = None  # (B,) bool: the rows whose runs alone take this step (None: every row)
        if self.policy.dynamic:  # a row whose block is done waits for the batch's (alone, it
            # would move on), or it commits a prompt mask now (prompt_masks 'reference')
            live = ~self.rows_done()  # (a step never runs once the run is done)
            candidates[~live] = False
        elif config.skip_empty_steps:  # a row with nothing to commit skips the step alone
            empty = self.policy.empty_rows(self.block_step)
            live = ~self._idle if empty is None else ~(empty | self._idle)
        elif self._idle_rows:  # a row with no candidate in the block skips it alone
            live = ~self._idle
        if isinstance(self.generator, RowDraws):  # those rows alone draw now
            self.generator.live = [True] * len(x) if live is None else live.tolist()
        # Proposals and scores are needed only for the candidates, which lie in the window
        # [first candidate column, block end): the Gumbel perturbation and the deterministic
        # confidences (a float64 softmax over V per position) are computed there alone;
        # random draws keep the full (B, L[, V]) shape so a seed gives the same stream as
        # LLaDA's reference loop.
        if self._lo is not None and self._lo[0] == self.steps and not self.policy.dynamic:
            w0 = self._lo[1]  # ``_read_window``'s for this step: the same columns, no read
        else:
            cols = candidates.any(dim=0).nonzero()
            w0 = int(cols[0]) if len(cols) else block_start
        x0 = x.clone()
        noisy = add_gumbel_noise(logits, config.temperature, self.generator,
                                 window=(w0, block_end))  # (B, block_end - w0, V)
        x0[:, w0:block_end] = torch.argmax(noisy, dim=-1)
        if config.remasking == "low_confidence":  # a registered confidence measure: no draws
            x0_p = torch.full(x.shape, float("-inf"), dtype=torch.float64, device=x.device)
            x0_p[:, w0:block_end] = self.score(
                logits[:, w0:block_end], x0[:, w0:block_end], self.generator
            )
        else:
            x0_p = self.score(logits, x0, self.generator)  # (B, L)
        x0 = torch.where(masked, x0, x)
        confidence = torch.where(candidates, x0_p, torch.full_like(x0_p, float("-inf")))
        state = StepState(
            step=self.steps,
            block=self.block,
            block_step=self.block_step,
            steps_per_block=self.steps_per_block,
            block_start=block_start,
            block_end=block_end,
            x0=x0,
            confidence=confidence,
            candidates=candidates,
            logits=logits,
        )
        transfer = self.policy.select(state)  # (B, L)
        if self._floor is not None:  # dynamic: at least the scheduled count, best first
            transfer = transfer | most_confident(confidence, self._floor[:, self.block_step])
        transfer = transfer & candidates
        for proc in canvas.constraints:  # the n-gram ban among this step's own commits too
            if isinstance(proc, PenaltyConstraint):
                x0 = proc.settle(x, transfer, x0, confidence, noisy, w0)
        canvas.commit(transfer, x0)
        self._after_step()

    def advance(self) -> None:
        """One step on its own: skip it, or run the model through the cache policy and ``step``."""
        if not self.needs_model:
            self.skip()
            return
        tokens, attn = self.model_inputs()
        head = self._narrow_head()
        with torch.no_grad():
            if head is None:
                logits = self.cache.logits(self.model, tokens, attn, shift=self.shift)
            else:  # the head runs on the columns the step reads alone (``_narrow_head``)
                logits = self.cache.logits(self.model, tokens, attn, shift=self.shift,
                                           head=head, window=self._read_window())
        self.step(logits)  # (B', L, V)

    def _narrow_head(self) -> Any:
        """The model's output head when ``advance`` may run it on the columns the step reads
        alone (``_read_window``): the model returns hidden states (``separate_head``) and its
        head gives the same bits on a window (``exact_head``), the cache policy is a built-in
        one, and nothing in the step reads other columns: the
        commit policy is a built-in one, the score is ``low_confidence`` (computed on the
        window) or ``random`` (no logits), and every canvas constraint works column by
        column (``forbid_tokens``; the penalties' ``PenaltyConstraint``, whose counts come
        from the tokens). None otherwise: whole logits (a gap constraint of an infill reads
        other columns; so may a registered policy, score or constraint). The tokens are the
        same either way: the Gumbel noise is still drawn over the whole (B, L, V)."""
        if self._head is None or not self.cache.narrow_head or not exact_head(self._head):
            return None
        if POLICIES.get(self.config.policy) is not _COLUMN_POLICIES.get(self.config.policy):
            return None
        if self.config.remasking != "low_confidence" and self.score is not random_confidence:
            return None
        for proc in self.canvas.constraints:
            if not (isinstance(proc, PenaltyConstraint) or getattr(proc, "columnwise", False)):
                return None
        return self._head

    def _read_window(self) -> tuple[int, int] | None:
        """Columns ``[lo, hi)`` the next step reads: from the first masked column before the
        block end (a mask inside the prompt may be a candidate) to the block end, ``widened``
        to enough head rows for the whole canvas' bits (None: whole logits)."""
        block_start, block_end = self.block_bounds
        cols = self.canvas.masked[:, :block_end].any(dim=0).nonzero()
        lo = int(cols[0]) if len(cols) else block_start
        # kept for this step's ``step``: under a scheduled policy its candidates are these
        # masks (a dynamic one leaves out rows whose block is done), so its window starts here
        self._lo = (self.steps, lo)
        rows = self.batch_size * (2 if self.config.cfg_scale > 0 else 1)
        return widened((lo, block_end), rows)

    def result(self) -> GenerateResult:
        return GenerateResult(
            tokens=self.x,
            region=self.canvas.region,
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            history=self.history,
            attention_mask=self.attn,
            ended_at=self._ended_at,
        )

    @classmethod
    def for_prompts(
        cls,
        model: MaskPredictor,
        prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
        config: SampleConfig,
        *,
        mask_id: int,
        pad_id: int,
        eos_id: int | None,
        generator: torch.Generator | RowGenerators | None = None,
        return_history: bool = False,
        step_callback: StepCallback | None = None,
        on_view: ViewCallback | None = None,
        start_id: int | None = None,
    ) -> Denoiser:
        """The run of ``generate``: prompts (left-padded) followed by ``config.gen_length``
        masks; an empty prompt starts with ``start_empty_prompts``' token (``start_id``,
        default the EOS). A model trained
        with ``[EMPTY]`` (``config.empty_id``) never proposes it here:
        the filler belongs to the unused slots of infilled gaps, not to free text."""
        validate(config)  # clear messages before any tensor is built
        rows, started = start_empty_prompts(prompt_ids, eos_id=eos_id, pad_id=pad_id,
                                            start_id=start_id)
        max_seq_len = getattr(getattr(model, "config", None), "max_seq_len", None)
        if all(started) and max_seq_len is not None and 1 + config.gen_length > max_seq_len:
            raise UserError(  # the one token of the canvas no prompt asked for: say why
                f"gen_length ({config.gen_length}) + 1 exceeds the model's max_seq_len "
                f"({max_seq_len}): {START_TOKEN_NOTE}; use gen_length <= {max_seq_len - 1}"
            )
        canvas = Canvas.from_prompts(rows, config.gen_length, mask_id=mask_id, pad_id=pad_id)
        canvas = dataclasses.replace(canvas, prompt_index=unguided_starts(
            canvas.prompt_index, started, canvas.region[0] - 1))
        forbid_empty(canvas, model)
        return cls(
            model,
            canvas,
            config,
            eos_id=eos_id,
            generator=generator,
            return_history=return_history,
            step_callback=step_callback,
            on_view=on_view,
            stop_at_eos=True,
        )


def sample(
    model: MaskPredictor,
    canvas: Canvas,
    config: SampleConfig,
    *,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
    split: bool = False,
) -> GenerateResult:
    """Denoise ``canvas`` with ``model`` (LLaDA's reverse process, arXiv:2502.09992).

    The canvas region ``[start, end)`` is split into ``region_len / block_length`` blocks,
    denoised left to right with ``steps / num_blocks`` steps each (``split``: steps that are
    not a multiple of the blocks spread over them, ``split_steps``, only over the blocks that
    hold a mask, ``spread_steps``, so the run takes at most ``steps``: exactly under the
    ``llada`` policy unless a block starts with no mask, below; dynamic policies: until the
    block has no masks left, within their share of ``steps`` plus a step per mask before the
    block, which it fills too). A block that starts with no mask before its end takes no
    step (``Denoiser._settle``). Every step:

    1. logits = model(x) (B, L, V), through the ``cache`` policy (which may recompute only
       part of the canvas); with ``cfg_scale`` > 0 also the unconditional pass
       (prompt positions masked), in one doubled batch: ``un + (cfg_scale + 1)·(cond - un)``;
       Dream-style ``logit_shift`` and the canvas constraints (``forbid_eos`` among them)
       are applied to the logits;
    2. proposals x0 = argmax of the Gumbel-perturbed logits (``add_gumbel_noise``);
    3. confidence of each proposal (``remasking`` / ``confidence``), ``-inf`` for positions
       that are not masked or lie at/after the block end (masks inside the prompt are
       candidates);
    4. the commit policy picks which candidates to write (LLaDA: the top-k per row with
       k from the count schedule fixed at block start; threshold/factor/entropy: as many
       as the confidences allow, at least one per row, and at least the scheduled count
       over the block's bound, which the loop adds for any dynamic policy).

    With ``skip_empty_steps`` a step the policy knows will commit nothing (a zero count of
    the LLaDA schedule) does not call the model; it still counts as a step, not as an NFE.

    The caller's ``canvas`` is not modified. ``generator`` (or ``config.seed`` when it is
    None) drives the Gumbel noise and random remasking; both None = the global RNG.
    The loop itself is ``Denoiser`` (one step at a time).
    """
    return Denoiser(
        model,
        canvas,
        config,
        eos_id=eos_id,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
        split=split,
    ).run()


def generate(
    model: MaskPredictor,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    config: SampleConfig,
    *,
    mask_id: int,
    pad_id: int,
    eos_id: int | None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
) -> GenerateResult:
    """Generate ``config.gen_length`` tokens after each prompt (LLaDA's ``generate``).

    ``prompt_ids``: one prompt (list of ids or 1-D tensor), a batch as a list of lists
    (left-padded with ``pad_id``, with an attention mask passed to the model), or a 2-D
    tensor of equal-length prompts. Special ids come from the model's config; nothing is
    hard-coded. See ``sample`` for the loop and docs/sampling.md for the options.
    """
    return Denoiser.for_prompts(
        model,
        prompt_ids,
        config,
        mask_id=mask_id,
        pad_id=pad_id,
        eos_id=eos_id,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
    ).run()


def loop_takes_seeds(
    decoder: Decoder, config: SampleConfig, prompts: Prompts | None, mask_id: int | None,
) -> bool:
    """``Decoder.takes_seeds`` of a commit-loop decoder (``llada``, ``bd3lm``): its options
    let seeded rows share a run (``rows_draw_alone``) and, for ``prompts`` (with the model's
    ``mask_id``), no row must run apart (``decoder.rows_apart``)."""
    if prompts is not None and mask_id is not None and any(
            decoder.rows_apart(config, prompts, mask_id)):
        return False
    return rows_draw_alone(config)


@register_decoder("llada")
class LLaDADecoder(Decoder):
    """LLaDA's reverse process over a bidirectional mask predictor, with its commit policies
    and KV caches (``Denoiser``)."""

    penalties = True
    row_seeds = True
    summary = "masked diffusion: commit policies (llada, threshold, ...) and KV caches"

    def takes_seeds(
        self, config: SampleConfig, prompts: Prompts | None = None, mask_id: int | None = None,
    ) -> bool:
        return loop_takes_seeds(self, config, prompts, mask_id)

    def rows_apart(self, config: SampleConfig, prompts: Prompts, mask_id: int) -> list[bool]:
        return [row_apart(r, mask_id, cache=config.cache) is not None for r in as_rows(prompts)]

    def uses_steps(self, config: SampleConfig) -> bool:
        return not make_policy(config).dynamic  # dynamic: steps bound the run, not set it

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        if facts.attention != "bidirectional":
            raise UserError(
                f"decoder 'llada' needs a bidirectional model; this checkpoint is "
                f"{facts.attention} (objective {facts.objective})"
                f"{facts.attention_way_out(self.name)}"
            )
        if facts.sedd_graph == "uniform":
            raise UserError(
                "this is a uniform-graph SEDD model; sample it with decoder 'sedd', "
                f"not the commit policy {config.policy!r}"
            )
        if facts.needs_sigma and facts.default_decoder == "sedd":  # embed: api's own line
            raise UserError(
                "decoder 'llada' runs the masked-diffusion commit loop, which cannot give this "
                f"model its noise level: {SIGMA_HINT}"
            )
        if config.edit_threshold is not None:
            raise UserError(
                "edit_threshold (LLaDA 2.1's token editing) applies to block decoding "
                "(decoder bd3lm), not to decoder 'llada'"
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
        device = _model_device(target.model) or "cpu"
        return Denoiser.for_prompts(
            target.model,
            prompt_ids,
            config,
            mask_id=f.mask_id,
            pad_id=f.pad_id,
            eos_id=f.eos_id,
            on_view=on_view,
            generator=None if seeds is None else row_generators(seeds, device),
            start_id=f.start_id,
        )


__all__ = [
    "MAX_STEPS",
    "START_TOKEN_NOTE",
    "Denoiser",
    "GenerateResult",
    "LLaDADecoder",
    "MaskPredictor",
    "StepCallback",
    "StepError",
    "ViewCallback",
    "add_gumbel_noise",
    "check_ids",
    "commit_bans",
    "cut_at_eos",
    "decode_generations",
    "forbid_empty",
    "forbid_tokens",
    "generate",
    "loop_takes_seeds",
    "make_generator",
    "model_logit_shift",
    "row_apart",
    "rows_apart",
    "sample",
    "shift_logits",
    "split_steps",
    "spread_steps",
    "start_empty_prompts",
    "step_together",
    "validate",
]
