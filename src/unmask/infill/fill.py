"""Filling canvases and templates: the sampler loop plus constraint repair, and gap lengths.

Inside:

- ``fill_canvas``: ``unmask.sampling.sample`` on any canvas, then every span that breaks a
  ``CanvasConstraint`` is re-masked and refilled one token per step, so the result always
  satisfies the canvas' constraints (``Filled``).
- ``InfillOptions``: how variable-length gaps are searched and scored.
- ``infill``: a template (text or segments and ``Gap`` s) → ``InfillResult``. Gaps with a
  length range get their length in one of two ways (``InfillOptions.length_mode``):
  ``elbo``: filled at several candidate lengths (in one batch), the completion with the
  lowest ELBO bound (``unmask.evaluate.sequence_elbo``; of the whole text, or per token:
  ``InfillOptions.length_score``) wins, the candidates sharing their masking noise
  (``noise_slots``): training-free, for any mask predictor (beyond ``max_joint``
  combinations one gap at a time, ``_coordinate_search``, within ``max_search_calls``
  model calls, ``search_calls``); ``empty``: one pass at the
  longest length on a model trained with ``[EMPTY]`` (``ModelConfig.empty_id``), whose
  trailing unused slots hold ``[EMPTY]`` and are dropped.
- ``count_elbo_terms``, ``paired_per_token_terms``: how ``per_token`` scores candidates (the
  count estimator, more copies for close calls).

A gap that took in the space before it (``unmask.infill.template.takes_space``) gets it back
in the output unless its fill starts with a space. A gap that starts the text takes a virtual
space (``unmask.infill.template.leads``): a fill's leading space is dropped, and its tokens
are the rest of the text encoded again, so the text never starts with a space it did not have;
such a gap is filled after a locked line break (``START_CONTEXT``), not part of the output.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import Canvas
from unmask.config import (  # noqa: F401 (re-exported)
    LENGTH_MODES,
    LENGTH_SCORES,
    InfillOptions,
    SampleConfig,
)
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.evaluate import _shifted, sequence_elbo_terms
from unmask.infill.automaton import GapConstraint, cached_automaton, vocab_of
from unmask.infill.template import (
    CLOSING,
    Gap,
    GapError,
    Plan,
    Spans,
    layouts_canvas,
    plan_template,
    segment_ids,
)
from unmask.sampling import make_generator, sample
from unmask.sampling.loop import MaskPredictor, StepCallback
from unmask.sampling.policies import make_policy

MAX_ELBO_SAMPLES = InfillOptions.MAX_ELBO_SAMPLES
"""Most noisy copies per candidate (``InfillOptions.elbo_samples``): each candidate's copies
are scored in one model call, (elbo_samples, L, V) logits."""


@dataclass
class Filled:
    """What ``fill_canvas`` returns."""

    tokens: Tensor
    """(B, L) the filled canvas."""
    nfe: int
    """Model evaluations of the sampler (repairs included)."""
    steps: int
    """Denoising steps (repairs included)."""
    repaired: int
    """Spans that broke a constraint after the first pass and were refilled (or completed
    from their automaton, ``max_repair_calls``)."""
    repair_nfe: int = 0
    """The model evaluations of the refills (part of ``nfe``)."""


class SearchLimitError(UserError):
    """A length search that needs more model calls than ``InfillOptions.max_search_calls``,
    refused before any model work. ``str()`` tells the caller to raise the limit as well;
    ``message(raise_hint=False)`` leaves that out, for a caller that does not set the limit
    (the server's clients: its operator does, ``unmask serve --max-search-calls``)."""

    def __init__(self, name: str, variable: int, need: int, limit: int) -> None:
        self.name, self.variable, self.need, self.limit = name, variable, need, limit
        super().__init__(self.message())

    def __reduce__(self) -> tuple[Any, ...]:  # its arguments, not its message (a copy, pickle)
        return (type(self), (self.name, self.variable, self.need, self.limit))

    def message(self, *, raise_hint: bool = True,
                spell: Callable[[str], str] = lambda field: field) -> str:
        """The one-line refusal; ``raise_hint``: ending with how to raise the limit; ``spell``:
        how the caller's users name an ``InfillOptions`` field (the CLI: its flag)."""
        limit, candidates = spell("max_search_calls"), spell("max_candidates")
        return (
            f"{self.name}: choosing the lengths of its {self.variable} variable-length gap"
            f"{'s' * (self.variable != 1)} needs up to {self.need} model calls, over the limit "
            f"of {self.limit} ({limit}); give narrower length ranges or fewer candidates "
            f"({candidates})" + (f", or raise {limit} (0: no limit)" if raise_hint else "")
        )


class FewerStepsThanBlocks(UserError):
    """A fill of fewer ``steps`` than ``blocks`` with a gap (each takes a step) of
    ``block_length`` over the ``length`` tokens from its first gap to its last
    (``infill_config``). Typed, so that a caller that chose the steps itself (the server's
    default, an edit's later round) can tell this refusal from any other without reading its
    words; ``fitting_block_length``: the shortest block length whose blocks the steps cover."""

    def __init__(self, steps: int, blocks: int, length: int, block_length: int) -> None:
        self.steps, self.blocks, self.length = steps, blocks, length
        self.block_length = block_length
        super().__init__(self.message())

    def __reduce__(self) -> tuple[Any, ...]:  # its arguments, not its message (a copy, pickle)
        return (type(self), (self.steps, self.blocks, self.length, self.block_length))

    @property
    def total(self) -> int:
        """Every block of ``block_length`` over the region, with a gap or not."""
        return -(-self.length // self.block_length)

    @property
    def fitting_block_length(self) -> int:
        """The shortest block length whose blocks over the length fit in the steps."""
        return -(-self.length // self.steps)

    def rule(self) -> str:
        """What the steps fall short of: the message between the steps and the advice."""
        some = (f"{self.blocks} of {self.total} with a gap, " if self.blocks < self.total
                else f"{self.blocks}: ")
        return (f"must be at least the number of blocks ({some}the {self.length} tokens from "
                f"the first gap to the last in blocks of {self.block_length}): each block "
                "with a gap takes a step")

    def message(self) -> str:
        return (f"steps ({self.steps}) {self.rule()}; try {self.blocks} steps or block_length "
                f"{self.fitting_block_length}")


def infill_config(config: SampleConfig, canvas: Canvas) -> tuple[SampleConfig, Canvas]:
    """The sampler settings for a canvas with masks anywhere, run with ``sample(...,
    split=True)`` (``fill_canvas``).

    The block region is the canvas region (widened to a multiple of ``block_length`` when
    blocks are asked for; where the canvas is too short for that, the longest block length
    below it that fits, or the shortest longer one where that is more blocks than steps: a
    length search's canvases are often short, ``_fit_blocks``). ``steps`` is capped at the
    most masked positions of a row (one token per step at most), but not below the number
    of blocks with a gap (each takes a step; a block of the template's text alone takes
    none), and never raised above ``config.steps``: spread over the blocks with a gap
    (``unmask.sampling.loop.spread_steps``), the run takes at most the steps asked for (they
    were rounded up to a multiple of the blocks: 30 masks in 4 blocks at steps 10 ran 12,
    past the server's ``--max-steps``; the share of a text-only block was dropped, not spent
    on the gaps). Fewer steps than blocks with a gap, of ``block_length`` over the region, is
    a ``FewerStepsThanBlocks`` (a ``UserError``).
    """
    start, end = canvas.region
    n_blocks = busy = 1
    if config.block_length is not None:
        if config.block_length <= 0:
            raise UserError(f"block_length must be positive, got {config.block_length}")
        length = end - start
        cols = canvas.masked.any(dim=0)  # (L,)
        whole = bool(cols[:start].any())  # a mask before the region: every block counts

        def gaps(bl: int) -> int:
            return _gap_blocks(cols, start, length, bl, whole=whole)

        blocks = gaps(config.block_length)
        if 0 < config.steps < blocks:  # not positive: the sampler's own line
            raise FewerStepsThanBlocks(config.steps, blocks, length, config.block_length)
        bl, n_blocks = _fit_blocks(length, canvas.length, config.block_length, config.steps,
                                   gaps)
        busy = gaps(bl)
        config = dataclasses.replace(config, block_length=bl)
        need = n_blocks * bl
        end = min(canvas.length, start + need)
        start = end - need
        canvas = dataclasses.replace(canvas, region=(start, end))
    masked = canvas.masked[:, start:end].sum(dim=1)
    most = int(masked.max()) if masked.numel() else 0
    steps = min(config.steps, max(1, most, busy))
    if busy > 1 and make_policy(config).dynamic:
        steps = _dynamic_steps(config.steps, steps, canvas.masked[:, start:end], n_blocks,
                               busy)
    elif busy > 1 and -(-steps // busy) * busy <= config.steps:
        # an even share per block with a gap (LLaDA's rule) where it fits in the steps asked
        # for: a block of as many masks as its share commits one a step, as before the cap
        steps = -(-steps // busy) * busy
    return dataclasses.replace(config, steps=steps, gen_length=end - start), canvas


def _gap_blocks(cols: Tensor, start: int, length: int, bl: int, *, whole: bool = False) -> int:
    """Of the blocks of ``bl`` over the ``length`` tokens from ``start``, placed as
    ``infill_config`` places them (ending at the canvas end at the latest), those holding a
    mask (``cols``: (L,) bool, a mask in some row): the others take no step (the sampler's
    ``spread_steps``). ``whole``: every block (a mask before ``start`` is a candidate of each,
    so the sampler spreads its steps over them all)."""
    n = -(-length // bl)
    if whole:
        return n
    end = min(cols.numel(), start + n * bl)
    held = cols[max(0, end - n * bl) : end]
    if n == 1:  # one block, maybe far longer than the canvas (block_length 2**64): no padding
        return int(bool(held.any()))
    held = torch.cat([held, held.new_zeros(n * bl - held.numel())])  # past the canvas: none
    return int(held.reshape(n, bl).any(dim=1).sum())


def _dynamic_steps(asked: int, capped: int, masked: Tensor, n_blocks: int, busy: int) -> int:
    """Steps of a dynamic policy (threshold, factor, entropy) over ``n_blocks`` blocks of the
    (B, L) ``masked`` region. The loop gives each block an even share of the steps as its
    bound of forwards, at most its own masks; masks are rarely spread evenly over a
    template's blocks, so the share of ``capped`` (the masks of the fullest row) would bind
    a full block below one forward per mask while the steps asked for cover them all. Where
    the forwards one per mask in every block take (the fullest row's per block, summed) fit
    in ``asked``, every block's share is the most masks of any block: the policy runs as if
    unbounded, in at most ``asked`` forwards. Else ``capped``, spread: the bound binds. The
    steps go to the ``busy`` blocks that hold a mask only (``spread_steps``)."""
    per_block = masked.reshape(masked.shape[0], n_blocks, -1).sum(dim=2)  # (B, n_blocks)
    need = int(per_block.max(dim=0).values.sum())
    if need > asked:
        return capped
    return busy * max(1, int(per_block.max()))


def _fit_blocks(length: int, room: int, block_length: int, steps: int,
                gaps: Callable[[int], int] | None = None) -> tuple[int, int]:
    """(block length, number of blocks) of a region of ``length`` tokens in a canvas of
    ``room``: whole blocks of ``block_length`` when they fit, else of the longest block
    length below it whose whole blocks do (1 at the latest: ``length <= room``), unless
    that makes more blocks with a gap (``gaps`` of a block length) than ``steps`` (each
    takes a step): then the shortest longer one that fits with at most ``steps`` of them
    (``length`` at the latest: one block). ``gaps`` None: every block counts."""
    bl = min(block_length, room)  # (a longer block alone is longer than the room: a
    while -(-length // bl) * bl > room:  # block_length of 2**64 counted down for ever)
        bl -= 1
    if gaps is None:
        if -(-length // bl) > steps > 0:
            bl = next(n for n in range(-(-length // steps), length + 1)
                      if -(-length // n) * n <= room)
    elif gaps(bl) > steps > 0:
        bl = next(n for n in range(bl + 1, length + 1)
                  if -(-length // n) * n <= room and gaps(n) <= steps)
    return bl, max(1, -(-length // bl))


def _one_per_step(config: SampleConfig, steps: int) -> SampleConfig:
    """LLaDA's count schedule with as many steps as masks: at most one commit per row and step."""
    changes: dict[str, Any] = {"steps": max(1, steps), "block_length": None, "policy": "llada"}
    names = {f.name for f in dataclasses.fields(config)}
    for name, value in (("cache", "none"), ("skip_empty_steps", False)):
        if name in names:
            changes[name] = value
    return dataclasses.replace(config, **changes)


def fill_canvas(
    model: MaskPredictor,
    canvas: Canvas,
    config: SampleConfig,
    *,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    max_repair_calls: int | None = None,
) -> Filled:
    """Fill every masked position of ``canvas``; the result satisfies all its constraints.

    1. ``sample`` with ``config`` (``infill_config``: steps capped at the masks per row, at
       least one per block, never more than ``config.steps``; spread over the blocks).
    2. Spans that break a ``CanvasConstraint`` (possible only when several of their
       positions were committed in the same step, or a mask was left) are re-masked and
       refilled with the LLaDA schedule at one token per step: each commit then sees all
       earlier ones, so the gap automata never let a span break again. That refill makes
       as many model calls as the most re-masked positions of a row; where that is more
       than ``max_repair_calls`` (None: no limit), no refill is made and step 3 completes
       every broken span without the model.
    3. As a last resort (never reached with the built-in policies) a ``GapConstraint`` span
       is completed left to right from its automaton, keeping allowed sampled tokens.
    """
    if not bool(canvas.masked.any()):
        return Filled(tokens=canvas.tokens.clone(), nfe=0, steps=0, repaired=0)
    cfg, run_canvas = infill_config(config, canvas)
    if generator is None:
        generator = make_generator(config.seed)
    res = sample(model, run_canvas, cfg, eos_id=eos_id, generator=generator,
                 step_callback=step_callback, split=True)  # at most the steps asked for
    tokens, nfe, steps = res.tokens, res.nfe, res.steps
    broken = _broken(canvas, tokens)
    repaired = len(broken)
    n1 = 0
    if broken:
        if max_repair_calls is None or _refill_calls(canvas, broken) <= max_repair_calls:
            tokens, n1, s1 = _refill(
                model, canvas, tokens, broken, config, eos_id, generator, step_callback
            )
            nfe, steps = nfe + n1, steps + s1
        complete_broken(canvas, tokens)
        # Only a custom CanvasConstraint, or a mask left outside every constrained span with
        # no model calls left to refill it, can get here.
        left = (tokens == canvas.mask_id) & ~canvas.locked.to(tokens.device)
        if canvas.violations(tokens) or bool(left.any()):  # pragma: no cover
            raise UserError("the canvas constraints could not be satisfied")
    return Filled(tokens=tokens, nfe=nfe, steps=steps, repaired=repaired, repair_nfe=n1)


def complete_broken(canvas: Canvas, tokens: Tensor) -> None:
    """Complete, in place, each ``GapConstraint`` span of ``canvas`` that ``tokens`` (B, L)
    break, left to right from its automaton without the model, keeping the sampled tokens
    it allows (``fill_canvas``'s last resort, and the whole repair of a run that has no
    refill: a SEDD checkpoint's reverse process, ``unmask.infill.continuous``)."""
    for proc in canvas.constraints:
        if isinstance(proc, GapConstraint):
            for r, s, e in proc.violations(tokens):
                seq = [None] * (e - s)
                done = proc.automaton.complete(seq, prefer=tokens[r, s:e].tolist())
                if done is None:  # pragma: no cover - plan_template checked feasibility
                    raise UserError(f"{proc.name}: no token sequence satisfies its constraint")
                tokens[r, s:e] = torch.tensor(done, dtype=torch.long, device=tokens.device)


def _broken(canvas: Canvas, tokens: Tensor) -> list[tuple[int, int, int]]:
    spans = set(canvas.violations(tokens))
    # Masks left outside any constrained span (a model that proposes the mask id).
    left = ((tokens == canvas.mask_id) & ~canvas.locked.to(tokens.device)).nonzero().tolist()
    for r, c in left:
        if not any(r == sr and s <= c < e for sr, s, e in spans):
            spans.add((r, c, c + 1))
    return sorted(spans)


def _reopened(canvas: Canvas, broken: list[tuple[int, int, int]], device: torch.device) -> Tensor:
    """(B, L) the positions ``_refill`` masks again: the broken spans less the locked ones."""
    open_ = torch.zeros_like(canvas.locked, device=device)
    for r, s, e in broken:
        open_[r, s:e] = True
    return open_ & ~canvas.locked.to(device)


def _refill_calls(canvas: Canvas, broken: list[tuple[int, int, int]]) -> int:
    """The most model calls ``_refill`` makes for ``broken``: one step per re-masked position
    of the row with the most (``_one_per_step``)."""
    return max(1, int(_reopened(canvas, broken, canvas.locked.device).sum(dim=1).max()))


def _refill(
    model: MaskPredictor,
    canvas: Canvas,
    tokens: Tensor,
    broken: list[tuple[int, int, int]],
    config: SampleConfig,
    eos_id: int | None,
    generator: torch.Generator | None,
    step_callback: StepCallback | None,
) -> tuple[Tensor, int, int]:
    tokens = tokens.clone()
    open_ = _reopened(canvas, broken, tokens.device)
    tokens[open_] = canvas.mask_id
    cols = open_.any(dim=0).nonzero().flatten()
    region = (int(cols.min()), int(cols.max()) + 1)
    repair = Canvas(
        tokens=tokens,
        mask_id=canvas.mask_id,
        locked=~open_,
        prompt_index=canvas.prompt_index.to(tokens.device),
        attention_mask=canvas.attention_mask,
        region=region,
        constraints=list(canvas.constraints),
    )
    most = int(open_.sum(dim=1).max())
    res = sample(model, repair, _one_per_step(config, most), eos_id=eos_id, generator=generator,
                 step_callback=step_callback)
    return res.tokens, res.nfe, res.steps


# -- templates --------------------------------------------------------------------------------


# InfillOptions and LENGTH_MODES live in unmask.config (torch-free: the CLI's --help)


@dataclass
class FilledGap:
    """One gap of an ``InfillResult``."""

    name: str
    text: str
    tokens: list[int]
    start: int
    """Character offset of the gap's text in ``InfillResult.text``."""
    end: int


@dataclass
class Candidate:
    """One combination of gap lengths that was filled and scored."""

    lengths: tuple[int, ...]
    elbo: float
    """ELBO bound per token (nats, lower = more likely); NaN when nothing was scored."""
    text: str
    nll: float = float("nan")
    """The bound on -log p of the whole completed text (nats): ``elbo`` times its tokens."""
    gaps: list[FilledGap] = field(default_factory=list)
    """The gaps as this candidate filled them."""
    context: float = float("nan")
    """The terms of ``nll`` on the given text alone (nats), the gaps' own tokens and the hidden
    ``START_CONTEXT`` before a gap at offset 0 not counted: how likely this fill makes the
    text around it."""

    def score(self, length_score: str) -> float:
        """What the length search minimises under ``length_score`` (``LENGTH_SCORES``); an
        unscored candidate (NaN) ranks last."""
        v = {"total": self.nll, "per_token": self.elbo, "context": self.context}[length_score]
        return float("inf") if math.isnan(v) else v


@dataclass
class InfillResult:
    """What ``infill`` returns."""

    text: str
    """The template with its gaps filled."""
    gaps: list[FilledGap]
    tokens: list[int]
    """Token ids of the whole filled template."""
    nfe: int
    """Model evaluations: sampling, repairs and likelihood scoring."""
    candidates: list[Candidate] = field(default_factory=list)
    """Every length combination scored (empty when all gaps have a fixed length)."""
    repaired: int = 0
    """Gaps refilled because a first pass broke their constraint (by the model, or from their
    automaton where ``max_search_calls`` left no calls for it)."""
    length_mode: str | None = None
    """``elbo`` or ``empty``: how the variable-length gaps got their length (None: none had to)."""

    def as_dict(self) -> dict[str, Any]:
        """The result as plain data for JSON; an unscored bound (NaN) is None."""
        out = dataclasses.asdict(self)
        for c in out["candidates"]:
            for k in ("elbo", "nll", "context"):
                if math.isnan(c[k]):
                    c[k] = None
        return out


def _unspaced(tokenizer: Any, ids: list[int], text: str, *, first: bool) -> list[int]:
    """The ids of a gap's ``text`` whose written ``ids`` led with a space now dropped from it:
    the tokens the model wrote, the first one's rest encoded again (``" a"`` as ``"a"``, a
    lone ``" "`` dropped), so a ``[MASK:4]`` written as ``" a"``, ``"f"``, ``"g"``, ``"h"``
    still reports 4 tokens (the whole text encoded again was ``"afgh"``, one token). Where
    those pieces do not spell ``text`` exactly, the whole text encoded again."""
    vocab = vocab_of(tokenizer)
    head = vocab.token_bytes(ids[0]) if ids else b""
    if head[:1] == b" ":
        try:
            rest = head[1:].decode("utf-8")
        except UnicodeDecodeError:  # the token ends inside a character
            rest = None
        if rest is not None:
            kept = (segment_ids(tokenizer, rest, first=first) if rest else []) + ids[1:]
            if b"".join(vocab.token_bytes(t) for t in kept) == text.encode("utf-8"):
                return kept
    return segment_ids(tokenizer, text, first=first) if text else []


def _render(plan: Plan, layout: list[tuple[str, Any]], row: list[int], spans: Spans, r: int,
            tokenizer: Any, empty_id: int | None = None) -> tuple[str, list[FilledGap], list[int]]:
    """Text, gaps and token ids of row ``r``: ``[EMPTY]`` fillers dropped, taken spaces put back
    (an empty fill's only where the text would glue two words: ``"In the [MASK:0-2]
    beginning"`` left empty is ``"In the beginning"``, as the model read it, not two spaces;
    ``"[MASK:0-2] In the"``, ``"In the"``), the virtual space of a gap that starts the text
    dropped (its tokens encoded again)."""
    vocab = vocab_of(tokenizer)
    # the space put back between two texts continues the text: a tokenizer that marks the
    # start of every text it encodes (a Llama-style "▁" prepended) spelled " " alone as two
    # word starts ("▁", "▁"), and ``tokens`` decoded to two spaces where ``text`` has one
    space_ids = segment_ids(tokenizer, " ", first=False)
    # (text, ids, gap index or None); a None text: the space an empty fill took, decided below
    pieces: list[tuple[str | None, list[int], int | None]] = []
    for kind, v in layout:
        if kind == "context":  # seen by the model, not part of the output
            continue
        if kind == "text":
            pieces.append((v[1], list(v[0]), None))
            continue
        k, _ = v
        s, e = spans.holes[r][k]
        ids = [t for t in row[s:e] if t != empty_id]
        text = vocab.decode(ids)
        hole = plan.holes[k]
        if hole.space:  # the space before the gap: the fill's own (in its ids), or put back
            if hole.space_is_taken(text):
                text = text[1:]
                pieces.append((" ", [], None))
            else:
                pieces.append((" " if text else None, space_ids, None))
        elif hole.lead and hole.space_is_taken(text):  # a virtual space at the start: dropped
            text = text[1:]
            first = not any(t for t, _, _ in pieces)  # else the start of a line
            ids = _unspaced(tokenizer, ids, text, first=first)
        pieces.append((text, ids, k))
    lead = next((i for i, (t, _, _) in enumerate(pieces) if t), None)
    # a gap before the first text takes a space (a byte tokenizer's take none: there the
    # space is given text, kept as at the end of the text)
    spaced = lead is not None and any(
        k is not None and (plan.holes[k].lead or plan.holes[k].space)
        for _, _, k in pieces[:lead])
    if spaced and pieces[lead][2] is None and pieces[lead][0][:1] == " ":
        # every gap before the first text left empty (``[MASK:0-2] In the``): that text's
        # space is the gap's, as a gap's taken space is; the text does not start with it
        text = pieces[lead][0][1:]
        pieces[lead] = (text, list(tokenizer.encode(text)) if text else [], None)
        nxt = pieces[lead + 1] if lead + 1 < len(pieces) else None
        if not text and nxt is not None and nxt[2] is not None and nxt[0]:
            # the space was the next gap's (``[MASK:0-3] [MASK:0-3]``, the first left empty),
            # maybe in its first token (``" cat"``): that gap starts the text, encoded again
            pieces[lead + 1] = (nxt[0], _unspaced(tokenizer, nxt[1], nxt[0], first=True), nxt[2])
    parts: list[str] = []
    gaps: list[FilledGap] = []
    tokens: list[int] = []
    pos = 0
    last = ""  # the last character so far
    for i, (text, ids, k) in enumerate(pieces):
        if text is None:  # an empty fill's space: kept between two words only (as the model
            # read it: not before a comma or a full stop)
            after = next((t for t, _, _ in pieces[i + 1 :] if t), "")
            glue = (last != "" and not last.isspace() and after != "" and not after[0].isspace()
                    and after[0] not in CLOSING)
            text, ids = (" ", ids) if glue else ("", [])
        if k is not None:
            gaps.append(FilledGap(name=plan.holes[k].label, text=text, tokens=ids, start=pos,
                                  end=pos + len(text)))
        tokens.extend(ids)
        parts.append(text)
        pos += len(text)
        last = text[-1:] or last
    text = "".join(parts)
    if (text[:1] == " " and tokenizer.decode(tokens) != text
            and tokenizer.decode(space_ids + tokens) == text):
        # a SentencePiece decoder drops the first word start (Llama's "▁cat" alone is "cat"):
        # a text that starts with a space (" [MASK] x", a choice " cat" at the start) needs a
        # word start of its own there, or ``tokens`` decoded to "cat x"
        tokens = space_ids + tokens
        if gaps and gaps[0].start == 0 and gaps[0].text[:1] == " ":
            gaps[0].tokens = space_ids + gaps[0].tokens
    return text, gaps, tokens


def _max_seq_len(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_seq_len", None)


def _after_context(plan: Plan, step_callback: StepCallback | None) -> StepCallback | None:
    """``step_callback`` fed each canvas from the end of ``plan``'s locked context
    (``START_CONTEXT`` before a gap at offset 0, the same in every row): a step's view
    covers the template's text and its gaps, as the result does, never the hidden line
    break (it showed as ``tokens[0] == "\n"`` and shifted every position by one)."""
    skip = len(plan.items[0][1][0]) if plan.items and plan.items[0][0] == "context" else 0
    return skipping(step_callback, skip)


def skipping(step_callback: StepCallback | None, skip: int) -> StepCallback | None:
    """``step_callback`` fed each canvas from column ``skip`` on (hidden context before it)."""
    if step_callback is None or not skip:
        return step_callback
    report = step_callback

    def on_step(step: int, tokens: Tensor) -> None:
        report(step, tokens[:, skip:])

    return on_step


def fill_plan(
    model: MaskPredictor,
    tokenizer: Any,
    plan: Plan,
    config: SampleConfig,
    *,
    options: InfillOptions,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    name: str = "the template",
    max_repair_calls: int | None = None,
) -> InfillResult:
    """Fill a planned template; variable-length gaps get their length by ``options.length_mode``.
    A search that would make more than ``options.max_search_calls`` model calls
    (``search_calls``) is a ``SearchLimitError`` naming the template (``name``) before any
    model work. Within the limit, a refill of spans that broke a constraint (``fill_canvas``)
    is made only if its calls fit what the search has not spent or planned; otherwise those
    spans are completed from their automata without the model, so the search never makes more
    than ``max_search_calls`` calls in all. ``max_repair_calls``: the most model calls the
    refills of all runs may make together (None: no limit; the smaller of the two holds).
    """
    mode, empty_id = _length_mode(model, plan, options)
    max_seq_len = _max_seq_len(model)
    room = _check_room(plan, max_seq_len, name)
    limit = options.max_search_calls if mode == "elbo" and _choices(plan)[1] > 1 else 0
    spare: int | None = None  # model calls a refill may make (None: no limit)
    if limit:
        spare = limit - _check_search(plan, config, options, tokenizer, name, max_seq_len)
    if max_repair_calls is not None:
        spare = max_repair_calls if spare is None else min(spare, max_repair_calls)
    if mode == "empty":
        plan = _empty_plan(plan, tokenizer, empty_id, room)  # type: ignore[arg-type]
    automata = [h.automaton for h in plan.holes]
    labels = [h.label for h in plan.holes]
    ids = dict(mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id)
    on_step = _after_context(plan, step_callback)
    eos_id = getattr(tokenizer, "eos_id", None)
    if generator is None:
        generator = make_generator(config.seed)
    nfe = repaired = 0
    candidates: list[Candidate] = []
    # START_CONTEXT before a gap at offset 0 is no given text: ``context`` leaves it out
    hidden = sum(kind == "context" for kind, _ in plan.items)

    def run(
        combos: list[tuple[int, ...]],
        fill: list[list[list[int] | None]] | None = None,
    ) -> tuple[list[list[int]], Spans, list[list[tuple[str, Any]]]]:
        nonlocal nfe, repaired, spare
        layouts = [plan.layout(c) for c in combos]
        canvas, spans = layouts_canvas(layouts, automata, labels, fill=fill, **ids)
        filled = fill_canvas(
            model, canvas, config, eos_id=eos_id, generator=generator, step_callback=on_step,
            max_repair_calls=spare,
        )
        if step_callback is not None and hasattr(step_callback, "close"):
            step_callback.close(clear=True)
        nfe += filled.nfe
        repaired += filled.repaired
        if spare is not None:
            spare -= filled.repair_nfe
        return filled.tokens.tolist(), spans, layouts

    def score(rows: list[list[int]], spans: Spans) -> list[tuple[float, float, float]]:
        """(bound per token, bound on the whole text, its terms on the given text) of each
        row."""
        nonlocal nfe
        lengths = [_row_end(spans, r) for r in range(len(rows))]
        L = max(lengths)
        tok = torch.full((len(rows), L), tokenizer.pad_id, dtype=torch.long)
        real = torch.zeros(len(rows), L, dtype=torch.bool)
        for r, row in enumerate(rows):
            tok[r, : lengths[r]] = torch.tensor(row[: lengths[r]], dtype=torch.long)
            real[r, : lengths[r]] = True
        device = _device(model)
        gen = torch.Generator().manual_seed(options.elbo_seed)
        slots = noise_slots(spans, len(rows), L)
        if options.length_score == "per_token":
            terms, calls = paired_per_token_terms(
                model, tok.to(device), real, slots, lengths, mask_id=tokenizer.mask_id,
                n_samples=options.elbo_samples, generator=gen,
            )  # fmt: skip
            nfe += calls
        else:
            terms = sequence_elbo_terms(
                model,
                tok.to(device),
                mask_id=tokenizer.mask_id,
                n_samples=options.elbo_samples,
                generator=gen,
                attention_mask=real.to(device),
                noise_slots=slots,
            )
            nfe += len(rows)  # one batched call of elbo_samples copies per row
        out = []
        for r, n in enumerate(lengths):
            whole = float(terms[r].sum())
            given = sum((float(terms[r, s:e].sum()) for s, e in spans.texts[r][hidden:]), 0.0)
            out.append((_per_token(whole, n, model), whole, given))
        return out

    def choose(combos: list[tuple[int, ...]], rows: list[list[int]], spans: Spans,
               layouts: list[list[tuple[str, Any]]]) -> int:
        """Score every row, record it as a candidate, return the index of the best."""
        bounds = score(rows, spans)
        scored = []
        for r, c in enumerate(combos):
            text, gaps, _ = _render(plan, layouts[r], rows[r], spans, r, tokenizer)
            per_token, whole, given = bounds[r]
            scored.append(Candidate(lengths=c, elbo=per_token, text=text, nll=whole, gaps=gaps,
                                    context=given))
        candidates.extend(scored)
        return min(range(len(combos)), key=lambda r: (scored[r].score(options.length_score), r))

    choices, n_combos, nothing = _choices(plan)
    if n_combos == 1:
        combo = tuple(c[0] for c in choices)
        rows, spans, layouts = run([combo])
        best = 0
    elif n_combos - int(nothing) <= options.max_joint:
        combos = [c for c in itertools.product(*choices) if _allowed(c, nothing, room)]
        rows, spans, layouts = run(combos)
        best = choose(combos, rows, spans, layouts)
    else:  # one variable gap at a time: see _coordinate_search
        def afford(combos: list[tuple[int, ...]], k: int) -> bool:
            """Whether a later run fits the limit; its refills may then spend what it leaves."""
            nonlocal spare
            if not limit:
                return True
            left = limit - nfe - _run_calls(plan, config, options, combos, k, **ids)
            spare = max(left, 0)
            return left >= 0

        rows, spans, layouts, best = _coordinate_search(choices, nothing, run, choose, afford,
                                                        room)
    text, gaps, tokens = _render(plan, layouts[best], rows[best], spans, best, tokenizer, empty_id)
    return InfillResult(
        text=text,
        gaps=gaps,
        tokens=tokens,
        nfe=nfe,
        candidates=candidates,
        repaired=repaired,
        length_mode=mode,
    )


def _check_search(plan: Plan, config: SampleConfig, options: InfillOptions, tokenizer: Any,
                  name: str, max_seq_len: int | None) -> int:
    """``search_calls`` of ``plan``, or a ``SearchLimitError`` where that is over the limit."""
    need = search_calls(plan, config, options, mask_id=tokenizer.mask_id,
                        pad_id=tokenizer.pad_id, max_seq_len=max_seq_len)
    if need > options.max_search_calls:
        variable = sum(len(h.candidates) > 1 for h in plan.holes)
        raise SearchLimitError(name, variable, need, options.max_search_calls)
    return need


def _template_name(template: str | Sequence[str | Gap]) -> str:
    """``template 'TEXT'`` for errors, the text cut to 60 characters."""
    text = template if isinstance(template, str) else "".join(
        p if isinstance(p, str) else (p.source or _spelled(p)) for p in template)
    return f"template {text if len(text) <= 60 else text[:57] + '...'!r}"


def _spelled(gap: Gap) -> str:
    """A ``Gap`` built in Python as its template would write it (``[MASK:city:2-5]``; an
    unset bound is ``?``), for messages: it was ``[MASK:]``, no gap of the syntax."""
    if gap.length is not None:
        size = str(gap.length)
    elif gap.min_len is None and gap.max_len is None:
        size = ""
    else:
        size = "-".join("?" if n is None else str(n) for n in (gap.min_len, gap.max_len))
    parts = [x for x in (gap.name, size) if x]
    return "[MASK" + "".join(":" + x for x in parts) + "]"


def _choices(plan: Plan) -> tuple[list[list[int]], int, bool]:
    """(each hole's candidate lengths, how many combinations, whether the all-empty one is
    left out: a template of gaps only (and whitespace) is never filled with nothing at all, no
    text to score or show)."""
    choices = [h.candidates for h in plan.holes]
    n_combos = math.prod(len(c) for c in choices)
    nothing = not plan.has_given_text and all(0 in c for c in choices) and n_combos > 1
    return choices, n_combos, nothing


def _allowed(combo: Sequence[int], nothing: bool, room: int | None) -> bool:
    """Whether the length search tries ``combo`` (each hole's length): not all empty where
    ``nothing`` (``_choices``), and its gaps together fit the ``room`` the model's context
    leaves after the template's text (``_check_room``; None: no limit). Each gap's longest
    fits beside the others' shortest (``check_context``), not always beside their longest:
    nine ``[MASK:1-16]`` on a 64-token model; such lengths can never be the answer."""
    return (any(combo) or not nothing) and (room is None or sum(combo) <= room)


def _check_room(plan: Plan, max_seq_len: int | None, name: str) -> int | None:
    """The tokens the model's context leaves ``plan``'s gaps together after its text (None:
    no limit), or a ``UserError`` naming the template (``name``) where no combination of
    their lengths fits (``_allowed``): it needs more than the context even with every gap at
    its shortest (``check_context`` refuses that first where the plan was made for this
    model)."""
    if max_seq_len is None:
        return None
    room = max_seq_len - plan.fixed_tokens
    choices, _, nothing = _choices(plan)
    least = sum(c[0] for c in choices)
    if nothing:  # all empty is no answer: the shortest non-empty length of some gap
        least = min((n for c in choices for n in c if n), default=0)
    if least > room:
        raise UserError(
            f"{name} needs at least {plan.fixed_tokens + least} tokens with its gaps at their "
            f"shortest ({plan.fixed_tokens} of text), more than {CONTEXT_WORDS} {max_seq_len}); "
            "use shorter text or gaps"
        )
    return room


def _lowered(choices: list[list[int]], start: Sequence[int], room: int | None) -> list[int]:
    """``start`` (a candidate of each hole's ``choices``) with its longest lengths lowered,
    one candidate at a time (the longest first; the first such hole on a tie) until they fit
    ``room`` together (None: no limit), each at least its first candidate."""
    out = list(start)
    while room is not None and sum(out) > room:
        lower = [k for k, c in enumerate(choices) if out[k] > c[0]]
        if not lower:
            break
        k = max(lower, key=lambda k: (out[k], -k))
        i = choices[k].index(out[k])
        out[k] = choices[k][i - 1]
    return out


def _run_calls(plan: Plan, config: SampleConfig, options: InfillOptions,
               combos: list[tuple[int, ...]], masked: int | None, *, mask_id: int,
               pad_id: int, exact: bool = True) -> int:
    """The model calls of one run of the length search, counted as ``InfillResult.nfe``
    counts them: its sampling steps (``infill_config`` on its canvas: every hole masked, or
    only hole ``masked``) plus one scoring call per row (``PER_TOKEN_ROUNDS`` per row under
    ``length_score="per_token"``). Not ``exact``: the other holes are at their longest, the
    real run's may be shorter (``_steps_bound``)."""
    fill = None if masked is None else [
        [None if j == masked else [pad_id] * n for j, n in enumerate(c)] for c in combos]
    canvas, _ = layouts_canvas([plan.layout(c) for c in combos], [h.automaton for h in plan.holes],
                               [h.label for h in plan.holes], mask_id=mask_id, pad_id=pad_id,
                               fill=fill)  # fmt: skip
    per_row = PER_TOKEN_ROUNDS if options.length_score == "per_token" else 1
    if exact:
        run, region = infill_config(config, canvas)
        steps = _dynamic_forwards(run, region, run.steps)
    else:
        steps = _steps_bound(config, canvas)
    return steps + per_row * len(combos)


def _dynamic_forwards(config: SampleConfig, canvas: Canvas, steps: int) -> int:
    """The most forwards a run of ``steps`` takes: ``steps``, or under a dynamic policy (one
    commit a row and step at least; ``_dynamic_steps`` may give more steps than masks) at most
    one a column masked in some row of the region."""
    if not make_policy(config).dynamic:
        return steps
    start, end = canvas.region
    return min(steps, max(1, int(canvas.masked[:, start:end].any(dim=0).sum())))


def _steps_bound(config: SampleConfig, canvas: Canvas) -> int:
    """The most forwards of the run ``infill_config`` gives a canvas whose holes are at most as
    long as ``canvas``'s and whose masks are ``canvas``'s: the masks of a row, or the blocks
    where they are more (plus the round-up of an even share per block), at most
    ``config.steps``; under a dynamic policy at most one a masked column. A shorter region can
    have more blocks where the canvas is too short for whole blocks of ``block_length``
    (``_fit_blocks``), so every region length up to ``canvas``'s is tried, each with the
    room ``canvas`` leaves after its region."""
    start, end = canvas.region
    masked = canvas.masked[:, start:end].sum(dim=1)
    most = int(masked.max()) if masked.numel() else 0
    blocks = 1
    if config.block_length is not None and config.block_length > 0:
        slack, bl = canvas.length - (end - start), config.block_length
        shorter = range(1, end - start + 1) if bl > slack + 1 else [end - start]  # else fits
        blocks = max((_fit_blocks(n, n + slack, bl, config.steps)[1] for n in shorter),
                     default=1)  # every block counted, not only those with a gap
    if make_policy(config).dynamic:  # at most one forward a masked column (_dynamic_steps)
        return _dynamic_forwards(config, canvas, config.steps)
    # the even share per block rounds up by less than a block's step each (infill_config)
    return min(config.steps, max(1, most, blocks) + blocks - 1)


def search_calls(plan: Plan, config: SampleConfig, options: InfillOptions, *, mask_id: int,
                 pad_id: int, max_seq_len: int | None = None) -> int:
    """The most model calls ``fill_plan``'s length search (``length_mode="elbo"``) of ``plan``
    needs before it can choose, counted as ``InfillResult.nfe`` counts them, known before any
    model work: every combination in one run (at most ``max_joint``), or the first sweep of
    the coordinate search (``_coordinate_search``; a run after the first at its largest, the
    other gaps at their longest candidate). Further sweeps run only while they fit
    ``options.max_search_calls``. Refills of spans that broke a constraint (``fill_canvas``:
    only when several tokens of a constrained span were committed in one step) are not
    planned: ``fill_plan`` makes one only while it fits the limit with these calls. 0 when no
    gap has a choice of length. ``max_seq_len``: the model's context, which the gaps' lengths
    must fit together (``_allowed``; None: no limit): a later run's rows are counted as if
    the other gaps were at their shortest, where every candidate fits (``check_context``)."""
    choices, n_combos, nothing = _choices(plan)
    if n_combos == 1:
        return 0
    room = None if max_seq_len is None else max_seq_len - plan.fixed_tokens
    ids = dict(mask_id=mask_id, pad_id=pad_id)
    if n_combos - int(nothing) <= options.max_joint:
        combos = [c for c in itertools.product(*choices) if _allowed(c, nothing, room)]
        return _run_calls(plan, config, options, combos, None, **ids)
    middle = _lowered(choices, [c[len(c) // 2] for c in choices], room)
    longest = [max(c) for c in choices]
    total, first = 0, True
    for k, cands in enumerate(choices):
        if len(cands) == 1:
            continue
        base = middle if first else longest
        combos = [tuple(base[:k]) + (n,) + tuple(base[k + 1 :]) for n in cands]
        combos = [c for c in combos if _allowed(c, nothing, room if first else None)]
        total += _run_calls(plan, config, options, combos, None if first else k, **ids,
                            exact=first)
        first = False
    return total


Run = Callable[[list[tuple[int, ...]], "list[list[list[int] | None]] | None"],
               tuple[list[list[int]], Spans, list[list[tuple[str, Any]]]]]
Choose = Callable[[list[tuple[int, ...]], list[list[int]], Spans, list[list[tuple[str, Any]]]],
                  int]
Afford = Callable[[list[tuple[int, ...]], int], bool]


SWEEPS = 3
"""Most sweeps of the coordinate search over the variable gaps (it stops after a sweep that
changes no length)."""


REFINE_NEAR = 1
"""Sweeps after the first try, for each gap, only the candidates this close (in the list of
its candidates) to its current length; 0: all of them."""


def _coordinate_search(
    choices: list[list[int]], nothing: bool, run: Run, choose: Choose, afford: Afford,
    room: int | None = None,
) -> tuple[list[list[int]], Spans, list[list[tuple[str, Any]]], int]:
    """The length search when every combination is too many (``max_joint``): one variable gap
    at a time, in template order, the gaps not yet decided at their middle candidate (the
    longest of those lowered until they fit ``room`` together, ``_lowered``), in up to
    ``SWEEPS`` sweeps over the gaps (it stops when a sweep changes no length). A run tries
    only the lengths that fit ``room`` beside the other gaps' (``_allowed``).

    The first run fills the whole canvas; after it, the best row so far is kept: every
    other gap holds its text from that row, locked, and only the gap being decided is
    filled at its candidate lengths, in one run, beside the kept row itself (scored again,
    not refilled). A run then has as many steps as that gap has masks, not as the whole
    canvas has (the sampler's steps are capped at the masks of a row), the choice of a
    gap's length sees the text the other gaps hold, and a later sweep can undo a choice that
    was made while the other gaps were still at their middle length. A run after the first
    sweep is made only if ``afford(combos, k)`` (the budget, ``max_search_calls``). Returns
    (rows, spans, layouts, best row) of the last run."""
    current = _lowered(choices, [c[len(c) // 2] for c in choices], room)
    kept: list[list[int]] | None = None  # each hole's tokens in the best row so far
    rows: list[list[int]] = []
    spans, layouts, best = Spans(holes=[]), [], 0
    variable = [k for k, c in enumerate(choices) if len(c) > 1]
    for sweep in range(SWEEPS):
        changed = False
        for k in variable:
            cands = choices[k]
            if sweep and REFINE_NEAR:  # later sweeps: the candidates next to the current one
                i = cands.index(current[k])
                cands = cands[max(0, i - REFINE_NEAR) : i + REFINE_NEAR + 1]
            combos = [tuple(current[:k]) + (n,) + tuple(current[k + 1 :]) for n in cands]
            combos = [c for c in combos if _allowed(c, nothing, room)]
            fill: list[list[list[int] | None]] | None = None
            if kept is not None:
                this = tuple(current)
                combos = [this] + [c for c in combos if c != this]
                if sweep and not afford(combos, k):
                    return rows, spans, layouts, best
                fill = [[None if j == k and r else t for j, t in enumerate(kept)]
                        for r in range(len(combos))]
            rows, spans, layouts = run(combos, fill)
            best = choose(combos, rows, spans, layouts)
            changed |= kept is not None and best != 0
            current[k] = combos[best][k]
            kept = [rows[best][s:e] for s, e in spans.holes[best]]
        if not changed:
            break
    return rows, spans, layouts, best


def _length_mode(
    model: Any, plan: Plan, options: InfillOptions
) -> tuple[str | None, int | None]:
    """(``elbo`` | ``empty`` | None when no gap has a variable length, the model's empty id)."""
    asked = options.length_mode
    if asked not in LENGTH_MODES:
        raise UserError(f"unknown length mode {asked!r}; choose one of {', '.join(LENGTH_MODES)}")
    if options.length_score not in LENGTH_SCORES:
        raise UserError(f"unknown length score {options.length_score!r}; choose one of "
                        f"{', '.join(LENGTH_SCORES)}")
    empty_id = getattr(getattr(model, "config", None), "empty_id", None)
    if asked == "empty" and empty_id is None:
        raise UserError(
            "length mode 'empty' needs a model trained with --empty-rate (its config.json has no "
            "empty_id); use --length-mode elbo"
        )
    if all(len(h.feasible) == 1 for h in plan.holes):
        return None, None
    if asked == "auto":
        asked = "empty" if empty_id is not None else "elbo"
    attention = getattr(getattr(model, "config", None), "attention", "bidirectional")
    if asked == "elbo" and attention != "bidirectional":
        raise GapError(  # the template's gaps (a fixed length each)
            f"a gap of a length range is sized by the ELBO of a bidirectional masked-diffusion "
            f"model; this one's attention is {attention!r}: give each gap a fixed length "
            "([MASK:n])"
        )
    return asked, (empty_id if asked == "empty" else None)


def _empty_plan(plan: Plan, tokenizer: Any, empty_id: int, room: int | None = None) -> Plan:
    """Each variable-length hole at its longest length, its automaton allowing trailing ``[EMPTY]``
    after at least its shortest length of text (``TokenAutomaton.with_empty_tail``). In a
    template of gaps only (``_choices``), the first hole that may be empty holds a token at
    least, as the ELBO search never leaves them all empty (all ``[EMPTY]`` gave ``""``).
    Where the longest lengths do not fit ``room`` together (the tokens the model's context
    leaves the gaps; None: no limit), the longest are lowered until they do (``_lowered``)."""
    nothing = _choices(plan)[2]
    sizes = []  # each hole's lengths: at least its shortest text
    for h in plan.holes:
        lo = h.feasible[0]
        if len(h.feasible) > 1 and nothing and lo == 0:
            lo, nothing = h.feasible[1], False
        sizes.append([n for n in h.feasible if n >= lo] if len(h.feasible) > 1 else h.candidates)
    longest = _lowered(sizes, [s[-1] for s in sizes], room)
    holes = []
    for h, lengths, hi in zip(plan.holes, sizes, longest, strict=True):
        if len(h.feasible) > 1:
            lo = lengths[0]
            tail = cached_automaton(tokenizer, ("empty", h.automaton, empty_id, lo),
                                    lambda h=h, lo=lo: h.automaton.with_empty_tail(empty_id, lo))
            h = dataclasses.replace(h, automaton=tail, candidates=[hi], feasible=[hi])
        holes.append(h)
    return Plan(items=plan.items, holes=holes)


def noise_slots(spans: Spans, n_rows: int, width: int) -> Tensor:
    """(n_rows, width) ``sequence_elbo`` noise slots for rows of one template at different gap
    lengths: the i-th token of each text item and of each gap has the same slot in every row,
    so the given text is masked alike in all candidates and the comparison of their bounds is
    not drowned in masking noise. Columns outside every item get slots of their own."""
    items = [sorted(spans.texts[r] + spans.holes[r]) for r in range(n_rows)]
    n_items = max((len(i) for i in items), default=0)
    widths = [max((i[k][1] - i[k][0] for i in items if k < len(i)), default=0)
              for k in range(n_items)]
    base = [sum(widths[:k]) for k in range(n_items)]
    out = torch.arange(width).add(sum(widths)).expand(n_rows, width).clone()
    for r, row in enumerate(items):
        for k, (s, e) in enumerate(row):
            out[r, s:e] = torch.arange(base[k], base[k] + e - s)
    return out


@torch.no_grad()
def count_elbo_terms(
    model: Any,
    tokens: Tensor,
    real: Tensor,
    slots: Tensor,
    *,
    mask_id: int,
    n_samples: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """The masked-diffusion bound of each row of ``tokens`` (B, L; ``real`` marks its tokens)
    by masked-token counts (LLaDA, Nie et al. 2025, eq. 6 and App. B.6): a copy masks ``l`` of
    the row's ``n`` tokens, l uniform on 1..n, and weighs their cross-entropy by n / l. That is
    the continuous-time bound of ``sequence_elbo_terms`` in expectation (its weight 1/t
    integrates to 1/l over the times that mask l tokens), without the 1/t weight of a copy
    that masks a few tokens at a small t: on rows of 2 and 3 tokens its standard deviation is
    9 times lower. Rows share their noise, as there: one stratified fraction ``v`` per copy
    (l = ceil(v n)) and one uniform draw per noise slot (``slots``, B, L), a row masking the
    ``l`` of its tokens with the lowest draws. For a Dream-style model
    (``config.logit_shift``) a row's first token is never masked nor counted (no logits
    predict it; ``n`` is the tokens after it), as in ``sequence_elbo_terms`` and the ``mdlm``
    loss. Returns (B, L) float64 terms (the mean over the ``n_samples`` copies; 0 off
    ``real`` and at such a first token) and (B, n_samples) each copy's whole-row estimate."""
    from unmask.evaluate import _mask_predictor, _shifted

    B, L = tokens.shape
    predictor = _mask_predictor(model)
    first = 1 if _shifted(model) else 0
    v = 1.0 - (torch.rand(1, generator=generator) + torch.arange(n_samples) / n_samples) % 1.0
    n_slots = int(slots[real].max()) + 1 if real.any() else 0
    table = torch.rand(n_slots, n_samples, generator=generator).T  # (n, S), slot-major draws
    terms = torch.zeros(B, L, dtype=torch.float64)
    copies = torch.zeros(B, n_samples, dtype=torch.float64)
    for b in range(B):
        keep = real[b]
        n = int(keep.sum()) - first  # the tokens with a prediction
        if n <= 0:
            continue
        x0 = tokens[b][keep.to(tokens.device)][None].expand(n_samples, -1)  # (c, first + n)
        rank = table[:, slots[b][keep][first:]].argsort(1).argsort(1)  # (c, n): 0 = lowest
        count = torch.ceil(v * n).clamp(1, n).long()  # (c,) l of each copy
        masked = rank < count[:, None]  # (c, n)
        masked = torch.cat([torch.zeros(n_samples, first, dtype=torch.bool), masked], 1)
        xt = torch.where(masked.to(x0.device), mask_id, x0)
        logits = predictor(xt)  # (c, first + n, V)
        ce = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2).float(), x0, reduction="none"
        ).double().cpu()  # (c, first + n)
        weighted = ce * masked * (n / count.double())[:, None]  # (c, first + n)
        terms[b, keep] = weighted.mean(0)
        copies[b] = weighted.sum(1)
    return terms, copies


PER_TOKEN_ROUNDS = 8
"""Most rounds of ``elbo_samples`` copies ``paired_per_token_terms`` draws for a close call."""


def _contested(per_token: Tensor) -> list[int]:
    """Rows whose per-token bound is within two standard errors of the best row's, paired
    over the copies they share (``per_token``: (B, copies)), with the best first; [] when
    none is."""
    best = int(per_token.mean(1).argmin())
    close = []
    for r in range(per_token.shape[0]):
        d = per_token[r] - per_token[best]  # (copies,)
        if r != best and float(d.mean()) < 2 * float(d.std()) / math.sqrt(d.numel()):
            close.append(r)
    return [best, *close] if close else []


def paired_per_token_terms(
    model: Any,
    tokens: Tensor,
    real: Tensor,
    slots: Tensor,
    lengths: Sequence[int],
    *,
    mask_id: int,
    n_samples: int,
    generator: torch.Generator,
) -> tuple[Tensor, int]:
    """(B, L) bound terms of candidate rows compared per token (``length_score="per_token"``)
    and the model calls spent (one per row and round). ``count_elbo_terms`` on every row,
    then, while the best per-token bound is within two standard errors of another's (paired
    over the shared copies), another ``n_samples`` copies for just those rows, up to
    ``PER_TOKEN_ROUNDS`` rounds in all. Dividing by different lengths keeps the shared noise
    from cancelling in a difference of per-token bounds, as it does in ``total``; without
    this, the default 16 copies picked the worse of two lengths 152 times in 300 where the
    exact per-token bounds differed by 0.28 nats (docs/infill.md, "per_token is scored
    another way")."""
    B, L = tokens.shape
    sums = torch.zeros(B, L, dtype=torch.float64)
    drawn = torch.zeros(B, dtype=torch.float64)
    per_token: Tensor | None = None  # (active rows, copies so far)
    active = list(range(B))
    calls = 0
    for _ in range(PER_TOKEN_ROUNDS):
        idx = torch.tensor(active)
        terms, copies = count_elbo_terms(
            model, tokens[idx.to(tokens.device)], real[idx], slots[idx], mask_id=mask_id,
            n_samples=n_samples, generator=generator,
        )  # fmt: skip
        calls += len(active)
        sums[idx] += terms * n_samples
        drawn[idx] += n_samples
        now = copies / torch.tensor([max(_scored(lengths[r], model), 1) for r in active])[:, None]
        per_token = now if per_token is None else torch.cat([per_token, now], dim=1)
        keep = _contested(per_token)
        if not keep:
            break
        active = [active[k] for k in keep]
        per_token = per_token[keep]
    return sums / drawn.clamp_min(1)[:, None], calls


def _scored(n: int, model: Any) -> int:
    """How many of a row's ``n`` real tokens the bound has a term for: all, or all but the
    first for a Dream-style model (``config.logit_shift``: no logits predict it)."""
    return max(n - 1, 0) if _shifted(model) else n


def _per_token(whole: float, n: int, model: Any) -> float:
    """The bound ``whole`` of a row of ``n`` real tokens per token it has a term for
    (``scored``); NaN when it has none (a Dream-style model's one-token row)."""
    k = _scored(n, model)
    return whole / k if k else float("nan")


def _row_end(spans: Spans, r: int) -> int:
    """Real (unpadded) length of row r."""
    return max([e for (_, e) in spans.holes[r]] + [e for (_, e) in spans.texts[r]])


def _device(model: Any) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def infill(
    model: MaskPredictor,
    tokenizer: Any,
    template: str | Sequence[str | Gap],
    config: SampleConfig | None = None,
    *,
    options: InfillOptions | None = None,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    max_repair_calls: int | None = None,
    start_ids: Sequence[int] = (),
) -> InfillResult:
    """Fill the gaps of ``template`` with ``model`` (any mask predictor).

    ``template``: text such as ``"The [MASK:6] sat on the [MASK]."`` (``parse_template``) or
    a list of text segments and ``Gap`` s. Given text is locked; every gap is masked and
    constrained (``Gap``); all gaps are denoised together in one canvas by
    ``unmask.sampling.sample`` with ``config`` (``steps`` is capped at the number of masks;
    ``gen_length`` is ignored). Gaps with a length range are filled at each candidate
    length and the completion with the lowest ELBO bound wins (of the whole text by default:
    ``InfillOptions.length_score``), or, on a model trained
    with ``[EMPTY]``, in one pass at the longest length with the unused trailing slots
    dropped (``InfillOptions.length_mode``). Every gap of the result satisfies its
    constraints, whatever the model. An unconstrained gap right after a space may take the
    space in (``unmask.infill.template.takes_space``); the text keeps it either way.
    Special ids come from ``tokenizer`` (``mask_id``, ``pad_id``, ``eos_id``).
    ``step_callback`` sees every sampling run, each canvas from the end of the hidden line
    break before a gap at offset 0 (the template's text and its gaps); one with a ``close``
    method (``LiveView``) is closed (``close(clear=True)``) after each run.
    ``max_repair_calls``: the most model calls refills of gaps that broke their constraint
    may make in all (``fill_plan``; None: no limit). ``start_ids``: what the text begins
    with, locked and hidden (a published model's BOS: ``plan_template``).
    """
    config = config or SampleConfig()
    options = options or InfillOptions()  # its values are checked as it is made
    _length_mode(model, Plan(items=[], holes=[]), options)  # bad options before any work
    plan = plan_template(
        template,
        tokenizer,
        max_seq_len=_max_seq_len(model),
        max_candidates=options.max_candidates,
        default_max_len=options.default_max_len,
        start_ids=start_ids,
    )
    return fill_plan(model, tokenizer, plan, config, options=options, generator=generator,
                     step_callback=step_callback, name=_template_name(template),
                     max_repair_calls=max_repair_calls)
