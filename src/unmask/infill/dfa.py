"""Byte-level automata for constraints: a small regex AST, Thompson NFAs and DFAs.

Inside:

- ``CharSet`` and the AST (``Node``; helpers ``lit``, ``cat``, ``alt``, ``rep``,
  ``any_char``, ``embed``, ``class_set``) used by ``unmask.infill.regex`` and to build
  constraints in code (form holes); ``NAMED_CLASSES`` (digits, lowercase, ...).
- ``to_dfa``: AST → Thompson NFA → subset construction → trimmed, minimized ``DFA``.
- ``DFA``: transitions over the 256 byte values; ``matches``, ``intersect``,
  ``min_length`` / ``max_length``, ``is_empty``.

Characters are matched as their UTF-8 bytes: a set of non-ASCII characters becomes the
byte sequences of its members, and "any non-ASCII character" the well-formed UTF-8
sequences of 2-4 bytes (Unicode Table 3-7: no overlongs, no surrogates).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from unmask.errors import UserError

MAX_STATES = 20000
"""Largest automaton a constraint may compile to."""

# -- the abstract syntax ------------------------------------------------------------------


@dataclass(frozen=True)
class CharSet:
    """A set of characters: ASCII code points, explicit non-ASCII ones, or all non-ASCII."""

    ascii: frozenset[int] = frozenset()
    """ASCII code points (0-127) in the set."""
    extra: frozenset[int] = frozenset()
    """Non-ASCII code points in the set (ignored when ``non_ascii``)."""
    non_ascii: bool = False
    """Every well-formed non-ASCII character is in the set."""

    def __or__(self, other: CharSet) -> CharSet:
        return CharSet(
            self.ascii | other.ascii, self.extra | other.extra, self.non_ascii or other.non_ascii
        )

    def negate(self) -> CharSet:
        """Complement; only sets without explicit non-ASCII members can be negated."""
        if self.extra or self.non_ascii:
            raise ValueError("non-ASCII")
        return CharSet(frozenset(range(128)) - self.ascii, frozenset(), True)


@dataclass(frozen=True)
class Node:
    """Regex AST node: ``set`` (one character of ``cs``), ``cat``, ``alt``, ``rep``, ``dfa``."""

    kind: str
    cs: CharSet | None = None
    children: tuple[Node, ...] = ()
    lo: int = 0
    hi: int | None = None
    dfa: DFA | None = field(default=None, compare=False)


def class_set(chars: str) -> CharSet:
    """A ``CharSet`` of the given characters."""
    asc = frozenset(ord(c) for c in chars if ord(c) < 128)
    return CharSet(asc, frozenset(ord(c) for c in chars if ord(c) >= 128))


def _range(a: int, b: int) -> frozenset[int]:
    return frozenset(range(a, b + 1))


DIGIT = CharSet(_range(48, 57))
WORD = CharSet(_range(48, 57) | _range(65, 90) | _range(97, 122) | {95})
SPACE = CharSet(frozenset(b" \t\n\r\f\v"))
DOT = CharSet(frozenset(range(128)) - {10}, frozenset(), True)
ANY = CharSet(frozenset(range(128)), frozenset(), True)

NAMED_CLASSES: dict[str, CharSet] = {
    "digits": DIGIT,
    "lowercase": CharSet(_range(97, 122)),
    "uppercase": CharSet(_range(65, 90)),
    "alpha": CharSet(_range(65, 90) | _range(97, 122)),
    "alnum": CharSet(_range(48, 57) | _range(65, 90) | _range(97, 122)),
    "word": WORD,
}
"""Character classes a gap's ``allowed`` may name (ASCII)."""


def lit(text: str) -> Node:
    """The literal string ``text``."""
    if not text:
        return Node("cat")
    return cat(*(Node("set", cs=class_set(c)) for c in text))


def cat(*nodes: Node) -> Node:
    return nodes[0] if len(nodes) == 1 else Node("cat", children=tuple(nodes))


