"""Byte-level automata lifted to token ids, and the gap constraint built on them.

Inside:

- ``Vocab`` / ``vocab_of(tokenizer)``: every token's raw bytes as a padded matrix (cached).
- ``TokenAutomaton``: a ``DFA`` over bytes run over whole tokens: ``table`` (S+1, K) gives
  the next state for each of K token classes (tokens that act alike share a class; the
  last state is dead). ``allowed`` computes, for a partly committed gap, which tokens each
  open position may hold so that *some* completion of the gap is accepted.
- ``TokenAutomaton.with_empty_tail``: the same language with at least n tokens, then any
  number of ``[EMPTY]`` fillers (variable-length gaps filled in one pass).
- ``GapConstraint``: a ``CanvasConstraint`` holding one automaton over spans of the canvas.

Why an automaton over the whole gap: diffusion commits positions in any order, so whether
a token is acceptable at position i depends on the tokens already committed before *and
after* it. A forward pass (states reachable from the start given the committed prefix)
and a backward pass (states from which the committed suffix can still be completed) give
the exact set of tokens that keep the gap completable. Committing one position of a gap at
a time with these sets can never paint the gap into a corner; ``unmask.infill`` repairs the
rare gap broken by several positions committed in the same step.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unmask.canvas import CanvasConstraint
from unmask.errors import UserError
from unmask.infill.dfa import DFA


@dataclass(eq=False)
class Vocab:
    """Raw bytes of every token id of a tokenizer (special tokens have none)."""

    matrix: np.ndarray
    """(V, Lmax) uint8 bytes, zero-padded."""
    lengths: np.ndarray
    """(V,) int64 byte length of each token (0 for special tokens)."""

    @property
    def size(self) -> int:
        return int(self.lengths.shape[0])

    def token_bytes(self, token_id: int) -> bytes:
        n = int(self.lengths[token_id])
        return self.matrix[token_id, :n].tobytes()

    def decode(self, ids: Sequence[int]) -> str:
        """UTF-8 text of the concatenated token bytes (invalid bytes become U+FFFD)."""
        return b"".join(self.token_bytes(int(t)) for t in ids if 0 <= int(t) < self.size).decode(
            "utf-8", errors="replace"
        )


_VOCABS: weakref.WeakKeyDictionary[Any, Vocab] = weakref.WeakKeyDictionary()
_AUTOMATA: weakref.WeakKeyDictionary[Any, dict[Any, TokenAutomaton]] = weakref.WeakKeyDictionary()


def _bytes_of(tokenizer: Any, i: int) -> bytes:
    if getattr(tokenizer, "is_special", None) is not None and tokenizer.is_special(i):
        return b""
    tb = getattr(tokenizer, "token_bytes", None)
    if tb is not None:
        return bytes(tb(i))
    return tokenizer.decode([i]).encode("utf-8")


def vocab_of(tokenizer: Any) -> Vocab:
    """The ``Vocab`` of a tokenizer (``token_bytes`` per id; cached per tokenizer object)."""
    try:
        return _VOCABS[tokenizer]
    except (KeyError, TypeError):
        pass
    raw = [_bytes_of(tokenizer, i) for i in range(int(tokenizer.vocab_size))]
    width = max([len(b) for b in raw] + [1])
    matrix = np.zeros((len(raw), width), dtype=np.uint8)
    for i, b in enumerate(raw):
        if b:
            matrix[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    vocab = Vocab(matrix=matrix, lengths=np.array([len(b) for b in raw], dtype=np.int64))
    try:
        _VOCABS[tokenizer] = vocab
    except TypeError:  # not weak-referenceable: no cache
        pass
    return vocab


@dataclass(eq=False)
class TokenAutomaton:
    """A byte DFA run over token ids: state × token class → state; the last state is dead."""

    table: np.ndarray
    """(S+1, K) int32 next state per (state, token class); row S is the dead state."""
    token_class: np.ndarray
    """(V,) int32 class of each token id; ids at or past V belong to ``dead_class``."""
    accept: np.ndarray
    """(S+1,) bool accepting states (the dead state is not)."""
    dead_class: int
    """A class whose every transition goes to the dead state."""
    start: int = 0

    @property
    def dead(self) -> int:
        return int(self.table.shape[0]) - 1

    @property
    def vocab_size(self) -> int:
        return int(self.token_class.shape[0])

    @classmethod
    def from_dfa(cls, dfa: DFA, vocab: Vocab, allowed: np.ndarray | None = None) -> TokenAutomaton:
        """Lift ``dfa`` to tokens: a token moves state q to where its bytes lead from q.

        Tokens without bytes (special tokens) and tokens not in ``allowed`` ((V,) bool)
        lead to the dead state from everywhere.
        """
        S, V = dfa.n_states, vocab.size
        dead = S
        trans = np.where(dfa.trans >= 0, dfa.trans, dead).astype(np.int32)
        trans = np.concatenate([trans, np.full((1, 256), dead, dtype=np.int32)])  # (S+1, 256)
        # Longest first: the tokens still active at byte j are a prefix.
        order = np.argsort(-vocab.lengths, kind="stable")
        lengths = vocab.lengths[order]
        matrix = vocab.matrix[order]
        full = np.empty((S + 1, V), dtype=np.int32)
        chunk = max(1, 4_000_000 // max(V, 1))
        for lo in range(0, S + 1, chunk):
            states = np.arange(lo, min(lo + chunk, S + 1), dtype=np.int32)
            cur = np.repeat(states[:, None], V, axis=1)  # (s, V)
            for j in range(matrix.shape[1]):
                n_active = int((lengths > j).sum())
                if n_active == 0:
                    break
                cur[:, :n_active] = trans[cur[:, :n_active], matrix[:n_active, j][None, :]]
            full[lo : lo + len(states)] = cur
        full[:, lengths == 0] = dead
        unsorted = np.empty_like(full)
        unsorted[:, order] = full
        if allowed is not None:
            unsorted[:, ~allowed[:V]] = dead
        columns, token_class = np.unique(unsorted.T, axis=0, return_inverse=True)  # (K, S+1)
        table = np.ascontiguousarray(columns.T.astype(np.int32))  # (S+1, K)
        dead_cols = np.nonzero((table == dead).all(axis=0))[0]
        if len(dead_cols):
            dead_class = int(dead_cols[0])
        else:
            table = np.concatenate([table, np.full((S + 1, 1), dead, dtype=np.int32)], axis=1)
            dead_class = table.shape[1] - 1
        accept = np.concatenate([dfa.accept, [False]])
        return cls(table=table, token_class=token_class.reshape(-1).astype(np.int32), accept=accept,
                   dead_class=dead_class, start=dfa.start)

    def with_empty_tail(self, empty_id: int, min_len: int) -> TokenAutomaton:
        """Sequences of at least ``min_len`` tokens this automaton accepts, then any number of
        ``empty_id`` (and nothing else once one ``empty_id`` stands).

        The product of this automaton with a counter 0..``min_len`` (saturating) plus one
        "tail" state: from an accepting state whose count reached ``min_len``, ``empty_id``
        (a class of its own) leads to the tail, which only loops on ``empty_id``. So a gap
        of b slots holds its text contiguously from the start and the fillers at the end.
        """
        if not 0 <= empty_id < self.vocab_size:
            raise UserError(
                f"empty_id {empty_id} is outside the tokenizer's vocabulary "
                f"(size {self.vocab_size})"
            )
        # Live states, token classes, counter values.
        S, K, C = self.dead, self.table.shape[1], min_len + 1
        tail, dead = S * C, S * C + 1
        table = np.full((S * C + 2, K + 1), dead, dtype=np.int32)
        live = self.table[:S]  # (S, K)
        for c in range(C):
            rows = np.arange(S) * C + c
            table[rows, :K] = np.where(live == self.dead, dead, live * C + min(c + 1, min_len))
            if c == min_len:
                table[rows[self.accept[:S]], K] = tail
        table[tail, K] = tail
        accept = np.zeros(S * C + 2, dtype=bool)
        accept[np.arange(S) * C + min_len] = self.accept[:S]
        accept[tail] = True
        token_class = self.token_class.copy()
        token_class[empty_id] = K
        return TokenAutomaton(
            table=table,
            token_class=token_class,
            accept=accept,
            dead_class=self.dead_class,
            start=self.start * C,
        )

    # -- queries --------------------------------------------------------------------------

    def classes_of(self, seq: Sequence[int | None]) -> list[int]:
        """Token class per position; -1 for open (None) positions."""
        V = self.vocab_size
        return [
            -1 if t is None else (int(self.token_class[t]) if 0 <= t < V else self.dead_class)
            for t in seq
        ]

    def usable(self) -> np.ndarray:
        """(V,) bool: tokens that can stand somewhere in an accepted sequence (from some state)."""
        live = (self.table[: self.dead] != self.dead).any(axis=0)  # (K,)
        return live[self.token_class]

    def _passes(self, cls_seq: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Forward (reachable) and backward (completable) state sets, (n+1, S+1) bool each."""
        n, S1 = len(cls_seq), self.table.shape[0]
        fwd = np.zeros((n + 1, S1), dtype=bool)
        fwd[0, self.start] = True
        for i, c in enumerate(cls_seq):
            states = np.nonzero(fwd[i])[0]
            nxt = self.table[states] if c < 0 else self.table[states, c]
            fwd[i + 1, nxt.reshape(-1)] = True
            fwd[i + 1, self.dead] = False
        bwd = np.zeros((n + 1, S1), dtype=bool)
        bwd[n] = self.accept
        for i in range(n - 1, -1, -1):
            c = cls_seq[i]
            bwd[i] = bwd[i + 1][self.table].any(axis=1) if c < 0 else bwd[i + 1][self.table[:, c]]
        return fwd, bwd

    def accepts(self, seq: Sequence[int]) -> bool:
        """Whether the token ids ``seq`` (all committed) are accepted."""
        q = self.start
        for c in self.classes_of(list(seq)):
            q = int(self.table[q, c])
        return bool(self.accept[q])

    def completable(self, seq: Sequence[int | None]) -> bool:
        """Whether the open (None) positions of ``seq`` can be filled so it is accepted."""
        _, bwd = self._passes(self.classes_of(seq))
        return bool(bwd[0, self.start])

    def allowed(self, seq: Sequence[int | None]) -> dict[int, np.ndarray] | None:
        """For each open position i of ``seq``: (V,) bool of the tokens that keep the gap
        completable; None when the committed tokens already rule out every completion."""
        cls_seq = self.classes_of(seq)
        fwd, bwd = self._passes(cls_seq)
        if not bwd[0, self.start]:
            return None
        out: dict[int, np.ndarray] = {}
        for i, c in enumerate(cls_seq):
            if c >= 0:
                continue
            states = np.nonzero(fwd[i] & bwd[i])[0]
            ok_cls = bwd[i + 1][self.table[states]].any(axis=0)  # (K,)
            out[i] = ok_cls[self.token_class]
        return out

    def feasible_lengths(self, max_len: int) -> np.ndarray:
        """(max_len + 1,) bool: whether some sequence of exactly n tokens is accepted."""
        cur = np.zeros(self.table.shape[0], dtype=bool)
        cur[self.start] = True
        out = np.zeros(max_len + 1, dtype=bool)
        for n in range(max_len + 1):
            out[n] = bool((cur & self.accept).any())
            nxt = np.zeros_like(cur)
            nxt[self.table[np.nonzero(cur)[0]].reshape(-1)] = True
            nxt[self.dead] = False
            cur = nxt
        return out

    def complete(
        self, seq: Sequence[int | None], prefer: Sequence[int | None] | None = None
    ) -> list[int] | None:
        """Fill the open positions left to right with allowed tokens: ``prefer[i]`` when it is
        allowed there, else the smallest allowed id. None when no completion exists."""
        seq = list(seq)
        for i in range(len(seq)):
            if seq[i] is not None:
                continue
            allowed = self.allowed(seq)
            if allowed is None:
                return None
            ok = allowed[i]
            want = None if prefer is None else prefer[i]
            seq[i] = (
                int(want)
                if want is not None and 0 <= want < len(ok) and ok[want]
                else int(np.nonzero(ok)[0][0])
            )
        return [int(t) for t in seq]  # type: ignore[arg-type]


