"""Repetition penalties on the logits, one definition for every decoder that reads them.

Four knobs, as the tools users know define them (and with their neutral values as defaults):

- ``repetition_penalty`` r (CTRL, Keskar et al. 2019; Hugging Face ``generate``, vLLM): the
  logit of every token already in the text (prompt or generated) is divided by r where it is
  positive and multiplied by r where it is negative; r > 1 discourages repeats, 1 = off.
- ``presence_penalty`` a and ``frequency_penalty`` f (OpenAI, vLLM): the logit of token v is
  lowered by ``a · [c_v > 0] + f · c_v``, c_v = how often v occurs in the *generated* text so
  far (the prompt is not counted); 0 = off, negative values encourage repeats.

- ``no_repeat_ngram_size`` n (Hugging Face ``generate``): a token that would complete an
  n-gram the text already holds (prompt included) is forbidden (its logit -inf); 0 = off.
  N-grams holding a special id never count, so EOS padding never forbids EOS.

r is applied first, then a and f (vLLM's order), then the n-gram ban (Hugging Face's). What
"the text so far" is depends on the decoder, and each says it in one place:

- left to right (``ar``, and the verifier of ``speculative`` / ``hybrid``; ``TextCounts``, its
  n-grams in an ``NgramIndex`` updated with each committed token): the prompt and the
  tokens before the position being predicted, drafts included where a draft is verified, so
  a verified draft is judged exactly as ``ar`` would judge it (greedy output stays
  token-identical to ``ar`` with the same penalties, sampled output distributed as it);
- the commit loop (``llada``, ``bd3lm``; ``PenaltyConstraint``): every token committed so far
  anywhere on the canvas, given tokens included for r; every masked position is penalised
  for all of them (a masked diffusion model sees the whole canvas, not a prefix). A masked
  position may not take a token that makes any n-gram around it (the other n - 1 positions
  committed) equal to a committed n-gram elsewhere; two positions committed in the same step
  are not checked against each other.

``SampleConfig.repetition_penalty`` etc. carry them; ``Penalties.of(config)`` is None when all
four are neutral, and then no decoder does any extra work.

No decoder counts or penalises the model's special tokens (``special_ids``: EOS, padding, ...)
nor ``SampleConfig.exempt_ids`` (``Penalties.exempt``): a chat template's own end-of-turn
tokens, which chat puts there (``exempting``), so that the ends of earlier turns never make the
model less willing to end its reply.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import CanvasConstraint
from unmask.config import SampleConfig

PENALTY_FIELDS: tuple[str, ...] = (
    "repetition_penalty", "presence_penalty", "frequency_penalty", "no_repeat_ngram_size",
)
"""The ``SampleConfig`` fields of the penalties."""


@dataclass(frozen=True)
class Penalties:
    """The four penalties (see the module): r, a, f and the n-gram size; build with
    ``Penalties.of(config)``."""

    repetition: float = 1.0
    presence: float = 0.0
    frequency: float = 0.0
    ngram: int = 0
    exempt: tuple[int, ...] = ()
    """Ids never counted nor penalised besides the model's ``special_ids``
    (``SampleConfig.exempt_ids``: a chat template's end-of-turn tokens)."""

    @classmethod
    def of(cls, config: SampleConfig) -> Penalties | None:
        """The penalties a ``SampleConfig`` asks for (checked when it was made); None when
        every one is neutral."""
        if not given_penalties(config):
            return None
        return cls(repetition=float(config.repetition_penalty),
                   presence=float(config.presence_penalty),
                   frequency=float(config.frequency_penalty),
                   ngram=int(config.no_repeat_ngram_size),
                   exempt=tuple(config.exempt_ids))  # fmt: skip

    @property
    def counted(self) -> bool:
        """Whether a count-driven penalty (r, a or f) is on (``apply`` changes something)."""
        return self.repetition != 1.0 or self.presence != 0.0 or self.frequency != 0.0

    def apply(self, logits: Tensor, seen: Tensor, generated: Tensor, *,
              where: Tensor | None = None, inplace: bool = False) -> Tensor:
        """Penalised ``logits`` (..., V). ``seen`` (..., V) counts every token of the text so
        far (prompt included; r reads whether it is > 0), ``generated`` (..., V) the generated
        ones (a and f; a subset of ``seen``); both broadcast against ``logits``. ``where``
        (...) bool: penalise only those positions. A new tensor unless ``inplace``.

        Only the columns of tokens the text holds can change, so only those are computed (a
        few hundred of V: the full-width version cost a third of a demo-model step)."""
        V = logits.shape[-1]
        out = logits if inplace else logits.clone()
        if where is not None and _per_row(seen, where):  # a canvas: no columns needed
            return self._apply_rows(out, seen[:, 0], generated, where)
        cols = (seen.reshape(-1, V) > 0).any(dim=0).nonzero().flatten()  # (K,)
        if cols.numel() == 0:
            return out
        if where is not None:  # only the positions ``where`` marks: (N, K), not (..., K)
            return self._apply_at(out, seen, generated, where, cols)
        pen = self._penalised(logits.index_select(-1, cols), seen, generated, cols)  # (..., K)
        return out.index_copy_(-1, cols, pen.to(out.dtype))

    def _penalised(self, sub: Tensor, seen: Tensor, generated: Tensor, cols: Tensor,
                   at: tuple[Tensor, ...] | None = None, lead: Sequence[int] = ()) -> Tensor:
        """``sub`` (the logits of the columns ``cols``) penalised: (..., K), or (N, K) at the
        positions ``at`` (index tensors over the leading dims ``lead``, which ``seen`` and
        ``generated`` broadcast to)."""

        def pick(counts: Tensor) -> Tensor:  # (..., K) counts of the columns, at ``at``
            c = counts.index_select(-1, cols)
            return c if at is None else c.expand(*lead, c.shape[-1])[at]

        pen = sub
        if self.repetition != 1.0:
            r = self.repetition
            hit = pick(seen) > 0
            pen = torch.where(hit, torch.where(pen > 0, pen / r, pen * r), pen)
        if self.presence != 0.0 or self.frequency != 0.0:
            g = pick(generated).to(pen.dtype)
            pen = pen - self.presence * (g > 0).to(pen.dtype) - self.frequency * g
        return pen

    def _apply_at(self, out: Tensor, seen: Tensor, generated: Tensor, where: Tensor,
                  cols: Tensor) -> Tensor:
        """``apply`` with ``where``: the (N, K) logits of the N marked positions and the K
        columns are read, penalised and written back with one gather and one scatter each
        (``_apply_rows`` for a canvas's counts per row). Computing every position of a commit
        loop's (B, L, V) canvas instead and putting the unmarked ones back took 2.6x to 12x
        as long at eight rows of the demo's 256-token canvas (a quarter to three quarters
        committed, its default penalties, one thread, run side by side); at one row the two
        are within about 20% of each other (1.3-1.9 ms)."""
        if _per_row(seen, where):  # a canvas: per row
            return self._apply_rows(out, seen[:, 0], generated, where)
        at = where.nonzero(as_tuple=True)  # each (N,)
        if at[0].numel() == 0:
            return out
        grid = tuple(i[:, None] for i in at) + (cols[None, :],)  # (N, K) element indices
        pen = self._penalised(out[grid], seen, generated, cols, at, where.shape)
        out[grid] = pen.to(out.dtype)
        return out

    def _apply_rows(self, out: Tensor, seen: Tensor, generated: Tensor, where: Tensor) -> Tensor:
        """``_apply_at`` for counts per row, ``seen`` (B, V) over positions ``where`` (B, L):
        each marked position (b, l) is penalised at the tokens its own row b holds only,
        (position, token) pairs joined by row, so rows whose texts differ do not pay for
        each other's tokens (the columns of any row: up to B times the pairs)."""
        B, V = seen.shape
        pb, pv = (seen > 0).nonzero(as_tuple=True)  # (M,) each: row b holds token v
        rows, cols = where.nonzero(as_tuple=True)  # (N,) marked positions, by row
        per_row = where.sum(dim=1)  # (B,) marked positions of each row
        reps = per_row[pb]  # (M,) each pair once per marked position of its row
        if len(pb) == 0 or len(rows) == 0:  # sizes the host knows: no extra device sync
            return out
        first = torch.cumsum(per_row, 0) - per_row  # (B,) the row's first entry of rows/cols
        pair = torch.repeat_interleave(torch.arange(len(pb), device=seen.device), reps)
        within = torch.arange(len(pair), device=seen.device) - torch.repeat_interleave(
            torch.cumsum(reps, 0) - reps, reps)  # (E,) which marked position of the row
        b, v = pb[pair], pv[pair]  # (E,)
        col = cols[first[b] + within]
        sub = out[b, col, v]  # (E,)
        pen = sub
        if self.repetition != 1.0:  # every pair is a token the row holds
            r = self.repetition
            pen = torch.where(pen > 0, pen / r, pen * r)
        if self.presence != 0.0 or self.frequency != 0.0:
            g = generated.reshape(B, V)[b, v].to(pen.dtype)
            pen = pen - self.presence * (g > 0).to(pen.dtype) - self.frequency * g
        out[b, col, v] = pen.to(out.dtype)
        return out


def _per_row(seen: Tensor, where: Tensor) -> bool:
    """Whether ``Penalties.apply`` at positions ``where`` (B, L) reads counts ``seen`` (B, 1, V)
    per row of a canvas (``Penalties._apply_rows``)."""
    return where.dim() == 2 and seen.dim() == 3 and seen.shape[1] == 1


SPECIAL_ID_FIELDS: tuple[str, ...] = (
    "eos_id", "pad_id", "bos_id", "mask_id", "fim_prefix_id", "fim_suffix_id", "fim_middle_id",
)
"""The model config fields whose tokens the penalties never count (``special_ids``)."""


def special_ids(model_config: Any) -> tuple[int, ...]:
    """The model's special token ids (``SPECIAL_ID_FIELDS`` of its config): never counted, so
    never penalised. An end-of-text token in the prompt (a document separator, the end of an
    earlier chat turn) must not make the model less willing to stop. A chat template's own
    end-of-turn token that is not the EOS (``<|eot_id|>``, ``<|im_end|>``) is not among them
    (the model's config does not know the template): chat exempts it through
    ``SampleConfig.exempt_ids`` (``exempting``)."""
    ids = (getattr(model_config, f, None) for f in SPECIAL_ID_FIELDS)
    return tuple(sorted({int(i) for i in ids if i is not None}))


def banned_ids(model_config: Any) -> tuple[int, ...]:
    """The ids a finished sample of a checkpoint may not hold: its special tokens
    (``special_ids``: ``[MASK]``, ``[PAD]``, BOS, the FIM sentinels) and ``[EMPTY]``, but not EOS
    (the model ends its text with it; ``forbid_eos`` bans it too). None of them is ever a
    training target of free text, but an untrained or weakly trained model still ranks them:
    the uniform graph's prior and forward process move tokens into every id (a ``sedd``
    sample ended on them in about 1 position in 12 for an untrained model over 12 ids), and
    the commit loop and the continuous decoders' rounding wrote [PAD] and BOS. The one rule of
    every decoder that reads tokens off logits or scores (``sedd``, ``continuous``, ``loop``,
    ``blocks``)."""
    eos = getattr(model_config, "eos_id", None)
    empty = getattr(model_config, "empty_id", None)
    ids = {*special_ids(model_config), *(() if empty is None else (int(empty),))}
    return tuple(sorted(ids - {eos}))


def token_counts(tokens: Tensor, keep: Tensor | None, vocab: int,
                 exempt: Sequence[int] = (), *, into: Sequence[Tensor] = ()) -> Tensor:
    """(B, V) float32: how often each token id occurs in each row of ``tokens`` (B, L), counting
    only the positions where ``keep`` (B, L) bool is True (all when None) and never the ids in
    ``exempt``. Ids outside [0, V) are ignored. ``into``: add the counts to each of these
    (B, V) tensors instead (returns the first; a running count's step makes no (B, V)
    tensor of its own)."""
    B = tokens.shape[0]
    ok = (tokens >= 0) & (tokens < vocab)
    if keep is not None:
        ok = ok & keep
    if exempt:
        ok = ok & ~torch.isin(tokens, id_tensor(tuple(exempt), tokens.device))
    index, weight = tokens.clamp(0, vocab - 1), ok.to(torch.float32)
    if not into:
        into = (torch.zeros(B, vocab, dtype=torch.float32, device=tokens.device),)
    for out in into:
        out.scatter_add_(1, index, weight.to(out.dtype))
    return into[0]


@functools.lru_cache(maxsize=64)
def id_tensor(ids: tuple[int, ...], device: torch.device) -> Tensor:
    """``tensor(ids)`` on ``device``, made once per ids and device (``token_counts``,
    ``forbid_id`` and the n-gram ban's exempt ids run every step); never written to."""
    return torch.tensor(ids, dtype=torch.long, device=device)


def prefix_counts(base: Tensor, drafts: Tensor, live: Tensor | None = None,
                  exempt: Sequence[int] = ()) -> Tensor:
    """Counts (B, K + 1, V) before each of K + 1 positions that follow a committed text with
    counts ``base`` (B, V) and the drafts (B, K) in between: position j sees the first j
    drafts (only the ``live`` (B, K) ones, where given; never the ids in ``exempt``).
    Position 0 is ``base`` itself."""
    B, K = drafts.shape
    V = base.shape[-1]
    if K == 0:
        return base[:, None]
    one = torch.zeros(B, K, V, dtype=base.dtype, device=base.device)
    valid = (drafts >= 0) & (drafts < V)
    if live is not None:
        valid = valid & live
    if exempt:
        valid = valid & ~torch.isin(drafts, torch.tensor(list(exempt), device=drafts.device))
    one.scatter_(2, drafts.clamp(0, V - 1)[..., None], valid[..., None].to(base.dtype))
    before = torch.cat([torch.zeros_like(one[:, :1]), one.cumsum(dim=1)], dim=1)  # (B, K+1, V)
    return base[:, None] + before


def ngram_bans(tokens: Tensor, ok: Tensor, query: Tensor,
               n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where a token would repeat an n-gram on a canvas: (row, query index, token id) triples,
    each (M,).

    ``tokens`` (B, L) with ``ok`` (B, L) bool, the positions that are text (written, not
    special); ``query`` (B, Q) long, the positions to be written (entries outside [0, L) ask
    nothing). For every place o of the query inside an n-gram whose other n - 1 positions are
    text, the token that would make it equal to an n-gram of text anywhere is banned. Exact
    (tokens are compared, not hashed); a (B, Q, L - n + 1, n, n - 1) comparison over the n
    places the query may take, in chunks of queries of at most ``_COMPARED`` elements. (A
    left-to-right text keeps an index instead, ``NgramIndex``; the whole-text search it
    replaced is ``benchmarks/penalty_cost.py``'s reference.)"""
    B, L = tokens.shape
    W = L - n + 1
    empty = query.new_zeros(0)
    if n < 1 or W < 1 or query.numel() == 0:
        return empty, empty, empty
    win = tokens.unfold(1, n, 1)  # (B, W, n)
    whole = ok.unfold(1, n, 1).all(dim=-1)  # (B, W): n-grams of text
    # every place o of the query in one pass: (.., O)
    o, others = _places(n, tokens.device)  # (O,), (O, n - 1): the other places of each
    start = query[..., None] - o  # (B, Q, O): the n-gram with the query at place o
    inside = (query >= 0) & (query < L)
    valid = (start >= 0) & (start < W) & inside[..., None]
    start = start.clamp(0, W - 1)
    pos = start[..., None] + others  # (B, Q, O, n - 1)
    flat = pos.reshape(B, -1)
    ctx = tokens.gather(1, flat).reshape(pos.shape)  # (B, Q, O, n - 1)
    valid = valid & ok.gather(1, flat).reshape(pos.shape).all(dim=-1)
    grams = win[:, :, others]  # (B, W, O, n - 1)
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    Q = query.shape[1]
    chunk = max(1, _COMPARED // max(1, grams.numel()))  # queries per comparison
    seen = whole[:, None, :, None]  # (B, 1, W, 1)
    for q0 in range(0, Q, chunk):
        part = slice(q0, q0 + chunk)
        same = (grams[:, None] == ctx[:, part, None]).all(dim=-1)  # (B, q, W, O)
        b, q, w, k = (same & seen & valid[:, part, None, :]).nonzero(as_tuple=True)
        out.append((b, q + q0, win[b, w, o[k]]))
    # one token in two new n-grams (places o1 < o2) that would equal each other
    if n > 1:
        out.append(_self_repeat(tokens, ok, query, n))
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]


_COMPARED = 1 << 24
"""Most token comparisons ``ngram_bans`` holds at once (bools, plus their ``all``): queries
are compared in chunks, so a long canvas at a large n costs time, not memory (one pass over
4,096 queries of a 4,096-token canvas at n = 6 held 297 MB)."""


@functools.lru_cache(maxsize=64)
def _places(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The places o a query takes in an n-gram (``ngram_bans``: every one), (n,), and for each
    the other places, in order, (n, n - 1); made once per n and device, never written to."""
    others = [[j for j in range(n) if j != o] for o in range(n)]
    return (torch.arange(n, device=device),
            torch.tensor(others, device=device, dtype=torch.long).reshape(n, n - 1))


@functools.lru_cache(maxsize=64)
def _pairs(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For every pair of places o1 < o2 of ``_self_repeat`` (P = n(n - 1)/2 of them) over a
    window of the 2n - 1 positions around a query (the query at n - 1): the window index of
    the token d = o2 - o1 before the query (P,), the window indices of the earlier n-gram and
    of the later one (P, n), and which window positions the two cover (P, 2n - 1). Made once
    per n and device, never written to."""
    c = n - 1
    pairs = list(itertools.combinations(range(n), 2))
    t = [c - (o2 - o1) for o1, o2 in pairs]
    early = [[c - o2 + j for j in range(n)] for _, o2 in pairs]
    late = [[c - o1 + j for j in range(n)] for o1, _ in pairs]
    span = [[c - o2 <= k <= c - o1 + n - 1 for k in range(2 * n - 1)] for o1, o2 in pairs]
    return (torch.tensor(t, device=device), torch.tensor(early, device=device),
            torch.tensor(late, device=device), torch.tensor(span, device=device))


def _self_repeat(tokens: Tensor, ok: Tensor, query: Tensor,
                 n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The bans of ``ngram_bans`` (canvas) where the query's token t would make the n-gram with
    it at place o1 equal the one with it at place o2 > o1 (they overlap): t must equal the
    token d = o2 - o1 before the query, so that is the only candidate, banned when the two
    n-grams with it are equal. Every pair (o1, o2) in one pass over the 2n - 1 positions
    around each query (one call per pair cost a third of an n = 4 commit-loop step)."""
    B, L = tokens.shape
    Q = query.shape[1]
    t_at, early, late, span = _pairs(n, tokens.device)
    P = t_at.shape[0]
    pos = query[..., None] + torch.arange(-(n - 1), n, device=tokens.device)  # (B, Q, 2n - 1)
    inside = (pos >= 0) & (pos < L)
    flat = pos.clamp(0, L - 1).reshape(B, -1)
    tok = tokens.gather(1, flat).reshape(pos.shape)
    text = ok.gather(1, flat).reshape(pos.shape)
    text[..., n - 1] = True  # the query itself
    valid = ((text & inside)[:, :, None] | ~span).all(dim=-1)  # (B, Q, P)
    t = tok[..., t_at]  # (B, Q, P): the token d before the query
    tok = tok[:, :, None].expand(B, Q, P, 2 * n - 1).clone()
    tok[..., n - 1] = t
    equal = (tok.gather(-1, early.expand(B, Q, P, n))
             == tok.gather(-1, late.expand(B, Q, P, n))).all(dim=-1)  # (B, Q, P)
    b, q, k = (equal & valid).nonzero(as_tuple=True)
    return b, q, t[b, q, k]


def ban(logits: Tensor, bans: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``logits`` (B, Q, V) with -inf at each (row, query, token) of ``ngram_bans``, in place,
    except where that would leave a position no finite logit (every token a constraint allows
    banned): there the n-gram may repeat rather than the decoder choose among nothing."""
    b, q, v = bans
    if not b.numel():
        return logits
    where, inverse = torch.unique(b * logits.shape[1] + q, return_inverse=True)  # positions
    rows = logits[where // logits.shape[1], where % logits.shape[1]]  # (U, V)
    banned = torch.zeros_like(rows, dtype=torch.bool)
    banned[inverse, v] = True
    alive = (torch.isfinite(rows) & ~banned).any(dim=-1)[inverse]  # (M,)
    logits[b[alive], q[alive], v[alive]] = float("-inf")
    return logits


class NgramIndex:
    """The n-grams of each row of a left-to-right text, kept as the text grows, and the bans
    they make at the end of the text, with no search over it.

    ``rows``: each row's text so far (prompt; left padding included), ``None`` at a position
    that is not text (padding, a special id). The index maps each context, the n - 1 tokens
    of an n-gram of text, to the tokens that followed it; ``extend`` adds a row's committed
    tokens (only committed ones: a rejected draft never enters), ``bans`` reads the bans of
    the next position and of the positions after drafts. A step costs what its new tokens
    and queries do, not what the text's length does: searching the whole text every step
    (``benchmarks/penalty_cost.py``'s reference, which the tests compare it with) grew with
    it (with a copy of the logits, 13-21% of an AR step of a demo-sized model:
    docs/sampling.md, "What they cost a step"). Host-side sets of token tuples: exact, as the
    search is."""

    def __init__(self, n: int, rows: Sequence[Sequence[int | None]]) -> None:
        if n < 1:
            raise ValueError(f"an n-gram index needs n >= 1, got {n}")
        self.n = n
        self._follow: list[dict[tuple[int, ...], set[int]]] = [{} for _ in rows]
        self._tail: list[list[int | None]] = [[] for _ in rows]  # the last n - 1 positions
        for b, row in enumerate(rows):
            self.extend(b, row)

    def __len__(self) -> int:
        """The number of rows."""
        return len(self._tail)

    def extend(self, row: int, tokens: Sequence[int | None]) -> None:
        """Append ``tokens`` (``None`` = not text) to row ``row``'s text."""
        n, tail, follow = self.n, self._tail[row], self._follow[row]
        for t in tokens:
            tail.append(t)
            if len(tail) == n:  # the n-gram ending here
                if t is not None and None not in tail:
                    follow.setdefault(tuple(tail[:-1]), set()).add(t)  # type: ignore[arg-type]
                del tail[0]

    def bans(self, row: int, drafts: Sequence[int | None] = ()) -> list[set[int]]:
        """The tokens banned at the K + 1 positions after row ``row``'s text and each of its
        K ``drafts`` (``None`` = not text: a special id; a caller with fewer drafts for this
        row than the batch's passes only the row's own, and gets fewer sets back):
        position j may not complete an n-gram that the text, or the text with the first j
        drafts, already holds. Empty where the n - 1 positions before are not all text."""
        n, follow = self.n, self._follow[row]
        seq = self._tail[row] + list(drafts)
        base = len(self._tail[row])  # < n - 1 only while the whole text is shorter
        out: list[set[int]] = []
        for e in range(base, len(seq) + 1):  # e: the queried position's index in seq
            ctx = seq[e - n + 1 : e] if e >= n - 1 else [None]
            if None in ctx:
                out.append(set())
                continue
            key = tuple(ctx)
            hit = follow.get(key, set())
            for i in range(max(base, n - 1), e):  # n-grams that end at a draft before e
                gram = seq[i - n + 1 : i + 1]
                if tuple(gram[:-1]) == key and gram[-1] is not None and None not in gram:
                    hit = hit | {gram[-1]}  # type: ignore[arg-type]
            out.append(hit)
        return out


class TextCounts:
    """Running counts of a left-to-right text (``ar``, ``speculative``, ``hybrid``) and the
    penalties they drive: ``seen`` (B, V) over prompt and generated tokens, ``generated``
    (B, V) over generated ones only, built from ``prompt`` (B, P) where ``keep`` (B, P) on the
    first ``penalise`` (which learns V from the logits). ``add(tokens, keep)`` counts newly
    committed tokens (B, n) where ``keep`` (B, n) (a prefix of each row). Ids in ``exempt``
    are never counted. With the n-gram ban it also indexes the text's n-grams
    (``NgramIndex``: the prompt, then each row's committed tokens)."""

    def __init__(self, penalties: Penalties, prompt: Tensor, keep: Tensor,
                 exempt: Sequence[int] = ()) -> None:
        self.penalties, self._prompt, self._keep = penalties, prompt, keep
        self.exempt = tuple(exempt)
        self.seen: Tensor | None = None  # (B, V)
        self.generated: Tensor | None = None  # (B, V)
        self._special = frozenset(self.exempt)
        self.ngrams: NgramIndex | None = None
        if penalties.ngram:
            self.ngrams = NgramIndex(penalties.ngram, self._as_text(prompt, keep, drop=False))

    def _as_text(self, tokens: Tensor, keep: Tensor, *,
                 drop: bool = True) -> list[list[int | None]]:
        """Rows of ``tokens`` (B, n) on the host, ``None`` for an exempt id, and for a
        position not ``keep`` (B, n) (``drop``: left out: ``keep`` is a prefix of each row,
        the committed tokens or a row's own drafts). One transfer for both."""
        both = torch.stack([tokens.long(), keep.long()]).tolist()
        special = self._special
        return [[None if t in special or not k else t for t, k in zip(r, ks, strict=True)
                 if k or not drop] for r, ks in zip(*both, strict=True)]  # fmt: skip

    def _counts(self, vocab: int) -> tuple[Tensor, Tensor]:
        if self.seen is None or self.generated is None:
            self.seen = token_counts(self._prompt, self._keep, vocab, self.exempt)
            self.generated = torch.zeros_like(self.seen)
        return self.seen, self.generated

    def add(self, tokens: Tensor, keep: Tensor | None = None) -> None:
        if self.ngrams is not None:
            keep = torch.ones_like(tokens, dtype=torch.bool) if keep is None else keep
            for b, row in enumerate(self._as_text(tokens, keep)):
                self.ngrams.extend(b, row)
        if not self.penalties.counted:
            return
        if self.seen is None or self.generated is None:  # a run penalises, then commits
            raise RuntimeError("TextCounts.add before the first penalise (V unknown)")
        token_counts(tokens, keep, self.seen.shape[-1], self.exempt,
                     into=(self.seen, self.generated))

    def penalise(self, logits: Tensor, drafts: Tensor | None = None,
                 live: Tensor | None = None, *, inplace: bool = False) -> Tensor:
        """``logits`` (B, V) of the next position, or (B, K + 1, V) of the positions after
        each of K ``drafts`` (B, K) (``live`` (B, K): which of them a row drafted, a prefix),
        each penalised for the text before it; without ``drafts``, (B, n, V) logits are all
        penalised for the committed text alone, and only the first is checked for n-grams (the
        others do not know the tokens before them). Written into ``logits`` when ``inplace``,
        else into a copy (``logits`` itself when nothing changes)."""
        p = self.penalties
        out = logits
        if p.counted:
            seen, generated = self._counts(logits.shape[-1])
            if drafts is None:
                if logits.dim() == 3:
                    seen, generated = seen[:, None], generated[:, None]
                out = p.apply(logits, seen, generated, inplace=inplace)
            else:
                out = p.apply(logits, prefix_counts(seen, drafts, live, self.exempt),
                              prefix_counts(generated, drafts, live, self.exempt),
                              inplace=inplace)  # fmt: skip
        if self.ngrams is None:
            return out
        bans = self._ngram_bans(drafts, live, out.device)
        if not bans[0].numel():
            return out
        out = out if p.counted or inplace else out.clone()
        return ban(out if out.dim() == 3 else out[:, None], bans).reshape(out.shape)

    def _ngram_bans(self, drafts: Tensor | None, live: Tensor | None,
                    device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The (row, position, token) triples of ``ban`` at the positions ``penalise`` checks
        (the next one, and the one after each draft), from the index."""
        assert self.ngrams is not None
        B = len(self.ngrams)
        if drafts is None or drafts.shape[1] == 0:
            rows: list[list[int | None]] = [[] for _ in range(B)]
        else:
            live = torch.ones_like(drafts, dtype=torch.bool) if live is None else live
            rows = self._as_text(drafts, live)
        b_: list[int] = []
        q_: list[int] = []
        v_: list[int] = []
        for b, row in enumerate(rows):
            for q, banned in enumerate(self.ngrams.bans(b, row)):
                b_ += [b] * len(banned)
                q_ += [q] * len(banned)
                v_ += banned
        b, q, v = torch.tensor([b_, q_, v_], dtype=torch.long, device=device)  # one transfer
        return b, q, v


def text_counts(penalties: Penalties | None, prompt: Tensor, real: Tensor,
                started: Sequence[bool], model_config: Any) -> TextCounts | None:
    """The ``TextCounts`` of a left-to-right run with ``penalties`` (None without) over
    ``prompt`` (B, P), counting its ``real`` (B, P) positions except in the rows ``started``
    (an empty prompt given a start token: not text), never the model's ``special_ids`` nor
    ``penalties.exempt``."""
    if penalties is None:
        return None
    no_text = torch.tensor(list(started), dtype=torch.bool, device=prompt.device)
    exempt = sorted({*special_ids(model_config), *penalties.exempt})
    return TextCounts(penalties, prompt, real & ~no_text[:, None], exempt)


class PenaltyConstraint(CanvasConstraint):
    """The penalties as a canvas constraint of the commit loop (``llada``, ``bd3lm``): every
    masked position's logits are penalised for the tokens committed so far (``seen``: every
    non-mask token of the row that is not padding; ``generated``: those the sampler wrote, i.e.
    not locked), except the ``exempt`` ids (``special_ids``). Committed positions keep their
    logits (block editing reads them)."""

    def __init__(self, penalties: Penalties, *, mask_id: int, locked: Tensor,
                 attention_mask: Tensor | None, exempt: Sequence[int] = ()) -> None:
        self.penalties, self.mask_id, self.exempt = penalties, mask_id, tuple(exempt)
        self.locked, self.attention_mask = locked, attention_mask

    def apply(self, logits: Tensor, tokens: Tensor) -> Tensor:
        B, L, V = logits.shape
        if tokens.shape[0] != B:  # guidance's doubled batch is merged before constraints
            raise ValueError(f"logits for {B} rows, canvas of {tokens.shape[0]}")
        text = self._text(tokens, self._filled(tokens))  # no exempt id: counted as is
        open_ = (tokens == self.mask_id) & ~self.locked  # (B, L)
        p = self.penalties
        if p.counted:
            seen = token_counts(tokens, text, V)[:, None]  # (B, 1, V)
            generated = token_counts(tokens, text & ~self.locked, V)[:, None]
            logits = p.apply(logits, seen, generated, where=open_, inplace=True)
        if p.ngram:
            query = _near_text(open_, text, p.ngram)  # (B, Q) positions, -1 = none
            b, q, v = ngram_bans(tokens, text, query, p.ngram)
            logits = ban(logits, (b, query[b, q], v))
        return logits


    def _filled(self, tokens: Tensor) -> Tensor:
        """(B, L) the positions of ``tokens`` that hold a token: not masked, not padding."""
        filled = tokens != self.mask_id
        if self.attention_mask is not None:
            filled = filled & self.attention_mask.bool()
        return filled

    def _text(self, tokens: Tensor, filled: Tensor) -> Tensor:
        """The positions of ``tokens`` that count as text for the n-gram ban: filled, and not
        an exempt (special) id."""
        if not self.exempt:
            return filled
        # made once per device, not per call (settle calls it per token placed)
        return filled & ~torch.isin(tokens, id_tensor(self.exempt, tokens.device))

    def settle(self, tokens: Tensor, transfer: Tensor, x0: Tensor, order: Tensor,
               scores: Tensor, offset: int) -> Tensor:
        """``x0`` (B, L) with the n-gram ban also holding among the tokens one step commits
        (``transfer``, (B, L)): they are placed one at a time, by ``order`` (B, L; highest
        first), each checked against the canvas with the ones placed before it, and one that
        would repeat an n-gram becomes the best token of its ``scores`` row ((B, W, V), the
        step's (perturbed) logits of columns ``offset`` on) that does not (as ``ban``: kept
        when every token is banned). A step that commits one token per row is unchanged."""
        n = self.penalties.ngram
        k = int(transfer.sum(dim=1).max()) if transfer.numel() else 0
        if not n or k < 2:
            return x0
        B = tokens.shape[0]
        canvas = tokens.clone()
        text = self._text(canvas, self._filled(canvas))
        ranked = torch.where(transfer, order.double(), float("-inf")).argsort(
            dim=1, descending=True)[:, :k]  # (B, k)
        x0 = x0.clone()
        rows = torch.arange(B, device=tokens.device)
        for j in range(k):
            pos = ranked[:, j]  # (B,)
            live = transfer[rows, pos]
            query = torch.where(live, pos, -1)[:, None]  # (B, 1)
            b, _, v = ngram_bans(canvas, text, query, n)
            if b.numel():
                cols = (pos - offset).clamp(0, scores.shape[1] - 1)
                pick = scores[rows, cols][:, None]  # (B, 1, V), a copy (advanced indexing)
                ban(pick, (b, torch.zeros_like(b), v))
                hit = torch.zeros(B, dtype=torch.bool, device=tokens.device)
                hit[b] = True
                now = pick[:, 0].gather(1, x0[rows, pos][:, None])[:, 0]  # (B,)
                hit &= live & (now == float("-inf"))
                x0[rows[hit], pos[hit]] = pick[hit, 0].argmax(dim=-1)
            r, p = rows[live], pos[live]
            canvas[r, p] = x0[r, p]
            text[r, p] = self._text(canvas[r, p], torch.ones_like(p, dtype=torch.bool))
        return x0


def _near_text(open_: Tensor, text: Tensor, n: int) -> Tensor:
    """(B, Q) the open positions of each row that some n-gram of otherwise-text positions runs
    through (the only ones an n-gram ban can reach: usually the edges of what is committed),
    then -1; Q = the most in a row. Asking only about them keeps the ban's comparison small
    (all L positions: 20-30 ms a step for 8 rows of 250 on a CPU core)."""
    B, L = open_.shape
    if L >= n:
        o, others = _places(n, open_.device)  # (n,), (n, n - 1)
        # (B, W, n): the n-gram at w is text but for its place o; padded by n - 1 on each
        # side, so position p at place o reads row p + n - 1 - o (every place in one pass)
        text_but = text.unfold(1, n, 1)[..., others].all(dim=-1)
        padded = torch.nn.functional.pad(text_but, (0, 0, n - 1, n - 1))  # (B, L + n - 1, n)
        row = torch.arange(L, device=open_.device)[:, None] + (n - 1 - o)  # (L, n)
        near = padded[:, row, o].any(dim=-1) & open_
    else:
        near = torch.zeros_like(open_)
    Q = int(near.sum(dim=1).max()) if B else 0
    order = torch.sort(near.to(torch.int8), dim=1, descending=True, stable=True).indices
    query = order[:, :Q]
    return torch.where(near.gather(1, query), query, -1)


def exempting(config: SampleConfig, ids: Iterable[int], eos_id: int | None) -> SampleConfig:
    """``config`` with ``ids`` (a chat template's ``ChatTemplate.ends``) but the model's
    ``eos_id`` (exempt already: a template whose turns end with EOS changes nothing) exempt from the
    penalties (``SampleConfig.exempt_ids``): every earlier turn ends with them, and a penalty on
    them made a reply that should end go on (``<|eot_id|>`` under ``repetition_penalty`` 1.2
    wrote text where the reply ended at once). ``config`` itself when no penalty is on, so
    that a chat run's options stay as given (and batch with others) where they change nothing.
    The one rule of ``api.chat``, ``api.generate`` with a template and the server's chat."""
    more = {*config.exempt_ids, *(int(i) for i in ids if i != eos_id)}
    if not given_penalties(config) or more == set(config.exempt_ids):
        return config
    return replace(config, exempt_ids=tuple(sorted(more)))


def given_penalties(config: SampleConfig) -> list[str]:
    """The ``PENALTY_FIELDS`` of ``config`` that are not at their neutral default."""
    return [f for f in PENALTY_FIELDS if getattr(config, f) != getattr(SampleConfig, f)]


__all__ = [
    "PENALTY_FIELDS",
    "NgramIndex",
    "Penalties",
    "PenaltyConstraint",
    "TextCounts",
    "ban",
    "banned_ids",
    "exempting",
    "given_penalties",
    "ngram_bans",
    "prefix_counts",
    "special_ids",
    "text_counts",
    "token_counts",
]