def alt(*nodes: Node) -> Node:
    return nodes[0] if len(nodes) == 1 else Node("alt", children=tuple(nodes))


def rep(node: Node, lo: int, hi: int | None) -> Node:
    """``node{lo,hi}``; ``hi=None`` = unbounded."""
    return Node("rep", children=(node,), lo=lo, hi=hi)


def any_char(cs: CharSet) -> Node:
    """One character of ``cs``."""
    return Node("set", cs=cs)


def embed(dfa: DFA) -> Node:
    """A compiled ``DFA`` used as a sub-expression."""
    return Node("dfa", dfa=dfa)


# -- NFA (Thompson) ---------------------------------------------------------------------------

_CONT = (0x80, 0xBF)
# Well-formed UTF-8 sequences of 2-4 bytes (Unicode Table 3-7): no overlongs, no surrogates.
_UTF8_MULTI = (
    ((0xC2, 0xDF), _CONT),
    ((0xE0, 0xE0), (0xA0, 0xBF), _CONT),
    ((0xE1, 0xEC), _CONT, _CONT),
    ((0xED, 0xED), (0x80, 0x9F), _CONT),
    ((0xEE, 0xEF), _CONT, _CONT),
    ((0xF0, 0xF0), (0x90, 0xBF), _CONT, _CONT),
    ((0xF1, 0xF3), _CONT, _CONT, _CONT),
    ((0xF4, 0xF4), (0x80, 0x8F), _CONT, _CONT),
)


def _mask(lo: int, hi: int) -> int:
    return ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