def cached_automaton(tokenizer: Any, key: Any, build: Any) -> TokenAutomaton:
    """``build()`` once per (tokenizer, key)."""
    try:
        store = _AUTOMATA.setdefault(tokenizer, {})
    except TypeError:
        return build()
    if key not in store:
        store[key] = build()
    return store[key]


def restrict_logits(sub: Tensor, allowed: Tensor) -> Tensor:
    """(N, V) logits with everything outside ``allowed`` (N, V) bool at ``-inf``.

    NaN logits count as very unlikely and +inf as very likely, and the best allowed logit is
    shifted to 0, so the argmax (with or without Gumbel noise) is an allowed token whatever
    the model returned.
    """
    x = torch.nan_to_num(sub.float(), nan=-1e30, posinf=1e30)
    x = x.masked_fill(~allowed, float("-inf"))
    m = x.amax(dim=-1, keepdim=True)
    x = torch.where(torch.isfinite(m), x - m, x)
    return x.to(sub.dtype)


class GapConstraint(CanvasConstraint):
    """One ``TokenAutomaton`` over spans of a canvas (one gap, in one or more rows).

    Every step, each open position of a span may only propose the tokens that keep its span
    completable given the tokens committed so far (``TokenAutomaton.allowed``). A span the
    committed tokens have already broken (possible only when several of its positions were
    committed in the same step) is re-masked and refilled afterwards (``fill_canvas``);
    until then its open positions may hold any token the automaton can use at all.
    """

    def __init__(
        self,
        automaton: TokenAutomaton,
        spans: Sequence[tuple[int, int, int]],
        *,
        mask_id: int,
        name: str = "gap",
    ) -> None:
        self.automaton = automaton
        self.spans = [tuple(int(v) for v in s) for s in spans]
        self.mask_id = int(mask_id)
        self.name = name

    def _seq(self, row: list[int], start: int, end: int) -> list[int | None]:
        return [None if t == self.mask_id else t for t in row[start:end]]

    def apply(self, logits: Tensor, tokens: Tensor) -> Tensor:
        V = logits.shape[-1]
        rows_cache: dict[int, list[int]] = {}
        usable: np.ndarray | None = None
        index_r: list[int] = []
        index_p: list[int] = []
        masks: list[np.ndarray] = []
        for r, s, e in self.spans:
            row = rows_cache.setdefault(r, tokens[r].tolist())
            seq = self._seq(row, s, e)
            if all(t is not None for t in seq):
                continue
            allowed = self.automaton.allowed(seq)
            for i, t in enumerate(seq):
                if t is not None:
                    continue
                m = np.zeros(V, dtype=bool)
                if allowed is None:  # broken span: it will be refilled, keep its tokens sane
                    usable = self.automaton.usable() if usable is None else usable
                    a = usable
                else:
                    a = allowed[i]
                n = min(V, len(a))
                m[:n] = a[:n]
                index_r.append(r)
                index_p.append(s + i)
                masks.append(m)
        if not masks:
            return logits
        ir = torch.tensor(index_r, dtype=torch.long, device=logits.device)
        ip = torch.tensor(index_p, dtype=torch.long, device=logits.device)
        allowed_t = torch.from_numpy(np.stack(masks)).to(logits.device)  # (N, V)
        return logits.index_put((ir, ip), restrict_logits(logits[ir, ip], allowed_t))

    def violations(self, tokens: Tensor) -> list[tuple[int, int, int]]:
        out = []
        rows_cache: dict[int, list[int]] = {}
        for r, s, e in self.spans:
            row = rows_cache.setdefault(r, tokens[r].tolist())
            seq = row[s:e]
            if self.mask_id in seq or not self.automaton.accepts(seq):
                out.append((r, s, e))
        return out
