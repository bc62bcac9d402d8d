"""Rows that commit different numbers of tokens per round, over one KV cache (per-row acceptance
of the ``speculative`` and ``hybrid`` decoders).

A left-to-right run keeps each row as ``seq`` = ``[prompt ; gen]`` (B, P + G): the column of a
token is its *logical* position (left padding included, as in ``generate_ar``, so a row keeps
the RoPE positions AR decoding gives it and greedy output stays token-identical). Row i has
committed ``c_i`` tokens; rows may differ.

``RaggedCache`` keeps the keys/values of every row in one ``KVCache`` of shared *slots*: a
forward writes its L columns to the next L slots of every row, each column at its row's own
logical position (``positions`` (B, L); ``Transformer.forward`` accepts per-row positions with
an explicit ``attn_bias``). ``valid`` (B, S) marks the slots a row keeps (its prompt and
accepted tokens); the rest are holes (left padding, rejected drafts, draft blocks, a finished
row's columns) that the key mask hides. Slots that are holes in every row at the end are cut
off (so a batch of one keeps a contiguous cache, exactly the old roll-back), and once the
holes of the row with the most kept slots reach ``slack`` the cache is compacted (each row's
kept slots gathered to the front, in order): attention never runs over more than
``max_i kept_i + slack`` slots. Holes change no logit: a key the mask hides has weight 0.

``fed`` (B,) is how many logical positions of each row the cache holds (its kept slots are
positions ``0 .. fed_i - 1``); ``columns`` lays out what a row must feed next, right-aligned:
positions ``fed_i .. upto_i - 1``, so the newest token of every row sits in the same column.

Inside: ``RaggedCache``, ``columns``, ``commit_rows``, ``rows_view``, ``place_drafts``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def columns(seq: Tensor, real: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row i's tokens at logical positions ``lo_i .. hi_i - 1``, right-aligned in h = max(hi -
    lo) columns: (tokens (B, h), positions (B, h), real (B, h)). Columns before a row's first
    position are holes (``real`` False, position clamped to 0, token of position 0); ``real``
    (B, P + G) marks the real tokens of ``seq`` (False at left padding)."""
    h = int((hi - lo).max()) if hi.numel() else 0
    pos = hi[:, None] - h + torch.arange(h, device=seq.device)[None, :]  # (B, h)
    ok = pos >= lo[:, None]
    pos = pos.clamp(min=0)
    return seq.gather(1, pos), pos, real.gather(1, pos) & ok


def commit_rows(
    gen: Tensor,
    committed: Tensor,
    out: Tensor,
    n: Tensor,
    active: Tensor,
    eos_id: int | None,
) -> tuple[Tensor, Tensor]:
    """Write each active row's ``n_i + 1`` tokens ``out[i, : n_i + 1]`` (its accepted drafts
    and the verifier's token after them) at ``gen[i, c_i:]``, cut at ``gen_length`` and after
    the row's first EOS (later positions keep the fill ``gen`` was made with). Returns (the
    tokens written per row (B,), rows that wrote an EOS (B,))."""
    G, W = gen.shape[1], out.shape[1]
    j = torch.arange(W, device=out.device)[None, :]  # (1, W)
    count = torch.minimum(n + 1, G - committed).masked_fill(~active, 0)  # (B,) before EOS
    ended = torch.zeros_like(active)
    if eos_id is not None:  # nothing after a row's first EOS
        first = torch.where(out == eos_id, j, W).amin(dim=1)  # (B,) column of the first EOS
        ended = first < count
        count = torch.minimum(count, first + 1)
    rows, cols = (j < count[:, None]).nonzero(as_tuple=True)
    gen[rows, committed[rows] + cols] = out[rows, cols]
    return count, ended


def rows_view(gen: Tensor, committed: Tensor, finished: Tensor, mask_id: int) -> Tensor:
    """The (B, G) view of a ragged run: row i's first ``c_i`` tokens, its whole row once
    finished (the fill after EOS), ``mask_id`` where nothing is decided yet."""
    G = gen.shape[1]
    upto = torch.where(finished, torch.full_like(committed, G), committed)
    shown = torch.arange(G, device=gen.device)[None, :] < upto[:, None]  # (B, G)
    return torch.where(shown, gen, torch.full_like(gen, mask_id))