class _NFA:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int]]] = []  # (256-bit byte mask, target)

    def new(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def chain(self, start: int, end: int, masks: list[int]) -> None:
        cur = start
        for k, m in enumerate(masks):
            nxt = end if k == len(masks) - 1 else self.new()
            self.edges[cur].append((m, nxt))
            cur = nxt

    def build(self, node: Node) -> tuple[int, int]:
        s, e = self.new(), self.new()
        if node.kind == "set":
            cs = node.cs
            assert cs is not None
            if cs.ascii:
                m = 0
                for b in cs.ascii:
                    m |= 1 << b
                self.edges[s].append((m, e))
            if cs.non_ascii:
                for seq in _UTF8_MULTI:
                    self.chain(s, e, [_mask(a, b) for a, b in seq])
            else:
                for cp in sorted(cs.extra):
                    self.chain(s, e, [1 << b for b in chr(cp).encode("utf-8")])
        elif node.kind == "cat":
            cur = s
            for child in node.children:
                cs_, ce = self.build(child)
                self.eps[cur].append(cs_)
                cur = ce
            self.eps[cur].append(e)
        elif node.kind == "alt":
            for child in node.children:
                cs_, ce = self.build(child)
                self.eps[s].append(cs_)
                self.eps[ce].append(e)
        elif node.kind == "rep":
            (child,) = node.children
            cur = s
            for _ in range(node.lo):
                cs_, ce = self.build(child)
                self.eps[cur].append(cs_)
                cur = ce
            if node.hi is None:
                cs_, ce = self.build(child)
                self.eps[cur].append(cs_)
                self.eps[ce].append(cs_)
                self.eps[ce].append(e)
                self.eps[cur].append(e)
            else:
                for _ in range(node.hi - node.lo):
                    cs_, ce = self.build(child)
                    self.eps[cur].append(cs_)
                    self.eps[cur].append(e)
                    cur = ce
                self.eps[cur].append(e)
        elif node.kind == "dfa":
            dfa = node.dfa
            assert dfa is not None
            ids = [self.new() for _ in range(dfa.n_states)]
            self.eps[s].append(ids[dfa.start])
            for q in range(dfa.n_states):
                row = dfa.trans[q]
                for t in np.unique(row[row >= 0]).tolist():
                    m = 0
                    for b in np.nonzero(row == t)[0].tolist():
                        m |= 1 << b
                    self.edges[ids[q]].append((m, ids[t]))
                if dfa.accept[q]:
                    self.eps[ids[q]].append(e)
        else:  # pragma: no cover
            raise AssertionError(node.kind)
        return s, e

    def closure(self, states: set[int]) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            q = stack.pop()
            for r in self.eps[q]:
                if r not in seen:
                    seen.add(r)
                    stack.append(r)
        return frozenset(seen)


# -- DFA --------------------------------------------------------------------------------------


@dataclass(eq=False)
class DFA:
    """A deterministic automaton over bytes; state ``start``; ``-1`` is the dead state.

    Only useful states are kept: every state can reach an accepting one (unless the
    language is empty, when only the start state is left).
    """

    trans: np.ndarray
    """(S, 256) int32 next state per byte, -1 = dead."""
    accept: np.ndarray
    """(S,) bool: accepting states."""
    start: int = 0

    @property
    def n_states(self) -> int:
        return int(self.trans.shape[0])

    def run(self, data: bytes, state: int | None = None) -> int:
        """The state after reading ``data`` (-1 = dead)."""
        q = self.start if state is None else state
        for b in data:
            if q < 0:
                return -1
            q = int(self.trans[q, b])
        return q

    def matches(self, data: bytes | str) -> bool:
        """Whether the whole of ``data`` (str = its UTF-8) is in the language."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        q = self.run(raw)
        return q >= 0 and bool(self.accept[q])

    def is_empty(self) -> bool:
        return not bool(self.accept.any())

    def min_length(self) -> int | None:
        """Bytes of the shortest member, None if the language is empty."""
        dist = {self.start: 0}
        queue = deque([self.start])
        while queue:
            q = queue.popleft()
            if self.accept[q]:
                return dist[q]
            for t in np.unique(self.trans[q]).tolist():
                if t >= 0 and t not in dist:
                    dist[t] = dist[q] + 1
                    queue.append(t)
        return None

    def max_length(self) -> int | None:
        """Bytes of the longest member; None if unbounded (or the language is empty)."""
        if self.is_empty():
            return None
        succ = [set(np.unique(self.trans[q]).tolist()) - {-1} for q in range(self.n_states)]
        order: list[int] = []
        state = [0] * self.n_states  # 0 new, 1 on stack, 2 done
        stack: list[tuple[int, list[int]]] = [(self.start, sorted(succ[self.start]))]
        state[self.start] = 1
        while stack:
            q, rest = stack[-1]
            if rest:
                t = rest.pop()
                if state[t] == 1:
                    return None  # a cycle among useful states: unbounded
                if state[t] == 0:
                    state[t] = 1
                    stack.append((t, sorted(succ[t])))
            else:
                state[q] = 2
                order.append(q)
                stack.pop()
        longest = dict.fromkeys(order, -1)
        for q in order:  # successors come first in this post-order
            best = 0 if self.accept[q] else -1
            for t in succ[q]:
                if longest[t] >= 0:
                    best = max(best, longest[t] + 1)
            longest[q] = best
        return longest[self.start] if longest[self.start] >= 0 else None

    def intersect(self, other: DFA) -> DFA:
        """The product automaton: strings in both languages."""
        index = {(self.start, other.start): 0}
        pairs = [(self.start, other.start)]
        rows: list[np.ndarray] = []
        k = 0
        while k < len(pairs):
            a, b = pairs[k]
            ta, tb = self.trans[a], other.trans[b]
            row = np.full(256, -1, dtype=np.int32)
            live = (ta >= 0) & (tb >= 0)
            for byte in np.nonzero(live)[0].tolist():
                key = (int(ta[byte]), int(tb[byte]))
                if key not in index:
                    index[key] = len(pairs)
                    pairs.append(key)
                    if len(pairs) > MAX_STATES:
                        raise UserError(
                            "constraint too complex (its automaton has over 20000 states)"
                        )
                row[byte] = index[key]
            rows.append(row)
            k += 1
        accept = np.array([bool(self.accept[a]) and bool(other.accept[b]) for a, b in pairs])
        return _trim(np.stack(rows), accept, 0)


def _trim(trans: np.ndarray, accept: np.ndarray, start: int) -> DFA:
    """Drop states that are unreachable or cannot reach an accepting state; renumber."""
    n = trans.shape[0]
    reach = np.zeros(n, dtype=bool)
    reach[start] = True
    queue = [start]
    while queue:
        q = queue.pop()
        for t in np.unique(trans[q]).tolist():
            if t >= 0 and not reach[t]:
                reach[t] = True
                queue.append(t)
    useful = accept.copy()
    changed = True
    while changed:  # backward fixpoint
        safe = np.where(trans >= 0, trans, 0)
        nxt = useful | ((trans >= 0) & useful[safe]).any(axis=1)
        changed = bool((nxt != useful).any())
        useful = nxt
    keep = reach & useful
    keep[start] = True
    new_id = np.full(n + 1, -1, dtype=np.int32)  # index n = dead
    ids = np.nonzero(keep)[0]
    # Start first, so it is state 0.
    ids = np.concatenate([[start], ids[ids != start]])
    new_id[ids] = np.arange(len(ids), dtype=np.int32)
    old = trans[ids]
    remapped = new_id[np.where(old >= 0, old, n)]
    remapped = np.where(old >= 0, remapped, -1).astype(np.int32)
    return _minimize(DFA(trans=remapped, accept=accept[ids] & keep[ids], start=0))


def _minimize(dfa: DFA) -> DFA:
    """Moore's partition refinement: merge states with the same future (start stays 0)."""
    cls = dfa.accept.astype(np.int64)
    n_cls = len(np.unique(cls))
    while True:
        succ = np.where(dfa.trans >= 0, cls[np.maximum(dfa.trans, 0)], -1)  # (S, 256)
        sig = np.concatenate([cls[:, None], succ], axis=1)
        _, new = np.unique(sig, axis=0, return_inverse=True)
        new = new.reshape(-1)
        n_new = int(new.max()) + 1
        cls = new
        if n_new == n_cls:
            break
        n_cls = n_new
    # Renumber classes so the start state's class is 0, in first-seen order.
    order = list(dict.fromkeys([int(cls[dfa.start]), *cls.tolist()]))
    rank = np.empty(n_cls, dtype=np.int32)
    rank[order] = np.arange(n_cls, dtype=np.int32)
    cls = rank[cls]
    reps = np.array([int(np.nonzero(cls == c)[0][0]) for c in range(n_cls)])
    trans = dfa.trans[reps]
    trans = np.where(trans >= 0, cls[np.maximum(trans, 0)], -1).astype(np.int32)
    return DFA(trans=trans, accept=dfa.accept[reps].copy(), start=0)


def to_dfa(node: Node) -> DFA:
    """Subset construction of the AST's Thompson NFA; the result is trimmed."""
    nfa = _NFA()
    s, e = nfa.build(node)
    start = nfa.closure({s})
    index = {start: 0}
    sets = [start]
    rows: list[np.ndarray] = []
    k = 0
    while k < len(sets):
        cur = sets[k]
        edges = [(m, t) for q in cur for (m, t) in nfa.edges[q]]
        row = np.full(256, -1, dtype=np.int32)
        if edges:
            by_target: dict[int, set[int]] = {}
            for m, t in edges:
                b = m
                while b:
                    low = b & -b
                    byte = low.bit_length() - 1
                    by_target.setdefault(byte, set()).add(t)
                    b ^= low
            for byte, targets in by_target.items():
                nxt = nfa.closure(targets)
                if nxt not in index:
                    index[nxt] = len(sets)
                    sets.append(nxt)
                    if len(sets) > MAX_STATES:
                        raise UserError(
                            "constraint too complex (its automaton has over 20000 states)"
                        )
                row[byte] = index[nxt]
        rows.append(row)
        k += 1
    accept = np.array([e in st for st in sets])
    return _trim(np.stack(rows), accept, 0)

