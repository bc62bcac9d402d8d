"""The one-model hybrid decoder (``hybrid``; TiDAR, Liu et al. 2025, arXiv:2511.08923): a
model trained with objective ``hybrid`` verifies its previous drafts causally and drafts the
next block in the same forward pass.

Each round (one ``advance()``, one forward over the exact KV cache of the committed prefix):

1. columns, in one explicit layout (``unmask.objectives.hybrid.draft_layout``): the last
   committed token (the whole prompt in the first round) and the d drafts of the previous
   round, causal (they give the next-token distributions p_0 .. p_d of the d + 1 positions
   after the committed prefix); then, pre-drafted for every acceptance length m = 0 .. d
   (TiDAR's choice, ``predraft="all"``), a block of k masks at positions N + m + 1 .. N + m
   + k that sees the prefix with the first m drafts accepted (N = committed length); the
   cheaper ``predraft="ends"`` pre-drafts only m = 0 and m = d (for another m the next
   drafts are block 0's after its first m: they saw less of the prefix, which costs
   acceptance, never exactness);
2. acceptance, per row, with the two-model decoder's rules (``unmask.sampling.speculative``:
   ``accept_greedy``, ``accept_sampled``): at temperature 0 the longest draft prefix equal to
   the causal argmax plus the causal token after it, so the output is token for token the
   model's own causal greedy decoding (``generate_ar``); at temperature > 0 the
   speculative-sampling rule, so every committed token is distributed as the causal model's;
3. the next drafts are block m's argmax (or draws from its softmax at the temperature, the
   proposal q of the next verification); the cache keeps the committed prefix without its
   last token (the rejected drafts and the mask blocks are dropped).

The draft length is the checkpoint's ``draft_block`` (what it was trained to draft), or the
first ``draft_length`` positions of it: each draft block then holds that many masks, so a
forward computes fewer positions, and a small model's drafts far past the prefix are rarely
kept anyway (the bench-size hybrid kept as many tokens per forward with 2 as with 8). With
``draft_threshold`` the length adapts: a row's next drafts end before the first one whose
confidence (the probability of the argmax; q's top probability when sampling, decided
before the draw) is below it, and the next round lays out only as many drafts (and, with
``predraft="all"``, blocks) as the longest row kept, so unsure drafts cost no columns. Every
row of a batch commits its own n_i + 1 tokens and keeps its own positions in one shared KV
cache (``unmask.sampling.ragged``; one layout for the batch, shifted to each row's positions),
so each row decodes as it would alone and its next drafts come from its own block n_i. A row
that commits EOS is finished (later positions hold the pad id); the run stops when every row
is finished or has ``gen_length`` tokens. ``nfe`` = forward passes; the result
(``HybridResult``) adds drafts made and accepted and the tokens committed.

Inside: ``HybridRun``, ``HybridResult``, ``HybridDecoder`` (``hybrid``), ``PREDRAFT``,
``check_draft_length``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.canvas import as_rows, left_pad
from unmask.config import PREDRAFTS, SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.objectives.hybrid import draft_layout
from unmask.sampling.ar import (
    CAUSAL_UNUSED,
    CAUSAL_WHY,
    RowGenerators,
    check_causal,
    check_sampling,
    check_token_ids,
    filter_logits,
    forbid_id,
    never_proposed,
    prompt_and_generation,
    row_generators,
    sample_token,
    separate_head,
    start_empty_prompts,
    tempered,
)
from unmask.sampling.cache import supports_kv_cache
from unmask.sampling.penalties import Penalties, text_counts
from unmask.sampling.protocol import (
    DecoderRun,
    ViewCallback,
    make_generator,
    model_device,
)
from unmask.sampling.ragged import RaggedCache, columns, commit_rows, place_drafts, rows_view
from unmask.sampling.registry import Decoder, Prompts, Target, register_decoder
from unmask.sampling.speculative import SpeculativeResult, accept_greedy, accept_sampled

PREDRAFT = PREDRAFTS
"""Which acceptance lengths get a pre-drafted block: ``all`` (0 .. d, TiDAR) or ``ends``
(0 and d: fewer positions per forward; after a partial acceptance block 0's later drafts);
``SampleConfig.predraft``."""


@dataclass(frozen=True)
class _Plan:
    """What a round of one shape reads, built once (``_plan``): the layout (``rel`` (T,),
    ``bias`` (1, 1, T, T)), the mask columns (``masks`` (1, M), each one's index in its block
    ``within`` (M,) and its block's acceptance length ``acceptance`` (M,)), the column indices
    ``columns`` (T,) = 0 .. T - 1, and, indexed by a row's acceptance n, the column of its next
    drafts ``start`` (d + 1,) and how many ``length`` (d + 1,)."""

    rel: Tensor
    bias: Tensor
    masks: Tensor
    within: Tensor
    acceptance: Tensor
    columns: Tensor
    start: Tensor
    length: Tensor


def _plan(
    h: int, d: int, blocks: tuple[tuple[int, int], ...], predraft: str, mask_id: int,
    device: torch.device,
) -> _Plan:  # fmt: skip
    """The ``_Plan`` of a round with h head columns, d drafts and ``blocks`` ((m, length) each):
    a round of a given shape costs the same tensor ops whatever its rows' acceptances (the
    bench-size hybrid's bookkeeping was a third of its round; ``docs/sampling.md``). Kept
    for the few shapes of the rounds after the first; a first round over the whole prompt
    (h = its length) is built once and not kept."""
    build = _kept_plan if h <= PLAN_CACHE_HEAD else _build_plan
    return build(h, d, blocks, predraft, mask_id, device)


MERGED_HEAD_COLUMNS = 12
"""``HybridRun._read`` runs the head once over the verified columns and every block's columns
when the drafts and blocks of all the batch's rows are at most this many columns, else twice
(the verified columns, then the chosen block's): at batch 1, draft length 2 (the length a
small model keeps), 3 and 4 with ``predraft="ends"`` (12 columns); not at 3 pre-drafted for
every acceptance (15) nor with the 72 of a block of 8. 1-11% more tokens per CPU second on a
demo-sized model at batch 1; the head's extra columns grow with the batch while reading its
weights does not, so larger batches read twice (one call was 1-5% slower at batch 64,
``docs/sampling.md``, "The one-model hybrid")."""

PLAN_CACHE_HEAD = 16
"""``_plan`` keeps the plans of rounds with at most this many head columns (later rounds
have 1, or a few after a partial acceptance of a batch's rows)."""


def _build_plan(
    h: int, d: int, blocks: tuple[tuple[int, int], ...], predraft: str, mask_id: int,
    device: torch.device,
) -> _Plan:  # fmt: skip
    rel, bias = draft_layout(
        h + d, [h + m for m, _ in blocks], [n for _, n in blocks], device=device
    )  # one layout, every row shifted to its own positions
    widths = [n for _, n in blocks]
    within = [j for n in widths for j in range(n)]
    acceptance = [m for m, n in blocks for _ in range(n)]
    start, length = [], []
    for n in range(d + 1):  # block n's drafts, else (``ends``) block 0's after its first n
        col, st, ln, have = h + d, 0, 0, False
        for m, width in blocks:
            if m == 0:
                st, ln = col + n, max(width - n, 0)
            if m == n:
                st, ln, have = col, width, True
            col += width
        start.append(st)
        length.append(ln if have or predraft == "ends" else 0)

    def ints(x: list[int]) -> Tensor:
        return torch.tensor(x, dtype=torch.long, device=device)

    return _Plan(
        rel=rel,
        bias=bias,
        masks=torch.full((1, len(within)), mask_id, dtype=torch.long, device=device),
        within=ints(within),
        acceptance=ints(acceptance),
        columns=torch.arange(int(rel.shape[0]), device=device),
        start=ints(start),
        length=ints(length),
    )


_kept_plan = functools.lru_cache(maxsize=512)(_build_plan)


@dataclass
class HybridResult(SpeculativeResult):
    """A ``SpeculativeResult`` of one model: ``verifier_nfe`` = ``nfe`` (the drafts come in the
    same forwards, ``drafter_nfe`` = 0)."""


class HybridRun(DecoderRun):
    """The ``hybrid`` decoder's run (see the module docstring); runs alone (a KV cache).

    ``use_cache=False`` recomputes every row's whole prefix every round (the same layout over
    a fresh cache): the reference the kept cache is tested against. ``drafts`` (B, d) are the
    drafts the next round verifies (a live view may show them apart from the committed
    ``view()``); ``dlen`` (B,) how many of them each row drafted. ``draft_block``: the
    first that many positions of each block (default and at most the model's
    ``config.draft_block``; ``check_draft_length``). ``generator``: one for the batch, or
    one per row (``unmask.sampling.ar.RowGenerators``): each row then draws its drafts and
    its acceptance tests on its own slice from its own, the calls it makes alone, so a batch
    of seeded rows writes what each row writes alone (a finished row draws no more).
    """

    def __init__(
        self,
        model: Any,
        prompt_ids: Prompts,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None,
        pad_id: int | None = None,
        start_id: int | None = None,
        mask_id: int | None = None,
        draft_block: int | None = None,
        predraft: str = "all",
        draft_threshold: float = 0.0,
        use_cache: bool = True,
        generator: torch.Generator | RowGenerators | None = None,
        on_view: ViewCallback | None = None,
        penalties: Penalties | None = None,
        forbid_eos: bool = False,
    ) -> None:
        mcfg = getattr(model, "config", None)
        attention = getattr(mcfg, "attention", "causal")
        trained = getattr(mcfg, "draft_block", None)
        k = draft_block if draft_block is not None else trained
        if attention != "causal" or k is None:
            raise UserError(
                "decoder 'hybrid' needs a model trained with objective 'hybrid' (causal, with "
                f"draft_block), not attention={attention!r}, draft_block={k!r}"
            )
        check_draft_length(k, trained, "draft_block")
        if use_cache and not supports_kv_cache(model):
            raise UserError("decoder 'hybrid' needs a model with a KV cache (unmask.model)")
        if not 0.0 <= draft_threshold < 1.0:
            raise UserError(f"draft_threshold must be in [0, 1), got {draft_threshold}")
        if predraft not in PREDRAFT:
            raise UserError(f"unknown predraft {predraft!r}; choose one of {', '.join(PREDRAFT)}")
        if max_new_tokens <= 0:
            raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
        check_sampling(temperature, top_k, top_p)
        pad_id = pad_id if pad_id is not None else getattr(mcfg, "pad_id", eos_id)
        mask_id = mask_id if mask_id is not None else getattr(mcfg, "mask_id", None)
        if mask_id is None:
            raise UserError("decoder 'hybrid' needs the model's mask id (its drafts are masks)")
        rows = as_rows(prompt_ids)
        if any(mask_id in r for r in rows):
            raise UserError("decoder 'hybrid' cannot fill a [MASK] in the prompt")
        rows, started = start_empty_prompts(rows, eos_id=eos_id, start_id=start_id)
        if pad_id is None and len({len(r) for r in rows}) > 1:
            raise UserError("prompts of different lengths need a pad id")
        B, P = len(rows), max(len(r) for r in rows)
        per_row = generator is not None and not isinstance(generator, torch.Generator)
        if per_row and len(generator) != B:  # type: ignore[arg-type]
            raise ValueError(f"{len(generator)} generators for {B} rows")  # type: ignore[arg-type]
        longest = getattr(mcfg, "max_seq_len", None)
        if longest is not None and P + max_new_tokens > longest:
            raise UserError(
                f"prompt ({P} tokens) + gen_length ({max_new_tokens}) exceeds the model's "
                f"max_seq_len ({longest})"
            )
        device = model_device(model) or torch.device("cpu")
        prompt, real = left_pad(rows, P, pad_id if pad_id is not None else 0)
        check_token_ids(prompt, getattr(mcfg, "vocab_size", None))

        self.model, self.eos_id, self.gen_length, self.k = model, eos_id, max_new_tokens, k
        self.mask_id, self.predraft, self.use_cache = mask_id, predraft, use_cache
        # [MASK], the banned ids ([PAD], BOS, FIM markers, ...), EOS under forbid_eos: in the
        # drafts' q and the verified p alike
        self._forbid = never_proposed(mcfg, mask_id, eos_id if forbid_eos else None,
                                      eos_id=eos_id)  # fmt: skip
        self.threshold = draft_threshold
        self.prompt, self.real = prompt.to(device), real.to(device)
        self.padded = not bool(real.all())
        self._counts = text_counts(penalties, self.prompt, self.real, started, mcfg)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generator, self.on_view = generator, on_view
        # one generator per row: each row draws what it draws alone (``_next_drafts``, ``_accept``)
        self._rows = list(generator) if per_row else None  # type: ignore[arg-type]
        # the head runs on the columns a round reads (d + 1 verified, one block per row), not
        # on all 1 + d + (d + 1)·k: ~8-15% of a demo-model forward (benchmarks/hybrid.py)
        self._head = separate_head(model)  # None: a head that needs more, whole logits
        self.fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        gen = torch.full((B, max_new_tokens), self.fill, dtype=torch.long, device=device)
        self.seq = torch.cat([self.prompt, gen], dim=1)  # (B, P + G): logical positions
        self.gen = self.seq[:, P:]  # (B, G), a view: commits write into seq
        self.seq_real = torch.cat([self.real, torch.ones_like(gen, dtype=torch.bool)], dim=1)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.cache = RaggedCache(B, device, slack=k + 1)
        self.drafts = self.gen[:, :0]  # (B, d): what the next round verifies
        self.dlen = torch.zeros(B, dtype=torch.long, device=device)  # (B,) each row's drafts
        self._q: Tensor | None = None  # (B, d, V): the drafts' proposal (temperature > 0)
        self.committed = torch.zeros(B, dtype=torch.long, device=device)  # (B,) per row
        # per-row counts, summed in ``result`` (no host sync per round)
        self._drafted = torch.zeros(B, dtype=torch.long, device=device)
        self._accepted = torch.zeros(B, dtype=torch.long, device=device)
        self._rounds = torch.zeros(B, dtype=torch.long, device=device)
        self.nfe = self.steps = 0
        self._stopped = False

    @property
    def done(self) -> bool:
        return self._stopped

    @property
    def drafted(self) -> int:
        """Drafts verified so far, summed over rows."""
        return int(self._drafted.sum())

    @property
    def accepted(self) -> int:
        """Drafts committed as drafted so far, summed over rows."""
        return int(self._accepted.sum())

    def _blocks(self, d: int, active: Tensor) -> list[tuple[int, int]]:
        """(m, length) of the pre-drafted blocks: acceptance m, a block only as long as the
        next round of the least advanced row can use (``gen_length`` caps what is left), empty
        ones dropped."""
        ms = range(d + 1) if self.predraft == "all" else sorted({0, d})
        left = self.gen_length - int(self.committed[active].min())
        return [(m, n) for m in ms if (n := min(self.k, left - m - 2)) > 0]

    def _forward(self, blocks: list[tuple[int, int]]) -> tuple[Tensor, int, _Plan]:
        """Final hidden states (B, T, D) of one round's layout (its logits (B, T, V) for a model
        without a separate head; ``_logits`` maps either to logits) and the number of head
        columns h (each row's committed tokens its cache does not hold yet, right-aligned)."""
        B, P, device = self.gen.shape[0], self.prompt.shape[1], self.gen.device
        N = P + self.committed  # (B,) logical position of each row's next token
        if not self.use_cache:  # the reference: every row's whole prefix, every round
            self.cache = RaggedCache(B, device, slack=self.k + 1)
        head, head_pos, head_real = columns(self.seq, self.seq_real, self.cache.fed, N)
        h, d = head.shape[1], self.drafts.shape[1]
        plan = _plan(h, d, tuple(blocks), self.predraft, self.mask_id, device)
        rel, bias = plan.rel, plan.bias  # (T,), (1, 1, T, T): every row shifted to its own
        last = P + self.gen_length - 1  # columns past a row's end: outputs unused
        positions = ((N - h)[:, None] + rel[None, :]).clamp(max=last)  # (B, T)
        positions[:, :h] = head_pos
        masks = plan.masks.expand(B, -1)  # (B, n_masks)
        tokens = torch.cat([head, self.drafts, masks], dim=1)  # (B, T)
        live = plan.columns[:d] < self.dlen[:, None]  # (B, d)
        # each row's blocks as wide as alone (the layout's are as wide as the least advanced row
        # can use): the columns past that are holes, so a row's drafts are the ones it gets alone
        left = self.gen_length - 2 - self.committed  # (B,) drafts a row can use after m = 0
        own = plan.within < left[:, None] - plan.acceptance  # (B, n_masks)
        real = torch.cat([head_real, live, own], dim=1)  # (B, T)
        out = self.cache.forward(
            self.model, tokens, positions, bias, real, return_hidden=self._head is not None
        )  # (B, T, D) hidden states, or (B, T, V) logits
        self.nfe += 1
        return out, h, plan

    def _logits(self, out: Tensor) -> Tensor:
        """Logits (B, n, V) of some columns (B, n, D|V) of ``_forward``'s output."""
        return out if self._head is None else self._head(out)

    def _read(self, out: Tensor, h: int, d: int) -> tuple[Tensor, int | None]:
        """What a round reads of ``_forward``'s output ``out`` (B, T, D|V): the logits of its
        d + 1 verified columns, then, where the head is separate and the blocks are few, of
        every block's columns too (B, T - h + 1, V), with the column of ``out`` the first one
        is (``at``, h - 1); else the d + 1 columns' logits and ``at`` None (``_choose`` runs
        the head on the chosen block's). One head call reads the head's weights once: a
        round's second call over a few columns cost about as much as its first (reading the
        weights, not the columns: a demo-sized head's 4 MiB)."""
        if self._head is None or out.shape[0] * (out.shape[1] - h) > MERGED_HEAD_COLUMNS:
            return self._logits(out[:, h - 1 : h + d]), None
        return self._head(out[:, h - 1 :]), h - 1

    def _no_mask(self, logits: Tensor, *, inplace: bool = False) -> Tensor:
        """``logits`` (..., V) with ``[MASK]`` and the other ids never written (special tokens:
        ``never_proposed``) at -inf (``forbid_id``; written in place when
        ``inplace``): float64 when sampling (the acceptance ratios p/q), the model's dtype
        when greedy (the same argmax)."""
        return forbid_id(logits.to(torch.float64) if self.temperature > 0 else logits,
                         self._forbid, inplace=inplace)  # fmt: skip

    def _next_drafts(
        self, logits: Tensor, length: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Drafts (B, n) from a block's logits (B, n, V; written to), their proposal q at
        temperature > 0 (None at 0), and with ``draft_threshold`` each draft's confidence
        (B, n) (None without): the probability of the argmax greedy, q's top probability
        when sampling (decided before the draw, as the two-model decoder does: a length cut by
        the drawn token itself would bias the accepted drafts). ``[MASK]`` and the other
        special tokens (``never_proposed``) are never drafted.
        ``length`` (B,): the drafts each row uses; with a generator per row only those are
        drawn, in the one call of shape (length_i, 1) that the row alone makes."""
        logits = self._no_mask(logits, inplace=True)  # the caller's gather: ours to write
        # penalised for the committed text, not the drafts before (exact either way; those
        # too gained nothing)
        if self._counts is not None:
            logits = self._counts.penalise(logits, inplace=True)
        if self.temperature == 0:
            conf = F.softmax(logits.float(), dim=-1).amax(dim=-1) if self.threshold > 0 else None
            return logits.argmax(dim=-1), None, conf
        B, n, V = logits.shape
        q = F.softmax(tempered(logits, self.temperature), dim=-1)  # (B, n, V)
        conf = q.amax(dim=-1) if self.threshold > 0 else None
        if self._rows is not None:  # row i: its own first length[i] drafts, as alone
            drafts = torch.full((B, n), self.mask_id, dtype=torch.long, device=logits.device)
            for i, (g, m) in enumerate(zip(self._rows, length.tolist(), strict=True)):
                if m:
                    drafts[i, :m] = sample_token(logits[i, :m], temperature=self.temperature,
                                                 generator=g)  # fmt: skip
            return drafts, q, conf
        flat = sample_token(logits.reshape(B * n, V), temperature=self.temperature,
                            generator=self.generator)  # fmt: skip
        return flat.reshape(B, n), q, conf

    def _choose(self, out: Tensor, plan: _Plan, n: Tensor, at: int | None = None) -> None:
        """Each row's next drafts (``out``: ``_forward``'s hidden states or logits; or, with
        ``at``, the logits of its columns from ``at`` on: ``_read``): block n_i's
        (``predraft="all"``), or block 0's after its first n_i when there is no block n_i
        (``ends``; they saw less of the prefix, which costs acceptance, never exactness); none
        when no block reaches that far (``_plan``'s tables, indexed by n_i)."""
        B = n.shape[0]
        start, length = plan.start[n], plan.length[n]  # (B,), (B,)
        # no more drafts than the row can still use (blocks are as long as the least advanced
        # row can use), so a row of a batch drafts exactly what it drafts alone
        room = (self.gen_length - 1 - self.committed).clamp(min=0).masked_fill(self.finished, 0)
        length = torch.minimum(length, room)
        D = int(length.max()) if B else 0
        if D == 0:
            self.drafts, self.dlen, self._q = self.gen[:, :0], length, None
            return
        lo = 0 if at is None else at
        idx = (start[:, None] - lo + plan.columns[:D]).clamp(max=out.shape[1] - 1)  # (B, D)
        chosen = out.gather(1, idx[..., None].expand(B, D, out.shape[-1]))  # (B, D, D|V)
        drafts, q, conf = self._next_drafts(chosen if at is not None else self._logits(chosen),
                                            length)  # fmt: skip
        if conf is not None:  # adaptive: a row's drafts end before its first unsure one
            sure = (conf >= self.threshold).long().cumprod(dim=1).sum(dim=1)  # (B,)
            length = torch.minimum(length, sure)
            D = int(length.max())  # the next round verifies (and lays out) no more
            drafts, q = drafts[:, :D], (q[:, :D] if q is not None and D else None)
        live = plan.columns[:D] < length[:, None]
        self.drafts = drafts.masked_fill(~live, self.mask_id)  # (B, D): mask past a row's own
        self.dlen, self._q = length, q

    def _accept(self, p: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """``accept_sampled`` of the round's drafts under the verifier's ``p`` (B, d + 1, V):
        on one generator, or with one per row each active row on its own slice (its drafts,
        its q, its d_i + 1 positions) with its own generator: the call it makes alone. A
        finished row draws nothing (its n is 0 and its out unused)."""
        if self._rows is None:
            return accept_sampled(self.drafts, self._q, p, self.generator, self.dlen)
        B, d = self.drafts.shape
        n = torch.zeros(B, dtype=torch.long, device=p.device)
        out = torch.full((B, d + 1), self.fill, dtype=torch.long, device=p.device)
        lengths, live = self.dlen.tolist(), active.tolist()
        for i, (g, m) in enumerate(zip(self._rows, lengths, strict=True)):
            if not live[i]:
                continue
            q = None if self._q is None else self._q[i : i + 1, :m]
            n[i : i + 1], out[i : i + 1, : m + 1] = accept_sampled(
                self.drafts[i : i + 1, :m], q, p[i : i + 1, : m + 1], g, self.dlen[i : i + 1])
        return n, out

    def advance(self) -> None:
        B, d, P = self.gen.shape[0], self.drafts.shape[1], self.prompt.shape[1]
        active = ~self.finished
        blocks = self._blocks(d, active)
        with torch.no_grad():
            hid, h, plan = self._forward(blocks)  # (B, T, D|V)
            read, at = self._read(hid, h, d)  # logits of the verified columns (and blocks)
            p_logits = self._no_mask(read[:, :d + 1])  # (B, d + 1, V)
            if self._counts is not None:  # each position judged for the text before it
                live = torch.arange(d, device=p_logits.device)[None, :] < self.dlen[:, None]
                p_logits = self._counts.penalise(p_logits, self.drafts, live)
            if self.temperature == 0:
                n, out = accept_greedy(self.drafts, p_logits)
                n = torch.minimum(n, self.dlen)  # a row accepts no more than it drafted
            else:
                flat = tempered(p_logits.reshape(B * (d + 1), -1), self.temperature)
                p = F.softmax(filter_logits(flat, self.top_k, self.top_p), dim=-1)
                n, out = self._accept(p.reshape(B, d + 1, -1), active)
            # a row commits n + 1 tokens: none past gen_length (drafts past it were free)
            n = torch.where(active, torch.minimum(n, self.gen_length - 1 - self.committed), 0)
            N = P + self.committed
            count, ended = commit_rows(self.gen, self.committed, out, n, active, self.eos_id)
            if self._counts is not None:
                kept = torch.arange(d + 1, device=n.device)[None, :] < count[:, None]
                self._counts.add(out, kept)
            keep = (plan.columns < h + n[:, None]) & active[:, None]  # head + accepted drafts
            self.cache.commit(keep, torch.where(active, N + n, self.cache.fed))
            self._drafted += self.dlen * active
            self._accepted += torch.minimum(n, count)  # committed drafts: none after an EOS
            self._rounds += active
            self.committed += count
            self.finished |= ended | (self.committed >= self.gen_length)
            if self.stop is not None:  # a stop sequence ends it too (no work without)
                self.finished |= self.stopped_rows(~self.finished)
            self._choose(hid if at is None else read, plan, n, at)
        self.steps += 1
        if bool(self.finished.all()):
            self._stopped = True
        self._report()
        if not self._stopped:
            self._show_drafts()

    def _show_drafts(self) -> None:
        """Hand the drafts the next round verifies to an ``on_view`` that draws them (a live
        view with a ``draft(step, view, drafts)`` method): (B, G), ``mask_id`` elsewhere."""
        show = getattr(self.on_view, "draft", None)
        d = self.drafts.shape[1]
        if show is None or d == 0:
            return
        show(self.steps, self.view(), place_drafts(self.gen, self.committed, self.drafts,
                                                   self.dlen, self.mask_id))  # fmt: skip

    def view(self) -> Tensor:
        return rows_view(self.gen, self.committed, self.finished, self.mask_id)

    def result(self) -> HybridResult:
        real = self.real if self.padded else None
        tokens, region, attn = prompt_and_generation(self.prompt, self.gen, real)
        return HybridResult(
            tokens=tokens,
            region=region,
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            attention_mask=attn,
            verifier_nfe=self.nfe,
            drafter_nfe=0,
            drafted=self.drafted,
            accepted=self.accepted,
            committed=int(self.committed.sum()),
            row_rounds=int(self._rounds.sum()),
        )


def check_draft_length(n: int, trained: int | None, name: str = "draft_length") -> None:
    """Refuse, in one ``UserError`` line, a draft length ``n`` the checkpoint cannot draft:
    below 1, or past ``trained``, the ``draft_block`` it was trained with (its mask blocks
    hold that many positions; a longer block drafts positions it never learned). ``trained``
    None (a causal model given an explicit block, a test double): only ``n >= 1``. The one
    check of ``HybridRun`` (``name`` ``draft_block``) and of ``HybridDecoder.check`` (the
    ``draft_length`` of a ``SampleConfig``: the CLI, the server, the API)."""
    if trained is None and n < 1:
        raise UserError(f"{name} must be >= 1, got {n}")
    if trained is not None and not 1 <= n <= trained:
        raise UserError(
            f"{name} {n}: this hybrid checkpoint drafts blocks of {trained} tokens; "
            f"use 1 .. {trained}"
        )


@register_decoder("hybrid")
class HybridDecoder(Decoder):
    """A checkpoint of objective ``hybrid`` verifies its own drafts and drafts the next block in
    one forward (``HybridRun``)."""

    penalties = True
    row_seeds = True
    summary = (
        "hybrid: a model trained with objective 'hybrid' verifies its drafts causally and drafts "
        "the next block in the same forward (TiDAR); output distributed exactly as 'ar'"
    )
    unused, unused_why = CAUSAL_UNUSED, CAUSAL_WHY

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        if facts.attention != "causal" or not facts.draft_block:
            raise UserError(
                "decoder 'hybrid' needs a checkpoint trained with objective 'hybrid' (it drafts "
                f"with its draft blocks); this one is {facts.objective!r}: use decoder "
                f"{facts.default_decoder!r}"
            )
        check_causal("hybrid", facts, config)
        if config.draft_length is not None:
            check_draft_length(config.draft_length, facts.draft_block)

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
        device = model_device(target.model) or torch.device("cpu")
        generator: torch.Generator | RowGenerators | None = make_generator(config.seed, device)
        if seeds is not None:  # row i seeded seeds[i]: what it draws alone under that seed
            generator = row_generators(seeds, device)
        return HybridRun(
            target.model,
            prompt_ids,
            max_new_tokens=config.gen_length,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            eos_id=f.eos_id,
            pad_id=f.pad_id,
            start_id=f.start_id,
            mask_id=f.mask_id,
            draft_block=config.draft_length or f.draft_block,
            predraft=config.predraft,
            draft_threshold=config.draft_threshold,
            generator=generator,
            on_view=on_view,
            penalties=Penalties.of(config),
            forbid_eos=config.forbid_eos,
        )


__all__ = ["PREDRAFT", "HybridDecoder", "HybridResult", "HybridRun", "check_draft_length"]