def place_drafts(
    gen: Tensor, committed: Tensor, drafts: Tensor, lengths: Tensor, mask_id: int
) -> Tensor:
    """(B, G) row i's first ``lengths_i`` drafts at its positions ``c_i ..`` (cut at G),
    ``mask_id`` elsewhere: what a live view draws apart from the committed text."""
    B, G = gen.shape
    out = torch.full_like(gen, mask_id)
    j = torch.arange(drafts.shape[1], device=gen.device)[None, :]  # (1, d)
    dest = committed[:, None] + j  # (B, d)
    ok = (j < lengths[:, None]) & (dest < G)
    rows, cols = ok.nonzero(as_tuple=True)
    out[rows, dest[rows, cols]] = drafts[rows, cols]
    return out


class RaggedCache:
    """One ``KVCache`` over rows of different lengths (module docstring): ``forward`` appends
    columns at per-row positions, ``rollback`` drops them, ``commit`` keeps some of them."""

    def __init__(self, batch: int, device: torch.device, *, slack: int) -> None:
        from unmask.model import KVCache

        self.kv = KVCache()
        self.valid = torch.zeros(batch, 0, dtype=torch.bool, device=device)  # (B, S)
        self.fed = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
        self.slack = max(int(slack), 1)
        self._start = 0
        self._real: Tensor | None = None

    def forward(
        self,
        model: Any,
        tokens: Tensor,
        positions: Tensor,
        bias: Tensor,
        real: Tensor,
        *,
        return_hidden: bool = False,
    ) -> Tensor:
        """Logits (B, L, V) of ``tokens`` (B, L) at ``positions`` (B, L); ``bias`` (B|1, 1, L, L)
        says which new columns each column sees (every kept slot is seen); ``real`` (B, L)
        False = a hole column (seen by no other column). The columns stay pending until
        ``commit`` or ``rollback``. ``return_hidden``: the final hidden states (B, L, D)
        instead, for a caller that runs the head on the few columns it reads."""
        self.kv.length = start = self.valid.shape[1]  # pending columns of a retry: overwritten
        attn = torch.cat([self.valid, real], dim=1)  # (B, S + L) keys that exist
        extra = {"return_hidden": True} if return_hidden else {}
        out = model(
            tokens, attention_mask=attn, positions=positions, attn_bias=bias,
            cache=self.kv, start=start, **extra,
        )  # fmt: skip
        self._start, self._real = start, real
        return getattr(out, "logits", out)

    def rollback(self) -> None:
        """Forget the pending columns (the next ``forward`` overwrites their slots)."""
        self.kv.length, self._real = self._start, None

    def commit(self, keep: Tensor, fed: Tensor) -> None:
        """Keep the pending columns ``keep`` (B, L) marks (hole columns never), drop the rest;
        ``fed`` (B,) = the logical positions each row's cache now holds."""
        assert self._real is not None, "nothing pending"
        self.valid = torch.cat([self.valid, keep & self._real], dim=1)  # (B, S + L)
        self.fed, self._real = fed.clone(), None
        used = self.valid.any(dim=0).nonzero()
        end = int(used.max()) + 1 if used.numel() else 0
        self.valid = self.valid[:, :end]  # slots that are holes in every row: cut off
        self.kv.length = end
        if end - int(self.valid.sum(dim=1).max()) >= self.slack:
            self.compact()

    def compact(self) -> None:
        """Gather each row's kept slots to the front, in order (keys keep their rotations:
        positions are per token, not per slot)."""
        counts = self.valid.sum(dim=1)  # (B,)
        S, top = self.valid.shape[1], int(counts.max())
        order = torch.argsort((~self.valid).to(torch.int8), dim=1, stable=True)[:, :top]  # (B, n)
        for i, (k, v) in enumerate(self.kv.layers):
            idx = order[:, None, :, None].expand(k.shape[0], k.shape[1], top, k.shape[3])
            nk, nv = k[:, :, :S].gather(2, idx), v[:, :, :S].gather(2, idx)  # (B, Hkv, n, hd)
            k[:, :, :top], v[:, :, :top] = nk, nv
            self.kv.layers[i] = (k, v)
        self.valid = torch.arange(top, device=counts.device)[None, :] < counts[:, None]
        self.kv.length = top


__all__ = ["RaggedCache", "columns", "commit_rows", "place_drafts", "rows_view"]
