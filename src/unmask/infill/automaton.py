"""Byte-level automata lifted to token ids, and the gap constraint built on them.

Inside:

- ``Vocab`` / ``vocab_of(tokenizer)``: every token's raw bytes as a padded matrix (cached).
- ``segment_ids``: the ids of a text that continues a text (no SentencePiece word start of
  its own), as templates lay their pieces out and ``accepts_text`` reads a text.
- ``TokenAutomaton``: a ``DFA`` over bytes run over whole tokens: ``table`` (S+1, K) gives
  the next state for each of K token classes (tokens that act alike share a class; the
  last state is dead). ``allowed`` computes, for a partly committed gap, which tokens each
  open position may hold so that *some* completion of the gap is accepted.
- ``TokenAutomaton.with_empty_tail``: the same language with at least n tokens, then any
  number of ``[EMPTY]`` fillers (variable-length gaps filled in one pass).
- ``GapConstraint``: a ``CanvasConstraint`` holding one automaton over spans of the canvas.
- ``quote_pattern``: a pattern as an error quotes it (a long one shortened).

Why an automaton over the whole gap: diffusion commits positions in any order, so whether
a token is acceptable at position i depends on the tokens already committed before *and
after* it. A forward pass (states reachable from the start given the committed prefix)
and a backward pass (states from which the committed suffix can still be completed) give
the exact set of tokens that keep the gap completable. Committing one position of a gap at
a time with these sets can never paint the gap into a corner; ``unmask.infill`` repairs the
rare gap broken by several positions committed in the same step.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import threading
import warnings
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unmask.canvas import CanvasConstraint
from unmask.errors import UserError
from unmask.files import CACHE_ENV, atomic_write_bytes, cache_dir  # noqa: F401 (CACHE_ENV)
from unmask.infill.dfa import CONTINUATION, Leads, dfa_sizes

MAX_STATES = 20000
"""Largest token automaton a constraint may compile to (states)."""
MAX_DFA_STATES = 2 * MAX_STATES
"""Most states a pattern's byte DFA may have (``dfa.dfa_states``, an estimate counted before the
engine builds it). On the patterns tried (byte vocabulary, 2026-12-07) the estimate is from
0.7x the engine's own count to 6x: under it on lazy or nested optional repetitions,
``(?:[a-z]*?x){0,6}`` 15 vs 21, ``.{0,300}`` 2,703 vs 3,009; over it on overlapping runs,
``\\w+( \\w+){0,30}`` 20,431 vs 9,853, ``(?:\\w{0,2}|[\\u00e0-\\u00ff]{0,3}){5}`` 85,745 vs
13,586; and under it where a class is read as more characters than it holds, which splits
fewer multi-byte characters (a script as any character: ``[\\p{Latin} '-]{1,20}`` 183 vs
649; ``dfa``'s module doc), so the automaton the engine built is counted too
(``check_built``, ``TokenAutomaton.from_transitions``). At the limit the engine builds in a
few seconds (``\\w{1,30}\\s\\w{1,30}``: 18,999 states, about a second)."""
BYTES_PER_MOVE = 140
"""Memory a (state, token) move of a pattern's automaton takes at a compile's peak: the
library hands the moves over as one Python dict, so it is the vocabulary times the
pattern's character positions that fills memory, not its states alone. Measured at 126,000
tokens (LLaDA's vocabulary, ``benchmarks/constraints.py``'s synthetic one): a
``{"type": "string", "maxLength": 128}`` value, about 31M moves, peaked at 4.4 GB in 42 s,
and an array of 5 strings of ``maxLength`` 50 at 4.3 GB; ``.{1000}``, about 126M moves
within every other limit, would take some 18 GB."""
AUTOMATON_MEMORY_ENV = "UNMASK_MAX_AUTOMATON_MB"
"""The most megabytes one automaton's compile may take (``automaton_memory_limit``)."""
AUTOMATON_MEMORY_SHARE = 0.75
"""The share of the memory available (``MemAvailable``, no more than a container's cgroup
limit leaves) a compile may take by default."""
AUTOMATON_MEMORY_FALLBACK_MB = 8192
"""The limit where the memory available cannot be read (no ``/proc/meminfo`` nor cgroup)."""
MAX_REQUEST_DFA_STATES = 2 * MAX_DFA_STATES
"""Most states the DFAs of one request's patterns may have together (``check_total``: each
distinct pattern's estimate, as for ``MAX_DFA_STATES``, summed): the per-pattern limit bounds
each compile, this one their number. A schema of 12 properties, each with its own
``pattern`` of about 19,000 states (under the per-pattern limit), took 150 s to compile, in
native code no timeout stops, and held the server's worker all that time."""
NEVER = 2**40
"""``distance_to_accept`` of a state from which no accepting state is reachable."""
MAX_REPEAT = 1000
"""Largest bound of a ``{m,n}`` quantifier: larger ones make automata too big to use."""
MAX_PATTERN_SIZE = 100_000
"""Most positions a pattern may expand to (``pattern_size``): the bound on compile work that
keeps one request from holding a worker for minutes (``a{1000}`` nested in ``{1000}`` is a
million positions although each quantifier is under ``MAX_REPEAT``)."""

NO_MATCH = "no sequence of this tokenizer's tokens matches it"
"""How ``from_regex`` ends its error for a pattern no token sequence spells."""

QUOTE_CHARS = 60
"""Most characters of a pattern an error message quotes (``quote_pattern``)."""


def quote_pattern(pattern: str, limit: int = QUOTE_CHARS) -> str:
    """``pattern`` as an error message quotes it: its ``repr``, or for a longer one its start
    and end around an ellipsis with its length (an error about a pattern of thousands of
    characters quoted all of it, twice: one line, but screens long)."""
    if len(pattern) <= limit:
        return repr(pattern)
    head = limit * 2 // 3
    tail = limit - head
    return f"{pattern[:head]!r}...{pattern[-tail:]!r} ({len(pattern)} characters)"


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
_AUTOMATA: weakref.WeakKeyDictionary[Any, OrderedDict[Any, TokenAutomaton]] = (
    weakref.WeakKeyDictionary())


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


def segment_ids(tokenizer: Any, text: str, *, first: bool) -> list[int]:
    """The ids of one text segment of a template. The ``first`` (the start of the text) is
    encoded as it is. A later one continues a text: a SentencePiece-style tokenizer marks the
    start of every text it encodes with a word start (``"sat"`` as ``"▁sat"``, a space the
    template does not have, which the model read), so where its ids do not stand for exactly
    its bytes it is encoded after a line break whose ids are then dropped (as ``transformers``
    encodes the pieces of a chat, ``unmask.chat``), when that gives its bytes exactly."""
    ids = list(tokenizer.encode(text))
    if first or not text:
        return ids
    vocab = vocab_of(tokenizer)
    want = text.encode("utf-8")
    if b"".join(vocab.token_bytes(t) for t in ids) == want:
        return ids
    newline = list(tokenizer.encode("\n"))
    after = list(tokenizer.encode("\n" + text))
    rest = after[len(newline) :]
    if newline and after[: len(newline)] == newline and rest and (
        b"".join(vocab.token_bytes(t) for t in rest) == want
    ):
        return rest
    return ids


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
    def from_regex(
        cls, pattern: str, vocab: Vocab, allowed: np.ndarray | None = None, *, what: str = "regex"
    ) -> TokenAutomaton:
        """The token automaton of ``pattern`` (outlines-core's syntax, matched in full).

        outlines-core compiles the regex to a byte DFA and walks every token's bytes through
        it (``outlines_core.Index``); its state × token map becomes our table. Tokens without
        bytes (special tokens) and tokens not in ``allowed`` ((V,) bool) lead to the dead
        state from everywhere. ``UserError`` (naming ``what``) for a regex the engine rejects,
        one too large to compile, or one no token sequence can spell.
        """
        check_size(pattern, what)
        _configured_memory()  # a bad setting is an error whether or not the map is cached
        path = _disk_path(pattern, vocab, allowed)
        cached = _disk_load(path, vocab.size)
        if cached is not None:
            return cached
        check_transitions(pattern, vocab, allowed, what)
        index = _index(pattern, vocab, what)
        check_built(index, what)
        moves = index.get_transitions()
        finals = set(index.get_final_states())
        # The sentinel token (id V + 1) leads to a final state exactly from the states where
        # the user's pattern is matched; the pattern starts after the start token (id V + 2)
        # (see ``_index``).
        accept = [q for q, m in moves.items() if m.get(vocab.size + 1) in finals]
        start = _pattern_start(moves, index.get_initial_state(), vocab, what)
        out = cls.from_transitions(moves, start, accept, vocab.size, allowed, what=what)
        _disk_save(path, out)
        return out

    @classmethod
    def from_transitions(
        cls,
        transitions: Mapping[int, Mapping[int, int]],
        start: int,
        finals: Iterable[int],
        vocab_size: int,
        allowed: np.ndarray | None = None,
        *,
        what: str = "regex",
    ) -> TokenAutomaton:
        """A ``TokenAutomaton`` from a state → {token id: next state} map (ids >= ``vocab_size``,
        such as outlines-core's end-of-sequence id, are dropped).

        Tokens that act alike from every state share a class: a token's class is found by
        hashing its column of next states (one random 64-bit weight per state), and every
        column is then checked against its class's, so a hash collision cannot merge tokens.
        """
        V = int(vocab_size)
        states = sorted(set(transitions) | {int(start)} | set(int(f) for f in finals))
        if len(states) > MAX_STATES:
            raise UserError(
                f"{what}: too large (its token automaton has {len(states)} states, "
                f"the limit is {MAX_STATES})"
            )
        S = len(states)
        dead = S
        number = {q: i for i, q in enumerate(states)}
        lut = np.full(max(states) + 2, dead, dtype=np.int64)  # library state -> ours
        lut[np.array(states, dtype=np.int64)] = np.arange(S)
        weights = np.random.default_rng(0).integers(1, 2**63, size=S, dtype=np.uint64)

        # Each state's moves once, as (token ids, next states) arrays: the library's map
        # holds S x (tokens with bytes) entries, a million for a 126k vocabulary, so it is
        # read with np.fromiter, never entry by entry.
        sparse: list[tuple[np.ndarray, np.ndarray]] = []
        for q in states:
            moves = transitions.get(q, {})
            toks = np.fromiter(moves.keys(), dtype=np.int64, count=len(moves))
            nxt = np.fromiter(moves.values(), dtype=np.int64, count=len(moves))
            keep = toks < V
            toks, nxt = toks[keep], lut[np.minimum(nxt[keep], len(lut) - 1)]
            if allowed is not None:
                ok = allowed[toks]
                toks, nxt = toks[ok], nxt[ok]
            sparse.append((toks, nxt))

        def row(i: int) -> np.ndarray:  # (V,) next state of every token from state i
            out = np.full(V, dead, dtype=np.int64)
            toks, nxt = sparse[i]
            out[toks] = nxt
            return out

        # signature[t] = sum_i weights[i] * row(i)[t] (mod 2^64), accumulated sparsely.
        with np.errstate(over="ignore"):
            signature = np.full(V, np.uint64(dead) * weights.sum(dtype=np.uint64), np.uint64)
            for i, (toks, nxt) in enumerate(sparse):
                delta = (nxt.astype(np.uint64) - np.uint64(dead)) * weights[i]
                signature[toks] += delta
        reps, token_class = np.unique(signature, return_index=True, return_inverse=True)[1:]
        token_class = token_class.reshape(-1).astype(np.int32)
        table = np.full((S + 1, len(reps)), dead, dtype=np.int32)  # (S+1, K)
        for i in range(S):
            full = row(i)
            table[i] = full[reps]
            if not np.array_equal(table[i][token_class], full):  # a hash collision
                raise RuntimeError("token classes collided; please report this")
        dead_cols = np.nonzero((table == dead).all(axis=0))[0]
        if len(dead_cols):
            dead_class = int(dead_cols[0])
        else:
            table = np.concatenate([table, np.full((S + 1, 1), dead, dtype=np.int32)], axis=1)
            dead_class = table.shape[1] - 1
        accept = np.zeros(S + 1, dtype=bool)
        accept[[number[int(f)] for f in finals]] = True
        return cls._minimal(table=table, token_class=token_class, accept=accept,
                            dead_class=dead_class, start=number[int(start)])

    @classmethod
    def _minimal(cls, *, table: np.ndarray, token_class: np.ndarray, accept: np.ndarray,
                 dead_class: int, start: int) -> TokenAutomaton:
        """The automaton with useless states (unreachable, or unable to reach an accepting
        one) merged into the dead state and equivalent states merged (Moore's partition
        refinement): fewer states make every step's forward/backward passes cheaper."""
        raw = cls(table=table, token_class=token_class, accept=accept, dead_class=dead_class,
                  start=start)
        dead = raw.dead
        useful = raw._useful() & raw._reachable()
        if not useful[start]:
            return raw
        t = np.where(useful[table], table, dead)  # (S+1, K)
        t[~useful] = dead
        part = np.unique(np.where(useful, accept.astype(np.int64), 2), return_inverse=True)[1]
        part = part.reshape(-1)
        n = int(part.max()) + 1
        weights = np.random.default_rng(0).integers(1, 2**62, t.shape[1] + 1, dtype=np.int64)
        while True:
            sig = np.concatenate([part[:, None], part[t]], axis=1)
            new = _row_classes(sig, weights)
            if int(new.max()) + 1 == n:
                break
            part, n = new, int(new.max()) + 1
        # Live classes numbered first (start first), the dead class last.
        order = list(dict.fromkeys([int(part[start])] + part[useful].tolist()))
        rank = np.full(n, len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        part = rank[part]
        reps = np.array([int(np.nonzero(part == c)[0][0]) for c in range(len(order))])
        live = part[t[reps]]  # (S', K)
        out = np.concatenate([live, np.full((1, t.shape[1]), len(order))]).astype(np.int32)
        return cls(table=out, token_class=token_class,
                   accept=np.concatenate([accept[reps], [False]]), dead_class=dead_class,
                   start=0)

    def intersect(self, other: TokenAutomaton, *, what: str | None = None) -> TokenAutomaton:
        """Token sequences both automata accept (the product automaton, reachable part).

        Two token automata over the same vocabulary read the same tokens, so their product is
        the automaton of the intersection of their byte languages (as spelt by tokens).
        ``what`` names the constraint in the ``UserError`` for a product over ``MAX_STATES``
        (a form's ``<regex:(a|b)*a(a|b){12}>`` under its 16-character bound said only
        "constraint too large", naming no hole).
        """
        if other.vocab_size != self.vocab_size:
            raise ValueError("automata over different vocabularies")
        pairs, joint = np.unique(
            np.stack([self.token_class, other.token_class], axis=1), axis=0, return_inverse=True
        )  # (K, 2) class pairs; (V,) joint class of each token
        A = self.table[:, pairs[:, 0]].astype(np.int64)  # (Sa+1, K)
        B = other.table[:, pairs[:, 1]].astype(np.int64)  # (Sb+1, K)
        width = int(other.table.shape[0])  # a pair (a, b) is the code a * width + b
        # Breadth first, a level of pairs at a time in numpy (a Python loop over every pair
        # and class took 0.7 s for a 19,000-state value and its JSON string bound): ``codes``
        # holds each product state's code by number, ``known`` / ``known_ids`` the same sorted
        codes = np.array([self.start * width + other.start], dtype=np.int64)
        known, known_ids = codes.copy(), np.zeros(1, dtype=np.int64)
        rows: list[np.ndarray] = []
        lo = 0
        while lo < len(codes):
            hi = len(codes)
            a, b = np.divmod(codes[lo:hi], width)
            na, nb = A[a], B[b]  # (F, K) each
            live = (na != self.dead) & (nb != other.dead)
            nxt = na * width + nb  # (F, K)
            found = np.unique(nxt[live])
            at = np.minimum(np.searchsorted(known, found), len(known) - 1)
            new = found[known[at] != found]
            if len(codes) + len(new) > MAX_STATES:
                if what is None:  # (a length bound: unmask.infill.ordered)
                    raise UserError(f"constraint too large (its token automaton has over "
                                    f"{MAX_STATES} states)")
                # which of the combined constraints multiplies the states is not known here:
                # the advice names both causes (a repetition's counted-runs advice misled
                # for a long list of alternatives)
                raise UserError(f"{what}: too large (its token automaton has over {MAX_STATES} "
                                "states, the limit, once its constraints are combined); "
                                "simplify it: fewer or shorter alternatives, or shorter "
                                "counted runs")
            ids = np.arange(len(codes), len(codes) + len(new), dtype=np.int64)
            codes = np.concatenate([codes, new])
            merged = np.concatenate([known, new])
            order = np.argsort(merged, kind="stable")
            known, known_ids = merged[order], np.concatenate([known_ids, ids])[order]
            row = np.full(nxt.shape, -1, dtype=np.int64)
            row[live] = known_ids[np.searchsorted(known, nxt[live])]
            rows.append(row)
            lo = hi
        S = len(codes)
        table = np.concatenate(rows)  # (S, K)
        table = np.concatenate([np.where(table < 0, S, table), np.full((1, len(pairs)), S)])
        table = np.concatenate([table, np.full((S + 1, 1), S)], axis=1).astype(np.int32)
        accept = np.concatenate([self.accept[codes // width] & other.accept[codes % width],
                                 [False]])
        return TokenAutomaton(table=table, token_class=joint.reshape(-1).astype(np.int32),
                              accept=accept, dead_class=len(pairs), start=0)

    @classmethod
    def at_least(cls, n: int, vocab_size: int) -> TokenAutomaton:
        """Any sequence of at least ``n`` tokens (a length bound to ``intersect`` with)."""
        n = max(int(n), 0)
        table = np.full((n + 2, 2), n + 1, dtype=np.int32)  # class 0: any token; 1: dead
        table[: n + 1, 0] = np.minimum(np.arange(n + 1) + 1, n)
        accept = np.zeros(n + 2, dtype=bool)
        accept[n] = True
        return cls(table=table, token_class=np.zeros(vocab_size, dtype=np.int32),
                   accept=accept, dead_class=1)

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
        """(max_len + 1,) bool: whether some sequence of exactly n tokens is accepted.

        The states reachable in n tokens follow from those in n - 1 alone, so once a set comes
        back the answers repeat with its period: the rest is copied, not stepped (a gap of up
        to 100,000 tokens with a regex took 14 s of CPU before the context check refused it).
        """
        cur = np.zeros(self.table.shape[0], dtype=bool)
        cur[self.start] = True
        out = np.zeros(max_len + 1, dtype=bool)
        seen: dict[bytes, int] = {}
        for n in range(max_len + 1):
            key = np.packbits(cur).tobytes()
            if key in seen:  # the sets from n on are those from seen[key] on, again
                m = seen[key]
                out[n:] = out[m + (np.arange(n, max_len + 1) - m) % (n - m)]
                return out
            seen[key] = n
            out[n] = bool((cur & self.accept).any())
            nxt = np.zeros_like(cur)
            nxt[self.table[np.nonzero(cur)[0]].reshape(-1)] = True
            nxt[self.dead] = False
            cur = nxt
        return out

    def _useful(self) -> np.ndarray:
        """(S+1,) bool: states from which an accepting state can be reached."""
        useful = self.accept.copy()
        while True:
            nxt = useful | useful[self.table].any(axis=1)
            if (nxt == useful).all():
                return useful
            useful = nxt

    def _reachable(self) -> np.ndarray:
        """(S+1,) bool: states reachable from the start."""
        seen = np.zeros(self.table.shape[0], dtype=bool)
        seen[self.start] = True
        cur = seen.copy()
        while cur.any():
            nxt = np.zeros_like(seen)
            nxt[self.table[np.nonzero(cur)[0]].reshape(-1)] = True
            cur = nxt & ~seen
            seen |= nxt
        return seen

    def distance_to_accept(self) -> np.ndarray:
        """(S+1,) int64: the fewest tokens that lead from each state to an accepting one
        (``NEVER`` where none does, the dead state included); computed once per automaton.

        Left-to-right decoding (``unmask.infill.ordered``) allows a token only when its next
        state is at most the remaining budget away from acceptance, so a bounded gap never
        runs out of room."""
        cached = getattr(self, "_distance", None)
        if cached is not None:
            return cached
        dist = np.where(self.accept, 0, NEVER).astype(np.int64)
        while True:
            step = np.minimum(dist[self.table].min(axis=1) + 1, NEVER)  # (S+1,) via one token
            nxt = np.minimum(dist, step)
            nxt[self.dead] = NEVER
            if (nxt == dist).all():
                break
            dist = nxt
        self._distance = dist
        return dist

    def stretches(self) -> bool:
        """Whether every accepted sequence (reachable from the start) goes on, one token more,
        to another accepted one: then a state ``d`` tokens from acceptance reaches it in any
        number of tokens from ``d`` on, so a least length is a counter beside the automaton
        (``unmask.infill.ordered.FormGuide``), not a product with ``at_least`` (about ten
        states a token for the UTF-8 automaton: over ``MAX_STATES`` past 2,000 tokens)."""
        states = np.nonzero(self.accept & self._reachable())[0]
        return bool(self.accept[self.table[states]].any(axis=1).all())

    def max_tokens(self) -> int | None:
        """Tokens in the longest accepted sequence; None if unbounded (or nothing accepted).

        With single-byte tokens for every byte (byte-level vocabularies) this is the longest
        member of the language in bytes."""
        useful = self._useful() & self._reachable()
        if not useful[self.start]:
            return None
        # the graph of useful states (every one reachable and completable): a cycle there is
        # an unbounded language; else the longest path, in reverse topological order. Once
        # over the table (it iterated S+1 times over it to find a cycle: minutes for a
        # string of at least 1,000 characters)
        states = np.nonzero(useful)[0].tolist()
        succ = {s: [t for t in np.unique(self.table[s]).tolist() if useful[t]] for s in states}
        indegree = dict.fromkeys(states, 0)
        for s in states:
            for t in succ[s]:
                indegree[t] += 1
        order = [s for s in states if indegree[s] == 0]
        for s in order:  # Kahn: grows while it runs
            for t in succ[s]:
                indegree[t] -= 1
                if indegree[t] == 0:
                    order.append(t)
        if len(order) < len(states):
            return None  # a cycle: unbounded
        best: dict[int, int] = {}
        for s in reversed(order):
            longest = max((best[t] + 1 for t in succ[s]), default=-1)
            best[s] = max(longest, 0 if self.accept[s] else -1)
        return best[self.start]

    def min_tokens(self) -> int | None:
        """Tokens in the shortest accepted sequence; None if nothing is accepted."""
        cur = np.zeros(self.table.shape[0], dtype=bool)
        cur[self.start] = True
        seen = cur.copy()
        for n in range(self.table.shape[0] + 1):
            if (cur & self.accept).any():
                return n
            nxt = np.zeros_like(cur)
            nxt[self.table[np.nonzero(cur)[0]].reshape(-1)] = True
            nxt[self.dead] = False
            cur = nxt & ~seen
            seen |= nxt
            if not cur.any():
                return None
        return None

    def accepts_text(self, text: str, tokenizer: Any) -> bool:
        """Whether ``text`` (as the tokenizer spells it inside a text, ``segment_ids``) is
        accepted. Encoded on its own, a SentencePiece-style tokenizer gave it a word start
        (``"dog"`` as ``"▁dog"``: the bytes ``" dog"``), and a choice ``dog`` written ``" dog"``
        after a space was not seen to hold the template's space: it was put back, two spaces
        (``"the  dog."``)."""
        return self.accepts(segment_ids(tokenizer, text, first=False))

    def complete(
        self,
        seq: Sequence[int | None],
        prefer: Sequence[int | None] | None = None,
        scores: np.ndarray | None = None,
    ) -> list[int] | None:
        """Fill the open positions left to right with allowed tokens: the best of ``scores[i]``
        ((len(seq), V); NaN counts as very unlikely) among the allowed ids when given, else
        ``prefer[i]`` when it is allowed there, else the smallest allowed id. None when no
        completion exists. Linear in ``len(seq)``: one backward pass serves the whole walk
        (the positions right of the one being filled do not change)."""
        seq = list(seq)
        cls_seq = self.classes_of(seq)
        _, bwd = self._passes(cls_seq)
        if not bwd[0, self.start] and -1 in cls_seq:
            return None
        q = self.start  # the one state the committed tokens left of i lead to
        for i, c in enumerate(cls_seq):
            if c < 0:
                ok = bwd[i + 1][self.table[q]][self.token_class]  # (V,)
                ids = np.nonzero(ok)[0]  # allowed at i (never none: q keeps it completable)
                want = None if prefer is None else prefer[i]
                if scores is not None and ids[0] < len(scores[i]):
                    ids = ids[ids < len(scores[i])]  # a model's scores may be narrower
                    best = scores[i][ids]
                    seq[i] = int(ids[np.where(np.isnan(best), -np.inf, best).argmax()])
                elif want is not None and 0 <= want < len(ok) and ok[want]:
                    seq[i] = int(want)
                else:
                    seq[i] = int(ids[0])
                c = int(self.token_class[seq[i]])
            q = int(self.table[q, c])
        return [int(t) for t in seq]  # type: ignore[arg-type]


_OUTLINES_VOCABS: weakref.WeakKeyDictionary[Vocab, Any] = weakref.WeakKeyDictionary()


def outlines_vocabulary(vocab: Vocab) -> Any:
    """The ``outlines_core.Vocabulary`` of ``vocab``: every token id with bytes, keyed by its
    exact bytes (byte-level BPE pieces are raw bytes here, never decoded strings), so the
    library walks the same bytes our tokenizer writes. Special tokens (no bytes) are left
    out; the end-of-sequence id handed to the library is ``vocab.size``, outside the
    vocabulary, and dropped from its transitions (a gap ends where its span ends)."""
    try:
        return _OUTLINES_VOCABS[vocab]
    except KeyError:
        pass
    from outlines_core import Vocabulary

    ids: dict[bytes, list[int]] = {}
    for i in np.nonzero(vocab.lengths > 0)[0].tolist():
        ids.setdefault(vocab.token_bytes(i), []).append(i)
    ids[SENTINEL.encode("utf-8")] = [vocab.size + 1]
    ids[START.encode("utf-8")] = [vocab.size + 2]
    out = Vocabulary(vocab.size, ids)
    _OUTLINES_VOCABS[vocab] = out
    return out


def _row_classes(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R,) class of each row of ``rows`` (R, C) int: equal rows, equal classes, exactly. Rows
    are told apart by a hash (a dot product with fixed random weights, wrapping), then
    checked against their class's first row; only if two rows share a hash and differ does
    it sort the rows themselves. ``np.unique(axis=0)`` sorts rows as opaque bytes, slowly:
    the refinement of a string of 1,000+ characters ran it 1,000 times, minutes in all."""
    keys = (rows.astype(np.int64) * weights).sum(axis=1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if (rows == rows[first[inverse]]).all():
        return inverse
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


SENTINEL = "\U0010ffff"
"""A noncharacter appended to every pattern, with a token of its own (``_index``)."""
START = "\U0010fffe"
"""A second noncharacter put before every pattern, with a token of its own (``_index``)."""


def top_level_branches(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups and character classes, not
    escaped): ``^a$|^(b|c)$`` -> ``["^a$", "^(b|c)$"]``."""
    branches, depth, start, i = [], 0, 0, 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1  # a "]" first in the class (after an optional "^") is a member
            if pattern[i:i + 1] == "^":
                i += 1
            if pattern[i:i + 1] == "]":
                i += 1
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*branches, pattern[start:]]


_FLAG_PREFIX = re.compile(r"\(\?[A-Za-z-]*\)")
"""A pattern's leading inline flag group (``(?i)``, ``(?s-m)``), which an anchor may follow."""


def anchors(pattern: str) -> tuple[str, bool, bool]:
    """``pattern`` (one alternative) without an anchor at its start (``^``, ``\\A``, after a
    leading flag group as in ``(?i)^abc``) or its end (``$``, ``\\z``, Python's ``\\Z``, not
    escaped), and whether it had each."""
    m = _FLAG_PREFIX.match(pattern)
    flags, pattern = (m.group(0), pattern[m.end():]) if m else ("", pattern)
    start = pattern.startswith(("^", "\\A"))
    if start:
        pattern = pattern[1 if pattern[0] == "^" else 2:]
    end = False
    anchor = next((a for a in ("$", "\\z", "\\Z") if pattern.endswith(a)), None)
    if anchor is not None:
        body = pattern[:-len(anchor)]
        if (len(body) - len(body.rstrip("\\"))) % 2 == 0:  # not escaped by an odd run of \\
            pattern, end = body, True
    return flags + pattern, start, end


def whole_pattern(pattern: str) -> str:
    """``pattern`` without its anchors at the ends (``anchors``: a constraint always matches
    the whole text; the engine refuses anchors there, as it is wrapped). Applied where a user's
    pattern enters (a gap's regex, a ``<regex:...>`` hole, ``guided_regex``), before it is
    wrapped in a larger pattern, where an anchor would no longer sit at an end. An anchor
    after a leading flag group (``(?i)^abc$``), ``\\A`` and ``\\z`` (the engine's) and ``\\Z``
    (Python's), and anchors inside a group that is the whole pattern (``(^abc$)``) were kept,
    and such a pattern was refused as matching no token sequence. ``(?x)`` comments are left
    out first (``uncommented``): a ``|`` in one splits nothing, and a comment at the end does
    not run over the group that wraps the alternatives.

    A loop over a stack of what is left to read, not recursion: a group nested 3,000 deep
    ended in a ``RecursionError`` traceback. Past ``_PEEL_DEPTH`` groups a part is kept as
    written (the engine refuses that nesting whatever is inside)."""
    text = uncommented(pattern)
    closes, bars = _structure(text)
    out: list[str] = []
    # what is left to write: text as it is, or (start, end, the group whose top-level "|"
    # split the text[start:end] (-1: the pattern's; None: it is one alternative), depth)
    todo: list[str | tuple[int, int, int | None, int]] = [(0, len(text), -1, 0)]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        lo, hi, group, depth = item
        if depth > _PEEL_DEPTH:
            out.append(text[lo:hi])
            continue
        splits = bars.get(group, []) if group is not None else []
        if splits:  # ``^a$|^b$``: each alternative's anchors are its own
            todo.append(")")
            ends = [*splits, hi]
            for k in reversed(range(len(ends))):  # pushed last first: read first first
                start = splits[k - 1] + 1 if k else lo
                todo.extend([(start, ends[k], None, depth + 1)] + (["|"] if k else []))
            todo.append("(?:")
            continue
        part = text[lo:hi]
        core, start, _ = anchors(part)
        if _FLAG_PREFIX.match(part):  # ``(?i)^abc$``: what follows a flag group is kept
            out.append(core)
            continue
        lo += (1 if part[0] == "^" else 2) if start else 0
        hi = lo + len(core)
        opened = _GROUP_OPEN.match(text, lo, hi)
        if opened and closes.get(lo) == hi - 1:  # ``(^abc$)``, ``(?:^a|^b)``
            todo.extend([")", (opened.end(), hi - 1, lo, depth + 1), opened.group(0)])
        else:
            out.append(core)
    return "".join(out)


def _structure(pattern: str) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Where each group of ``pattern`` opening at ``i`` closes, and where the ``|`` directly
    inside it stand (-1: those outside every group), in one reading (``_lexed``)."""
    closes: dict[int, int] = {}
    bars: dict[int, list[int]] = {}
    opens: list[int] = []
    i = 0
    for text, _ in _lexed(pattern):
        if text == "(" or (text[:2] == "(?" and text.endswith(":")):
            opens.append(i)
        elif text == ")" and opens:
            closes[opens.pop()] = i
        elif text == "|":
            bars.setdefault(opens[-1] if opens else -1, []).append(i)
        i += len(text)
    return closes, bars


_PEEL_DEPTH = 256
"""How many groups deep ``whole_pattern`` looks: past the engine's limit (it refuses groups
nested over 248 deep inside unmask's wrapper), so no pattern it compiles is cut short."""


_GROUP_OPEN = re.compile(r"\((?!\?)|\(\?(?:[A-Za-z-]*:|P?<[A-Za-z_][A-Za-z0-9_]*>)")
"""A group's opening that holds what follows as it is: ``(``, ``(?:``, ``(?i:``, ``(?P<n>``
(not a lookaround)."""


_MARKS = r"\x{10FFFE}\x{10FFFF}"
"""``START`` and ``SENTINEL`` as the engine's escapes."""
_DOT = {  # ``.`` under the flags that change it: (s, R) -> the same class without the marks
    (False, False): r"[^\n" + _MARKS + "]",
    (False, True): r"[^\r\n" + _MARKS + "]",
    (True, False): "[^" + _MARKS + "]",
    (True, True): "[^" + _MARKS + "]",
}
_HEX_ESCAPE = re.compile(
    r"\\(?:x\{([0-9A-Fa-f]+)\}|u\{([0-9A-Fa-f]+)\}|U\{([0-9A-Fa-f]+)\}|"
    r"x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))"
)
_BRACED_ESCAPE = re.compile(
    r"\\[pPxuU]\{[^}]*\}|\\x[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|"
    r"\\U[0-9A-Fa-f]{8}|\\[pP].|\\.",
    re.DOTALL,
)
"""One escape: braced or fixed-width hex, a one-letter Unicode class, any other character."""
_FLAGS = re.compile(r"\(\?([A-Za-z-]*)([:)])")
_POSIX_CLASS = re.compile(r"\[:\^?[A-Za-z]+:\]")


def _class_end(pattern: str, i: int) -> int:
    """Index just past the bracketed class opening at ``pattern[i]`` (``[``), the engine's
    syntax: nested classes, set operations, POSIX classes, escapes, and a ``]`` right after
    ``[`` or ``[^`` taken literally; ``len(pattern)`` when the class never closes. A loop
    with a depth count, not recursion: any nesting depth a user writes is read."""
    n = len(pattern)
    j, depth, opening = i, 0, True
    while j < n:
        if opening:  # pattern[j] is the "[" of a class
            j, depth, opening = j + 1, depth + 1, False
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):
                j += 1
            continue
        c = pattern[j]
        if c == "\\":
            m = _BRACED_ESCAPE.match(pattern, j)
            j = m.end() if m else n
        elif c == "[":
            m = _POSIX_CLASS.match(pattern, j)
            if m:
                j = m.end()
            else:
                opening = True
        elif c == "]":
            j, depth = j + 1, depth - 1
            if depth == 0:
                return j
        else:
            j += 1
    return n


def _lexed(pattern: str) -> Iterator[tuple[str, Mapping[str, bool]]]:
    """``pattern`` in the engine's syntax cut into the pieces ``guard_pattern`` and
    ``uncommented`` read, each with the flags in force where it stands (``s``, ``R``, ``u``,
    ``x``, ``m``): an escape (``\\x{..}``, ``\\pL``, ``\\.``), a bracketed class, a group's
    opening or a flag group (``(?i)``, ``(?s:``), ``)``, a ``#`` comment under ``x`` (to the
    end of its line, the newline not included), and any other single character."""
    flags = {"s": False, "R": False, "u": True, "x": False, "m": False}
    stack: list[dict[str, bool]] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            m = _BRACED_ESCAPE.match(pattern, i)
            text = m.group(0) if m else c
        elif c == "[":
            text = pattern[i:_class_end(pattern, i)]
        elif c == "(":
            m = _FLAGS.match(pattern, i)
            text = m.group(0) if m is not None else c
        elif c == "#" and flags["x"]:
            end = pattern.find("\n", i)
            text = pattern[i:n if end < 0 else end]
        else:
            text = c
        yield text, flags
        i += len(text)
        if c == "(":
            new = dict(flags)
            if m is not None:
                on = True
                for f in m.group(1):
                    if f == "-":
                        on = False
                    elif f in new:
                        new[f] = on
            if m is None or m.group(2) == ":":  # a group: its flags end with it
                stack.append(flags)
            flags = new  # (?flags): the rest of this group
        elif c == ")":
            flags = stack.pop() if stack else flags


def uncommented(pattern: str) -> str:
    """``pattern`` without what ``(?x)`` makes it ignore: ``#`` comments and whitespace
    (outside classes, not escaped). A trailing comment ran over the ``)`` unmask wraps a
    pattern in (``(?x)a|b # c`` was refused as "error building NFA"), a ``|`` in one was read
    as splitting alternatives, and a space kept an anchor from the end (``(?x) ^ab $``)."""
    if "x" not in pattern:  # no (?x)
        return pattern
    return "".join(text for text, flags in _lexed(pattern)
                   if not (flags["x"] and (text[0] == "#" or text.isspace())))


def guard_pattern(pattern: str, what: str = "regex") -> str:
    """``pattern`` with ``.`` and every class that could match ``START`` or ``SENTINEL``
    rewritten to leave those two out: the same language over every text without them.

    Why: a match in the engine's unanchored DFA may begin at any character, and ``_index``
    makes ``START`` the only one a match of ``START(?:pattern)`` begins with. A class that
    also matches ``START`` brings the blow-up back: after every character of a counted run
    (``[^,]{1,30}``, ``.{1,25}``) a new match could have begun, so the DFA tracks a set of
    match starts, 2^n of them (``.{1,16}`` took 11 s to compile, each further repeat
    doubling it). Read by a small tokenizer of the engine's syntax (``_lexed``; Python's
    parser does not know its nested classes, set operations or ``\\x{..}`` escapes): a
    bracketed class ``C`` becomes ``[C--[marks]]`` (class difference), ``\\D``, ``\\W``,
    ``\\S``, ``\\p..`` and ``\\P..`` likewise, ``.`` a negated class under the ``s`` and ``R``
    flags in force; escaped dots, ``[.]`` and literals are kept, ``(?x)`` comments left out.
    Byte mode (``(?-u)``) is left as written.

    ``UserError`` for a pattern that spells ``START`` or ``SENTINEL`` outside a class (it
    could never match a text). An anchor left inside the pattern once ``whole_pattern`` took
    those at its ends is kept: the engine reads it as never holding (``(?:^a|b)c`` matches
    ``bc`` alone; docs/infill.md). Refusing every such anchor refused patterns that compile
    right (``(^)*a``, ``\\w+(\\s|$)\\d``), and deciding which lose a text took Python's
    backtracking matcher, which could hang (2026-12-07, review rm8).
    """
    out: list[str] = []
    for text, flags in _lexed(pattern):
        if text[0] == "\\":
            h = _HEX_ESCAPE.fullmatch(text)
            if h is not None and int(next(g for g in h.groups() if g), 16) in (0x10FFFE, 0x10FFFF):
                raise _reserved(what)
            if flags["u"] and text[1:2] in ("D", "W", "S", "p", "P"):
                text = f"[{text}--[{_MARKS}]]"
        elif text[0] == "[":
            if flags["u"] and text.endswith("]"):
                text = f"[{text}--[{_MARKS}]]"
        elif text == ".":
            text = _DOT[flags["s"], flags["R"]] if flags["u"] else text
        elif flags["x"] and text[0] == "#":
            continue
        elif text in (START, SENTINEL):
            raise _reserved(what)
        out.append(text)
    return "".join(out)


def _reserved(what: str) -> UserError:
    return UserError(f"{what}: it names U+10FFFE or U+10FFFF, which unmask reserves "
                     "(they mark where every constraint starts and ends)")


_QUANTIFIER = re.compile(r"(?<!\\)\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


_ENGINE_ESCAPES = re.compile(r"\\[pP](?:\{[^}]*\}|[A-Za-z])|\\[ux]\{[0-9A-Fa-f]+\}")
"""Escapes the engine reads and Python does not (``\\p{L}``, ``\\u{e9}``): one position each."""


def pattern_size(pattern: str) -> int:
    """Positions (characters and classes) ``pattern`` spells once every counted repetition is
    written out (``(?:ab){3}`` is 6): the size of the automaton the engine starts from, known
    before it is built. Read with Python's parser, which agrees with the engine on the
    syntax that matters here (the engine's own escapes count one position); the pattern's
    length where Python cannot parse it."""
    import re._constants as c
    import re._parser as parser

    def size(items: Any) -> int:
        total = 0
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                lo, hi, sub = av
                total += size(sub) * max(1, lo if hi == c.MAXREPEAT else hi)
            elif op in (c.SUBPATTERN, c.ATOMIC_GROUP):
                total += size(av[-1])
            elif op == c.BRANCH:
                total += sum(size(b) for b in av[1])
            elif op != c.AT:
                total += 1
        return total

    try:
        with warnings.catch_warnings():  # Python's notes on the engine's syntax (``[a&&b]``)
            warnings.simplefilter("ignore")
            return size(parser.parse(_ENGINE_ESCAPES.sub("x", pattern)))
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return len(pattern)


def check_size(pattern: str, what: str = "regex") -> None:
    """``UserError`` for a bounded quantifier over ``MAX_REPEAT`` (``a{100000}``), a pattern
    that expands to over ``MAX_PATTERN_SIZE`` positions (``pattern_size``), or one whose DFA
    has over ``MAX_DFA_STATES`` states (``dfa.dfa_states``, estimated at the byte level before
    the engine builds it, its own work bounded: ``.*a.{30}`` has 2^31 and held the worker for
    good, no timeout can stop the engine): its automaton would take minutes to build and be
    too large to use A pattern the estimate cannot read that the engine reads is refused
    too (``_unbounded``)."""
    for m in _QUANTIFIER.finditer(_BRACED_ESCAPE.sub("e", pattern)):  # not ``\x{10000}``
        bound = max(int(m.group(1)), int(m.group(2) or 0))
        if bound > MAX_REPEAT:
            raise UserError(f"{what}: too large (quantifier {quote_pattern(m.group(0))} over "
                            f"{MAX_REPEAT})")
    n = pattern_size(pattern)
    if n > MAX_PATTERN_SIZE:
        raise UserError(
            f"{what}: too large (it expands to {n} characters and classes, the limit is "
            f"{MAX_PATTERN_SIZE}); shorten it or lower its repetition counts"
        )
    states = _estimated_states(pattern)
    if states is None:
        _unbounded(pattern, what)
    elif states > MAX_DFA_STATES:
        narrow = ascii_classes(pattern)
        hint = narrow is not None and narrow != pattern and \
            (_estimated_states(narrow) or 0) <= MAX_DFA_STATES
        once = _unrepeated(pattern)
        if once == pattern or (_estimated_states(once) or 0) > MAX_DFA_STATES:
            # too large with each repeated part once: its alternatives (a <choice:...> of
            # 5,000 words), which the advice about repetitions did not fit
            why = "; list fewer or shorter alternatives"
        else:
            why = (": a repetition that overlaps what follows it, as in '.*a.{30}', multiplies "
                   "them); make " + ("its counted runs shorter or distinct" if any(
                       t == "{" for t, _ in _lexed(pattern)) else
                       "what follows each repetition shorter or distinct from it"))
        raise UserError(
            f"{what}: too large (its automaton has over {MAX_DFA_STATES} states, the limit"
            + (")" if why.startswith(";") else "") + why
            + (f"; with ASCII classes, {quote_pattern(narrow)}, it fits (a Unicode class "
               "such as \\w, \\s or '.' counts every byte of a multi-byte character)"
               if hint else "")
        )


def _unrepeated(pattern: str) -> str:
    """``pattern`` with its quantifiers (``*``, ``+``, ``?``, ``{m,n}``, lazy or not) left
    out, each repeated part once: what is left of an automaton too large without them is its
    alternatives (``check_size``'s advice)."""
    pieces = [t for t, _ in _lexed(pattern)]
    out: list[str] = []
    i = 0
    while i < len(pieces):
        counted = _QUANTIFIER.match("".join(pieces[i:i + 24])) if pieces[i] == "{" else None
        if pieces[i] in ("*", "+", "?") or counted:
            i += len(counted.group(0)) if counted else 1
        else:
            out.append(pieces[i])
            i += 1
    return "".join(out)


def check_total(patterns: Iterable[tuple[str, str]], what: str,
                limit: int = MAX_REQUEST_DFA_STATES) -> None:
    """``UserError`` when the estimated DFA states of ``patterns`` ((where, pattern) pairs:
    one request's languages, in the order they compile) sum to over ``limit``: each distinct
    pattern counted once, as the automaton cache compiles it once, at ``dfa.dfa_states``'
    estimate (one over ``MAX_DFA_STATES`` is left to its own check; one not estimated that
    the engine reads is refused, ``_unbounded``: it counted as none, a named group let any
    pattern through). The message names the limit and where the patterns stop fitting in it.
    Run before any of them compiles; it stops counting at the first pattern past the limit."""
    seen: set[str] = set()
    total, fit = 0, ""
    for where, pattern in patterns:
        if pattern in seen:
            continue
        seen.add(pattern)
        states = _estimated_states(pattern)
        if states is None:
            _unbounded(pattern, f"{what}: {where}")
        total += states if states is not None and states <= MAX_DFA_STATES else 0
        if total > limit:
            kept = f"the patterns before {where} fit in it" if fit else "none fits in it"
            raise UserError(
                f"{what}: too large in all (its patterns have over {limit} automaton states "
                f"together, the limit per request; each may have {MAX_DFA_STATES}): {kept}; "
                "use fewer patterns or shorter counted runs"
            )
        fit = where


def _unbounded(pattern: str, what: str) -> None:
    """``UserError`` for a pattern ``dfa.dfa_states`` does not count (None) that the engine
    reads: its automaton could be of any size (``(?<n>x).*a.{17}`` took 39 s of the engine),
    so it is refused. A pattern the engine rejects (lookaround, a syntax error) is left to
    the engine's own error, which it gives before it builds any automaton."""
    if _engine_reads(pattern):
        raise UserError(
            f"{what}: its size cannot be bounded (unmask's estimate of its automaton does not "
            "read its syntax); write it with common constructs (groups (?:...), classes "
            "without set operations)"
        )


@functools.lru_cache(maxsize=512)
def _estimated_sizes(pattern: str) -> tuple[int, Leads] | None:
    """``dfa_sizes`` at ``MAX_DFA_STATES``, once per pattern: ``check_size`` runs on every
    request that names it (before the automaton's own cache is read) and again in
    ``check_syntax`` / ``check_regex``, and a count costs up to a quarter of a second."""
    return dfa_sizes(pattern, MAX_DFA_STATES)


def _estimated_states(pattern: str) -> int | None:
    """The estimated states of ``pattern``'s DFA (``_estimated_sizes``)."""
    sizes = _estimated_sizes(pattern)
    return None if sizes is None else sizes[0]


def estimated_moves(sizes: tuple[int, Leads], vocab: Vocab, keep: np.ndarray
                    ) -> tuple[int, int]:
    """(about how many moves, states between characters) of an automaton of ``sizes``
    (``dfa.dfa_sizes``) over the tokens ``keep`` of ``vocab``: from a state between
    characters the tokens whose first byte can start the next one, from a state inside a
    character those whose first byte continues one (0x80-0xBF)."""
    firsts = np.bincount(vocab.matrix[keep, 0], minlength=256)  # tokens per first byte
    moves, positions = 0, 0
    for mask, count in sizes[1].items():
        bits = np.array([(mask >> b) & 1 for b in range(256)], dtype=bool)
        moves += count * int(firsts[bits].sum())
        positions += count if mask != CONTINUATION else 0
    return moves, positions


def _available_memory() -> int | None:
    """The bytes of memory available (``MemAvailable``, no more than a container's cgroup limit
    leaves: ``quantize.free_bytes``), None unknown."""
    from unmask.quantize import free_bytes

    return free_bytes("cpu")


def _configured_memory() -> int | None:
    """``AUTOMATON_MEMORY_ENV`` in bytes, None unset; ``UserError`` for a bad value."""
    return _megabytes(AUTOMATON_MEMORY_ENV, "the most megabytes one automaton may take "
                      "to compile, a number > 0", positive=True)


def automaton_memory_limit() -> int:
    """The most bytes one automaton's compile may take: ``AUTOMATON_MEMORY_ENV`` (megabytes)
    where set, else ``AUTOMATON_MEMORY_SHARE`` of the memory available now (so the same
    pattern may pass on an idle machine and be refused under load), else
    ``AUTOMATON_MEMORY_FALLBACK_MB``. A value that is not a number > 0 is a ``UserError``."""
    given = _configured_memory()
    if given is not None:
        return given
    available = _available_memory()
    if available is None:
        return AUTOMATON_MEMORY_FALLBACK_MB << 20
    return int(available * AUTOMATON_MEMORY_SHARE)


def _in_megabytes(size: int) -> str:
    """``size`` bytes in megabytes, three figures under 100 (a limit of 1.37 MB was told as
    "the 1 MB limit"), or as bytes under one (not "0 MB")."""
    if size < 1 << 20:
        return f"{size} bytes"
    return f"{size >> 20} MB" if size >= 100 << 20 else f"{size / (1 << 20):.3g} MB"


def check_transitions(pattern: str, vocab: Vocab, allowed: np.ndarray | None = None,
                      what: str = "regex") -> None:
    """``UserError`` when ``pattern``'s automaton over ``vocab`` (its tokens with bytes, those
    in ``allowed``) may have more moves (``estimated_moves``: an estimate, 1-4x the
    library's count on the patterns tried, none under it since session 34 counts states in
    the engine's priority order) than fit in ``automaton_memory_limit`` at
    ``BYTES_PER_MOVE`` each: the moves the library
    builds as one Python dict before unmask turns them into its compact table. Checked
    before the engine builds anything (a cached automaton is not checked); what the engine
    builds is counted exactly before that dict (``check_built``)."""
    sizes = _estimated_sizes(pattern)
    if sizes is None:
        return
    keep = vocab.lengths > 0
    if allowed is not None:
        keep &= np.asarray(allowed, dtype=bool)
    moves, positions = estimated_moves(sizes, vocab, keep)
    limit = automaton_memory_limit()
    if moves * BYTES_PER_MOVE > limit:
        raise UserError(
            f"{what}: too large for this tokenizer (about {moves} token moves over its "
            f"{positions} character positions, some {_in_megabytes(moves * BYTES_PER_MOVE)} "
            f"to compile, over the {_in_megabytes(limit)} limit: ${AUTOMATON_MEMORY_ENV}, else "
            f"{AUTOMATON_MEMORY_SHARE:.0%} of the memory available); shorten its counted "
            "runs or maximum lengths"
        )


_WIDE_VARINT = re.compile(rb"\xfb..|\xfc....|\xfd........", re.DOTALL)
"""A multi-byte varint of the engine's serialized index (bincode: a first byte of 251, 252,
253 for 2, 4, 8 little-endian bytes; under 251 the value itself, one byte)."""


_VARINT_RUN = re.compile(rb"(?:[\x00-\xfa]|\xfb..|\xfc....|\xfd........){1,65536}",
                         re.DOTALL)
"""Up to 65,536 whole varints from where one begins (greedy, as nothing follows: a varint's
first byte tells its width, so a run never gives one back; no possessive ``{...}+``, which
Python reads from 3.11 on only)."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint of ``data`` at ``i`` and where the next begins."""
    width = {251: 2, 252: 4, 253: 8}.get(data[i], 0)
    if not width:
        return data[i], i + 1
    return int.from_bytes(data[i + 1:i + 1 + width], "little"), i + 1 + width


def index_moves(index: Any, at_most: int | None = None) -> int | None:
    """The (state, token) moves ``index`` (an ``outlines_core.Index``) holds, counted on its
    serialized form (some 6-8 bytes a move, a tenth of the Python dict ``get_transitions``
    builds): initial state, final states, then per state its id, its move count and a
    (token, state) pair per move, each a varint, and two varints more (the end token and
    the vocabulary's size). With ``at_most``, a count that cannot exceed it (by the size of
    that form) is not made: ``at_most`` itself is returned. None where the layout is not the
    one read here (another outlines-core)."""
    data = index.__reduce__()[1][0]
    if not isinstance(data, bytes):
        return None
    try:
        _, i = _varint(data, 0)  # the initial state
        finals, i = _varint(data, i)
        for _ in range(finals):
            _, i = _varint(data, i)
        states, i = _varint(data, i)
    except IndexError:
        return None
    # a move takes two bytes at least, four unless its token's id is under 251 (one byte)
    if at_most is not None and (len(data) + 2 * 251 * states) // 4 <= at_most:
        return at_most
    varints, at = 0, 0
    while at < len(data):  # in runs, as one substitution over all of it took 5 GB
        run = _VARINT_RUN.match(data, at)
        if run is None:
            return None
        varints += len(_WIDE_VARINT.sub(b"\xfb", run.group()))  # each varint one byte
        at = run.end()
    pairs, odd = divmod(varints - 3 - finals - 2 * states - 2, 2)
    return None if odd or pairs < 0 else pairs


def check_built(index: Any, what: str = "regex") -> None:
    """``UserError`` when the engine's ``index`` holds more moves than fit in
    ``automaton_memory_limit`` at ``BYTES_PER_MOVE`` each, counted before the library hands
    them over as a Python dict: ``check_transitions`` estimates them before the engine runs,
    but the estimate is not a proof (before it kept the engine's priority order it was
    under the count for overlapping alternations: ``(?:\\S|[a-z]{0,4}){12}`` at 126k tokens
    6.4M for 29.6M, built at a peak of 4.1 GB under a 1.5 GB limit, refused here at 1.1 GB).
    The engine's own index, built before this count, takes under 40 bytes a move, so the
    limit holds unless the estimate is under the count by over about 3.5x."""
    limit = automaton_memory_limit()
    moves = index_moves(index, at_most=limit // BYTES_PER_MOVE)
    if moves is not None and moves * BYTES_PER_MOVE > limit:
        raise UserError(
            f"{what}: too large for this tokenizer (its automaton has {moves} token moves, "
            f"some {_in_megabytes(moves * BYTES_PER_MOVE)} to compile, over the "
            f"{_in_megabytes(limit)} limit: ${AUTOMATON_MEMORY_ENV}, else "
            f"{AUTOMATON_MEMORY_SHARE:.0%} of the memory available); shorten its counted "
            "runs or maximum lengths"
        )


_ASCII = {"w": "A-Za-z0-9_", "d": "0-9", "s": " \\t\\n\\r\\f\\v"}
"""What ``ascii_classes`` puts for ``\\w``, ``\\d``, ``\\s`` (inside brackets as it is,
outside them in brackets); an unescaped ``.`` outside brackets becomes ``[ -~]``."""


def ascii_classes(pattern: str) -> str | None:
    """``pattern`` with its Unicode classes ``\\w``, ``\\d``, ``\\s`` and ``.`` narrowed to
    ASCII, for ``check_size``'s advice: ``(?:\\w+ ){1,50}`` is counted at 46,353 states (every
    byte of a multi-byte word character), ``(?:[A-Za-z0-9_]+ ){1,50}`` at a few hundred. None
    where the pattern holds a class with no ASCII narrowing (``\\W``, ``\\p{L}``, a negated
    class, ...)."""

    def escape(text: str) -> str | None:
        if text[1:] in _ASCII:
            return f"[{_ASCII[text[1:]]}]"
        return None if text[1:2] in ("W", "D", "S", "p", "P") else text

    def bracketed(text: str) -> str | None:
        if "[^" in text:
            return None
        escapes = [m.group(0) for m in _BRACED_ESCAPE.finditer(text)]
        if any(e[1:2] in ("W", "D", "S", "p", "P") for e in escapes):
            return None
        return _BRACED_ESCAPE.sub(lambda m: _ASCII.get(m.group(0)[1:], m.group(0)), text)

    return _map_classes(pattern, escape, bracketed, "[ -~]")


def _map_classes(pattern: str, escape: Callable[[str], str | None],
                 bracketed: Callable[[str], str | None], dot: str,
                 literal: Callable[[str, int], str] | None = None) -> str | None:
    """``pattern`` with each escape outside brackets as ``escape`` writes it, each bracketed
    class (``_class_end``) as ``bracketed`` does, each unescaped ``.`` outside brackets as
    ``dot`` and each other character ``pattern[i]`` as ``literal(pattern, i)`` does (as
    written without one; called in order, so it may follow the groups): the one scanner of
    ``ascii_classes``, ``ecma_classes`` and ``schema._json_plain``. None where ``escape``
    or ``bracketed`` gives None."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            m = _BRACED_ESCAPE.match(pattern, i)
            text = m.group(0) if m else c
            i += len(text)
            text = escape(text)
        elif c == "[":
            end = _class_end(pattern, i)
            text = bracketed(pattern[i:end])
            i = end
        else:
            text = dot if c == "." else c if literal is None else literal(pattern, i)
            i += 1
        if text is None:
            return None
        out.append(text)
    return "".join(out)


_ECMA_SPACE = r"\t\n\x0B\f\r \xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
"""The characters both ECMA-262's ``\\s`` and Python's and the engine's ``\\s`` match."""
_ECMA = {"d": "0-9", "w": "A-Za-z0-9_", "s": _ECMA_SPACE}
_ECMA_OUTSIDE = {
    **{k: f"[{v}]" for k, v in _ECMA.items()},
    "S": r"[^\s\x{FEFF}]",  # ECMA's \s also matches U+FEFF: not a \S there
}
_ECMA_DOT = r"[^\n\r\x{2028}\x{2029}]"


def _ecma_class(text: str) -> str:
    """A positive bracketed class ``text`` narrowed as ``ecma_classes`` says; one holding
    ``\\S`` as that class without it or ECMA's ``\\S`` (``[\\S-]`` admitted U+FEFF, which
    ECMA's ``\\s`` matches), where it nests no class."""
    wide = False

    def narrow(m: re.Match[str]) -> str:
        nonlocal wide
        if m.group(0) == "\\S" and "[" not in text[1:]:
            wide = True
            return ""
        return _ECMA.get(m.group(0)[1:], m.group(0))

    text = _BRACED_ESCAPE.sub(narrow, text)
    if not wide:
        return text
    return _ECMA_OUTSIDE["S"] if text == "[]" else f"(?:{text}|{_ECMA_OUTSIDE['S']})"


def ecma_classes(pattern: str) -> str:
    """A JSON Schema ``pattern`` with ``\\d``, ``\\w``, ``\\s``, ``\\S`` and ``.`` narrowed to
    what ECMA-262 (JSON Schema's regex dialect) and Python's ``re`` both match: ``\\d`` is
    ``[0-9]`` and ``\\w`` ``[A-Za-z0-9_]`` there, ``.`` leaves out U+2028 and U+2029, and the
    engine's Unicode ``\\d`` also wrote digits of scripts newer than Python's tables
    (``"\\d{2}"`` filled with ``"𖄳６"``, which neither ``jsonschema`` nor a JavaScript
    validator accepts). Inside a negated class, or one with a set difference, each stays as
    written: there the Unicode reading is the narrower one; a positive class with ``\\S`` is
    the rest of the class or ECMA's ``\\S``. ``\\D``, ``\\W`` are narrower as
    written too."""
    def bracketed(text: str) -> str:
        return text if "[^" in text or "--" in text or "~~" in text else _ecma_class(text)

    out = _map_classes(pattern, lambda text: _ECMA_OUTSIDE.get(text[1:], text), bracketed,
                       _ECMA_DOT)
    assert out is not None  # neither gives None
    return out


def _index(pattern: str, vocab: Vocab, what: str, *, matchable: bool = True) -> Any:
    """``outlines_core.Index`` of ``pattern`` + ``SENTINEL``, its errors as one ``UserError``
    (without ``matchable``, None for a pattern no token sequence matches).

    Why the sentinel: outlines-core 0.2.14 drops a token whose bytes run from a state where
    the pattern is matched into one where it is not (``[0-9]+(\\.[0-9]+)?`` has no ``"."``
    after ``"12"``, ``c|cab`` no ``"a"`` after ``"c"``): the regex engine underneath reports
    matches one byte late and the index mistakes that for a dead end. With a sentinel at the
    end no state but the last is ever a match, so every transition is kept; the states that
    accept the user's pattern are those the sentinel token leads from to the final state.

    Why ``START`` in front: the engine's DFA also holds an unanchored start (a match may
    begin anywhere), built in full although the index never reads it. For a counted
    repetition (``[0-9]{20}``, every wide numeric range) that part tracks every digit a
    match could have begun at, 2^20 sets: a range up to 10^18 took 13 s and each further
    digit doubled it. A match that must begin with a character found nowhere else leaves
    one such position at a time; the pattern's start is the state after the ``START`` token
    (``_pattern_start``).
    """
    from outlines_core import Index

    guarded = guard_pattern(whole_pattern(pattern), what)
    try:
        return Index(f"{START}(?:{guarded}){SENTINEL}", outlines_vocabulary(vocab))
    except ValueError as e:
        msg = str(e)
        if "incompatible" in msg:
            if not matchable:
                return None
            found = _inner_anchor(pattern)
            if found is not None and found[1]:  # a$$, ^^a: Python's fullmatch takes a
                raise UserError(
                    f"{what}: it repeats an anchor ({found[0]}) at an end, which the regex "
                    "engine refuses; write each anchor once") from None
            if found is not None:  # not "no sequence matches": a|b$c matches a in Python
                raise UserError(
                    f"{what}: it has an anchor ({found[0]}) inside the pattern, which the "
                    "regex engine reads as never holding there, and it refuses a pattern with "
                    "a part that can never match; write anchors only at the ends of the "
                    "pattern (or of each top-level alternative)") from None
            raise UserError(f"{what}: {NO_MATCH}") from None
        reason = msg.split(".")[0].replace("Failed to build DFA ", "")
        try:  # the engine's message has no position; Python's parser often names one
            with warnings.catch_warnings():  # its notes on the engine's syntax ("[[")
                warnings.simplefilter("ignore")
                re.compile(pattern)
        except re.error as err:
            reason = f"{err.msg} at column {(err.pos or 0) + 1}"
        except (RecursionError, OverflowError):
            pass
        else:  # Python reads it: a construct no DFA has ("error building NFA" said nothing)
            reason = _no_dfa(pattern) or _python_only(pattern) or reason
        raise UserError(f"{what}: the regex engine (outlines-core) rejects it ({reason}); "
                        "see docs/infill.md for the syntax") from None


_ANCHORS = ("^", "$", "\\A", "\\z", "\\Z")


def _inner_anchor(pattern: str) -> tuple[str, bool] | None:
    """The anchor (``^``, ``$``, ``\\A``, ``\\z``, ``\\Z``) that makes the engine refuse
    ``pattern``, and whether it is one repeated at an end, when that is certain; None
    otherwise. outlines-core refuses a pattern with a part that can never match ("no
    transitions from state N", reported as incompatible): ``a|b$c``, ``a^b|c`` were refused
    as matching nothing, although ``a`` and ``c`` match. An anchor is named only when the
    pattern without it is read (``(?:^a|b)c[^\\s\\S]`` is dead for its class, not its ``^``),
    and one repeated at an end (``a$$``, ``^^a``, which hold in Python) as repeated. The
    engine's check runs on the 256 bytes (``_BYTES``): an error path only."""
    whole = whole_pattern(pattern)
    inner = [text for text, _ in _lexed(whole) if text in _ANCHORS]
    if not inner:
        return None
    again = whole_pattern(whole)  # an anchor repeated at an end is at an end once more
    repeated = sum(text in _ANCHORS for text, _ in _lexed(again)) < len(inner)
    rest = again if repeated else "".join(
        text for text, _ in _lexed(whole) if text not in _ANCHORS)
    return (inner[0], repeated) if _engine_builds(rest) else None


def _engine_builds(pattern: str) -> bool:
    """Whether the engine builds ``pattern`` (anchors at the ends already taken off) over the
    256 bytes."""
    from outlines_core import Index

    try:
        Index(f"{START}(?:{guard_pattern(pattern)}){SENTINEL}", outlines_vocabulary(_BYTES))
    except (UserError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=512)
def _engine_reads(pattern: str) -> bool:
    """Whether the engine reads ``pattern`` as ``_index`` writes it, without building its
    automaton: it is compiled behind an empty class (``[^\\s\\S]``), which no text gets past,
    so the engine's DFA never reaches the pattern's states (a few states, whatever the
    pattern's size) while its parser reads all of it. A pattern ``guard_pattern`` refuses is
    not read."""
    from outlines_core import Index

    try:
        guarded = guard_pattern(whole_pattern(pattern))
        Index(f"{START}[^\\s\\S](?:{guarded}){SENTINEL}", outlines_vocabulary(_BYTES))
    except UserError:
        return False
    except ValueError as e:
        return "incompatible" in str(e)
    return True  # not reached: no text matches it


_NO_DFA = {"ASSERT": "lookahead or lookbehind ((?=...), (?!...), (?<=...), (?<!...))",
           "ASSERT_NOT": "lookahead or lookbehind ((?=...), (?!...), (?<=...), (?<!...))",
           "GROUPREF": "a backreference (\\1, (?P=name))",
           "GROUPREF_EXISTS": "a conditional group ((?(1)...|...))"}


def _no_dfa(pattern: str) -> str | None:
    """What in ``pattern`` (as Python reads it) no automaton can hold, as the refusal says it:
    lookaround, a backreference, a conditional group; None when it holds none of them."""
    import re._parser as parser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            todo: list[Any] = [parser.parse(pattern)]
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return None
    while todo:
        item = todo.pop()
        if isinstance(item, (list, tuple, parser.SubPattern)):
            if len(item) == 2 and str(item[0]) in _NO_DFA:
                return f"{_NO_DFA[str(item[0])]} is not supported: an automaton cannot hold it"
            todo.extend(x for x in item if isinstance(x, (list, tuple, parser.SubPattern)))
    return None


_PYTHON_ONLY = re.compile(
    r"(?P<skip>\\[^0-7NZ])|\\(?P<octal>0[0-7]{0,2}|[0-7]{3})|(?P<named>\\N\{)|(?P<end>\\Z)"
    r"|(?P<backspace>\[\^?\]?(?:\\[^b]|[^\]\\])*\\b)|(?P<klass>\[\^?\]?(?:\\.|[^\]\\])*\])"
    r"|(?P<atomic>\(\?>)|(?P<comment>\(\?#)|(?P<flag>\(\?[a-zA-Z]*a[a-zA-Z-]*[:)])"
    r"|(?P<upto>\{\s*,\s*\d+\s*\})|(?P<brace>\{(?!\s*\d+\s*(?:,\s*\d*\s*)?\}))",
    re.DOTALL,
)
_PYTHON_SAYS = {
    "octal": "octal escapes (\\0, \\101) are Python's: write \\x00, \\x{41}",
    "named": "named characters (\\N{...}) are Python's: write the character or \\u{e9}",
    "end": "\\Z is Python's: write $ or \\z",
    "atomic": "atomic groups (?>...) are not supported",
    "comment": "comments (?#...) are not supported: leave them out",
    "flag": "the ASCII flag (?a) is Python's: write [0-9] for \\d, [A-Za-z0-9_] for \\w",
    "upto": "a bound {,n} is Python's: write {0,n}",
    "backspace": "[\\b] (backspace) is Python's: write \\x08",
    "brace": "a { that starts no {m,n}: write \\{ for a literal one",
}
"""Python's syntax the engine lacks, as ``_python_only`` names it."""


def _python_only(pattern: str) -> str | None:
    """What in ``pattern`` is Python's syntax and not the engine's (an octal escape, ``\\Z``,
    ``{,n}``, ``(?>...)``...), as the refusal says it; None for none. Python reads these, so
    the engine's error alone said "error building NFA" and named nothing."""
    for m in _PYTHON_ONLY.finditer(pattern):
        if m.lastgroup not in ("skip", "klass"):
            return _PYTHON_SAYS[str(m.lastgroup)]
    return None


def _pattern_start(
    moves: Mapping[int, Mapping[int, int]], initial: int, vocab: Vocab, what: str
) -> int:
    """The state where the user's pattern begins: the one the ``START`` token leads to."""
    start = moves.get(initial, {}).get(vocab.size + 2)
    if start is None:  # nothing follows START: no token sequence spells the pattern
        raise UserError(f"{what}: no sequence of this tokenizer's tokens matches it")
    return int(start)


CACHE_VERSION = 4
"""Bumped when the stored layout or the compilation changes, so old entries are not read (3:
anchors inside a group or after a flag group are whole-text anchors, ``(?:a|^b)`` admits
``b``: an entry stored by 2 held the smaller language under the same pattern; 4: ``(?x)``
comments and spaces are left out before the anchors and alternatives are read, so
``(?x)^a$|^b$ # c`` is another language than version 3 stored)."""
CACHE_MAX_ENV = "UNMASK_CACHE_MAX_MB"
"""The most megabytes the on-disk automata may take (default ``CACHE_MAX_MB``): past it the
entries used longest ago are deleted when one is written (a server compiling every client's
regexes filled the disk, one file per pattern, without end)."""
CACHE_MAX_MB = 1024


def vocab_fingerprint(vocab: Vocab) -> str:
    """A digest of every token's bytes (what the automaton depends on), once per ``Vocab``."""
    cached = getattr(vocab, "_fingerprint", None)
    if cached is None:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(vocab.lengths, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(vocab.matrix).tobytes())
        cached = vocab._fingerprint = h.hexdigest()  # type: ignore[attr-defined]
    return cached


def _disk_path(pattern: str, vocab: Vocab, allowed: np.ndarray | None) -> Path | None:
    """The cache file of (pattern, tokenizer, allowed tokens), or None (cache off)."""
    root = cache_dir()
    if root is None:
        return None
    from importlib.metadata import version

    engine = version("outlines-core")
    h = hashlib.sha256()
    for part in (str(CACHE_VERSION), engine, vocab_fingerprint(vocab), pattern):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    if allowed is not None:
        h.update(np.packbits(np.asarray(allowed, dtype=bool)).tobytes())
    return root / "automata" / f"{h.hexdigest()}.npz"


def _disk_load(path: Path | None, vocab_size: int) -> TokenAutomaton | None:
    """The automaton stored at ``path`` (plain arrays, never pickles), or None when there is
    none or it cannot be read or is not an automaton over ``vocab_size`` tokens
    (``_well_formed``; it is then rebuilt and rewritten)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("table", "token_class", "accept", "dead_class", "start")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if not _well_formed(arrays, vocab_size):
        return None
    out = TokenAutomaton(table=arrays["table"], token_class=arrays["token_class"],
                         accept=arrays["accept"], dead_class=int(arrays["dead_class"]),
                         start=int(arrays["start"]))
    with contextlib.suppress(OSError):  # used now: the last to be pruned (``_disk_prune``)
        os.utime(path)
    return out


def _well_formed(a: Mapping[str, np.ndarray], vocab_size: int) -> bool:
    """Whether stored arrays make a ``TokenAutomaton`` over ``vocab_size`` tokens: shapes,
    integer and boolean kinds, and every state and class in range. A file of the right name
    with other arrays in it (an edited or foreign entry) crashed the first step that read it
    (``IndexError`` in ``allowed``), or gave a wrong automaton, instead of being rebuilt."""
    table, cls, accept = a["table"], a["token_class"], a["accept"]
    dead, start = a["dead_class"], a["start"]
    if not (table.ndim == 2 and cls.shape == (vocab_size,) and accept.shape == table.shape[:1]
            and dead.shape == () and start.shape == () and table.size > 0
            and all(x.dtype.kind in "iu" for x in (table, cls, dead, start))
            and accept.dtype == np.bool_):
        return False
    states, classes = table.shape
    return bool(0 <= table.min() and table.max() < states and 0 <= int(start) < states
                and 0 <= int(dead) < classes and (cls.size == 0 or (
                    0 <= cls.min() and cls.max() < classes)))


def cache_limit_bytes() -> int:
    """The size the on-disk automata are pruned to (``CACHE_MAX_ENV``, in megabytes; a value
    that is not a number >= 0 is a one-line ``UserError``)."""
    given = _megabytes(CACHE_MAX_ENV, "the most megabytes the automaton cache may take, "
                       "a number >= 0", positive=False)
    return CACHE_MAX_MB << 20 if given is None else given


def _megabytes(name: str, meaning: str, *, positive: bool) -> int | None:
    """The bytes the environment variable ``name`` gives in megabytes (None where unset or
    empty); a value that is not a finite number >= 0 (> 0: ``positive``) is a ``UserError``
    saying it should be ``meaning``."""
    given = os.environ.get(name, "").strip()
    if not given:
        return None
    try:
        mb = float(given)
    except ValueError:
        mb = -1.0
    if not mb >= 0 or mb == float("inf") or (positive and mb == 0):
        raise UserError(f"{name}={given!r}: give {meaning}")
    return int(mb * (1 << 20))


def _disk_prune(folder: Path, keep: Path) -> None:
    """Delete the entries of ``folder`` used longest ago (modification time: written or
    loaded) until they take at most ``cache_limit_bytes``; ``keep`` (just written) stays.
    Entries another process deletes meanwhile are skipped."""
    limit = cache_limit_bytes()
    entries = []
    for p in folder.glob("*.npz"):
        with contextlib.suppress(OSError):
            st = p.stat()
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if p == keep:
            continue
        with contextlib.suppress(OSError):
            p.unlink()
        total -= size


def _disk_save(path: Path | None, automaton: TokenAutomaton) -> None:
    """Store ``automaton`` at ``path`` atomically (temporary file + rename, so concurrent
    processes never read half a file; a cache that cannot be written is skipped); then prune the
    folder to its limit (``_disk_prune``)."""
    if path is None:
        return
    buf = io.BytesIO()
    np.savez(buf, table=automaton.table, token_class=automaton.token_class,
             accept=automaton.accept, dead_class=np.int64(automaton.dead_class),
             start=np.int64(automaton.start))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        return
    _disk_prune(path.parent, path)


_BYTES = Vocab(matrix=np.arange(256, dtype=np.uint8)[:, None], lengths=np.ones(256, np.int64))
"""The 256 single bytes: a vocabulary that spells every text, to check a regex alone."""


def check_regex(pattern: str, what: str = "regex") -> None:
    """``UserError`` for a regex the engine rejects or that is too large, before any tokenizer
    is loaded (compiled over the 256 single bytes)."""
    check_size(pattern, what)
    index = _index(pattern, _BYTES, what)
    _pattern_start(index.get_transitions(), index.get_initial_state(), _BYTES, what)


def check_syntax(pattern: str, what: str = "regex") -> None:
    """``UserError`` for a pattern the engine rejects, checked alone, before it is written into
    a larger regex (a JSON Schema value's), so the error's column points into the pattern as
    written. A pattern over the size limits (``check_size``) or that matches no text is left to
    the caller's checks of the larger regex, which name those in their own words. The syntax
    is read by the engine without building the pattern's automaton (``_engine_reads``), once
    per pattern: the whole pattern is compiled where its error is to be told. (It was read
    with its counted runs cut short, a rewrite the engine did not always read alike:
    ``x{2, }`` is refused, ``x{1,}`` is not.)"""
    if pattern in _SYNTAX_OK:
        return
    try:
        check_size(pattern, what)
    except UserError:
        return
    if not _engine_reads(pattern):
        _index(pattern, _BYTES, what, matchable=False)  # its own error, its columns
    if len(_SYNTAX_OK) >= 4096:
        _SYNTAX_OK.clear()
    _SYNTAX_OK.add(pattern)


_SYNTAX_OK: set[str] = set()
"""Patterns ``check_syntax`` passed (a schema states one pattern in many places)."""
CACHE_BYTES = 512 * 2**20
"""Most bytes of automata ``cached_automaton`` keeps per tokenizer, the least recently used
dropped first: it kept every automaton for good, and a server compiles one per distinct
pattern a client sends (a 19,000-state automaton over a 126k vocabulary is tens of MB)."""
_LOCK = threading.Lock()
_EVICTED = [0]  # automata ``cached_automaton`` has dropped so far (any tokenizer)


def evictions() -> int:
    """How many automata ``cached_automaton`` has dropped since the process started: a
    caller that remembers what it compiled (the server's ``FormMemo``) can tell that its
    automata may be gone (the count moved) and must be built again."""
    return _EVICTED[0]


def _nbytes(automaton: TokenAutomaton) -> int:
    return int(automaton.table.nbytes + automaton.token_class.nbytes + automaton.accept.nbytes)


def cached_automaton(tokenizer: Any, key: Any, build: Any) -> TokenAutomaton:
    """``build()`` once per (tokenizer, key), kept while the tokenizer lives, at most
    ``CACHE_BYTES`` of them per tokenizer (least recently used dropped). Safe across threads
    (the server's request handlers and its worker both read it); two threads that miss the
    same key at once may both build it."""
    with _LOCK:
        try:
            store = _AUTOMATA.get(tokenizer)
            if store is None:
                store = _AUTOMATA[tokenizer] = OrderedDict()
        except TypeError:  # not weak-referenceable: no cache
            store = None
        if store is not None and key in store:
            store.move_to_end(key)
            return store[key]
    out = build()
    if store is not None:
        with _LOCK:
            store[key] = out
            used = sum(_nbytes(a) for a in store.values())
            while used > CACHE_BYTES and len(store) > 1:
                used -= _nbytes(store.popitem(last=False)[1])
                _EVICTED[0] += 1
    return out


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

    def _rows(self, tokens: Tensor) -> dict[int, list[int]]:
        """Each row the spans cover, as a list, read once (not once per span)."""
        return {r: tokens[r].tolist() for r in dict.fromkeys(r for r, _, _ in self.spans)}

    def _seq(self, row: list[int], start: int, end: int) -> list[int | None]:
        return [None if t == self.mask_id else t for t in row[start:end]]

    def apply(self, logits: Tensor, tokens: Tensor) -> Tensor:
        V = logits.shape[-1]
        rows_cache = self._rows(tokens)
        usable: np.ndarray | None = None
        index_r: list[int] = []
        index_p: list[int] = []
        masks: list[np.ndarray] = []
        for r, s, e in self.spans:
            row = rows_cache[r]
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

    def complete(self, tokens: Tensor, scores: Tensor) -> Tensor:
        out = tokens
        rows_cache = self._rows(tokens)
        for r, s, e in self.spans:
            seq = self._seq(rows_cache[r], s, e)
            if None not in seq:
                continue
            done = self.automaton.complete(seq, scores=scores[r, s:e].double().cpu().numpy())
            if done is not None:
                out = out.clone() if out is tokens else out
                out[r, s:e] = torch.tensor(done, dtype=out.dtype, device=out.device)
        return out

    def violations(self, tokens: Tensor) -> list[tuple[int, int, int]]:
        out = []
        rows_cache = self._rows(tokens)
        for r, s, e in self.spans:
            row = rows_cache[r]
            seq = row[s:e]
            if self.mask_id in seq or not self.automaton.accepts(seq):
                out.append((r, s, e))
        return out
