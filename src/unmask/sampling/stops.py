"""Stop sequences that end decoding: a row whose committed text is sure to be cut at a stop
sequence is finished, as a row that wrote EOS is (``protocol.rows_finished``).

A left-to-right decoder (``ar``, ``speculative``, ``hybrid``; the commit loop and ``bd3lm``
at a block boundary, where they stop after EOS) asks ``DecoderRun.stopped_rows`` after each
step; a run whose rows have all ended stops, so ``--stop`` ends the work, not only the text
(it ran every forward of ``gen_length`` and cut the text afterwards). The text is the same:
a row stops only once the rule that cuts it (``unmask.chat.text_end``) can no longer move,
i.e. a stop sequence is found and no stop starting earlier may still be completed by the
tokens to come (``stop_bounds``, the rule of the server's streamed text too).

Inside: ``TextEnd`` (how one row's text ends), ``StopRows`` (the check a run holds),
``stop_may_start``, ``stop_bounds``, ``tokens_through``, ``text_ended`` / ``tokens_ended``
(a row's text and the tokens it counts).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from unmask.chat import reply_lead, text_end
from unmask.sampling.protocol import committed_lengths

WINDOW_SLACK = 8
"""Tokens decoded beyond the longest stop sequence's UTF-8 bytes before the new ones: tokens
of no text of their own (a special token, part of a multi-byte character) fit in it. A stop
that a window misses is never a wrong text: the run only goes on to its end, as before."""


def stop_may_start(text: str, stops: Sequence[str]) -> int:
    """The earliest position from which a stop sequence may still be completed when ``text``
    grows (``text`` ends with a proper prefix of it there); ``len(text)``: none."""
    longest = max((len(s) for s in stops), default=0)
    for p in range(max(0, len(text) - longest + 1), len(text)):
        if any(len(s) > len(text) - p and s.startswith(text[p:]) for s in stops):
            return p
    return len(text)


def stop_bounds(text: str, stops: Sequence[str], template: Any = None
                ) -> tuple[int | None, int]:
    """``(at, may)`` of ``text``, the prefix of a text that may still grow: ``at`` where the
    text as it stands ends (``text_end``: a stop sequence, a chat reply's turn marker; None:
    nowhere), ``may`` the earliest position where one may still be starting. The text is sure
    to end at ``at`` when ``at <= may`` (``text_end`` cuts at the earliest start)."""
    lead = reply_lead(text) if template is not None else 0
    span = text_end(text, stops, template)
    turns = list(template.turn_starts) if template is not None else []
    may = min(lead + stop_may_start(text[lead:], stops), stop_may_start(text, turns))
    return (None if span is None else span[0]), may


@dataclass(frozen=True)
class TextEnd:
    """How one row's text ends besides EOS: its stop sequences, the ids that end it before
    them (EOS, a chat template's end of turn: ``ChatTemplate.ends``) and, for a chat reply,
    its template (the reply is searched after its leading whitespace and also ends at a turn
    marker: ``text_end``)."""

    stops: tuple[str, ...]
    ends: frozenset[int] = frozenset()
    template: Any = None


def tokens_through(tok: Any, ids: list[int], text: str) -> int:
    """The fewest leading tokens of ``ids`` whose text starts with ``text`` (a prefix of the
    text of ``ids`` that ends on a character: once a prefix of the ids covers it, every longer
    one does, so a binary search finds it); ``len(ids)`` if none does."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if tok.decode(ids[:mid]).startswith(text):
            hi = mid
        else:
            lo = mid + 1
    return lo


def text_ended(tok: Any, ids: Sequence[int], rule: TextEnd
               ) -> tuple[str, tuple[int, int] | None, bool, int]:
    """How one generated row ends: ``(text, span, ended_by_id, n_tokens)``. ``text``: the text
    of ``ids`` before its first id of ``rule.ends`` (EOS; ``ended_by_id``: there is one),
    ``span``: where a stop sequence (or a chat reply's turn marker) cuts ``text``
    (``text_end``; None: nowhere), ``n_tokens``: the tokens through the one that ended the
    text, its id of ``rule.ends`` included or the last token of ``span``; all of ``ids``
    without either. The rule of the server's ``finish`` (text, finish_reason, usage) and of
    ``api.Generation.n_tokens`` (``tokens_ended``)."""
    ids = [int(i) for i in ids]
    end = first_end(ids, rule.ends)
    text = tok.decode(ids[:end])
    span = text_end(text, rule.stops or (), rule.template)
    if span is None:
        return text, None, end < len(ids), end + (end < len(ids))  # the ending token too
    return text, span, end < len(ids), tokens_through(tok, ids[:end], text[: span[1]])


def first_end(ids: Sequence[int], ends: Collection[int]) -> int:
    """Index of the first token of ``ends`` in ``ids`` (``len(ids)``: none)."""
    return next((k for k, i in enumerate(ids) if i in ends), len(ids))


def tokens_ended(tok: Any, ids: Sequence[int], rule: TextEnd) -> int:
    """The generated tokens of one row through the one that ended its text (``text_ended``):
    the server's ``usage.completion_tokens`` and ``api.Generation.n_tokens``."""
    return text_ended(tok, ids, rule)[3]


def _marks(rule: TextEnd) -> tuple[str, ...]:
    """What a row's window looks for: its stop sequences and its chat turn markers."""
    return (*(rule.stops or ()), *(rule.template.turn_starts if rule.template else ()))


def _window(rule: TextEnd | None, eos_id: int | None) -> int:
    """A row's window in tokens (``StopRows``): the longest mark's UTF-8 bytes (a byte-level
    token holds at least one byte of text) and ``WINDOW_SLACK``; 0: nothing to look for (no
    mark, and no end id the decoder does not stop at itself)."""
    if rule is None or not (_marks(rule) or set(rule.ends) - {eos_id}):
        return 0
    return WINDOW_SLACK + max((len(s.encode("utf-8")) for s in _marks(rule)), default=0)


class StopRows:
    """``stop(view, active) -> (B,) bool``: the rows of a run's (B, G) view (``mask_id``
    where nothing is committed) whose committed prefix's text is sure to be cut at a stop
    sequence (``stop_bounds``) or holds an id of its ``TextEnd.ends`` other than ``eos_id``
    (which the decoders end a row at themselves): a chat template's end-of-turn token, such
    as ChatML's ``<|im_end|>`` where EOS is another token, or any other special token the
    template writes (``ChatTemplate.ends``: a Mistral-style template's BOS, so its rows are
    looked at though its turns end at EOS); ``rows``: each row's ``TextEnd``
    (None: no stop sequence). ``active`` (B,) bool: the rows to look at (the others get
    False).

    Cheap per step: one copy of the view to the host; only a row whose prefix grew is read,
    through a window of its last tokens (those since the last look and, before them, one per
    UTF-8 byte of the longest stop and ``WINDOW_SLACK``); a window that holds a stop is
    confirmed on the row's whole text, so a window's decoding (a character cut at its start)
    never stops a row wrongly. A row found sure to be cut stays so on every later call (a run
    that may not finish it alone, the commit loop under one shared generator, asks again)."""

    def __init__(self, decode: Callable[[list[int]], str], rows: Sequence[TextEnd | None],
                 mask_id: int, eos_id: int | None = None) -> None:
        self.decode, self.rows, self.mask_id = decode, list(rows), mask_id
        self._seen = [0] * len(self.rows)  # per row: the prefix length last looked at
        self._ended = [False] * len(self.rows)  # per row: found sure to be cut (for good)
        self._width = [_window(r, eos_id) for r in self.rows]  # per row: its window's span

    def __bool__(self) -> bool:  # (a chat reply ends at its template's turn marker too)
        return any(self._width)

    def __call__(self, view: Tensor, active: Tensor | None = None) -> Tensor:
        B, G = view.shape
        if view.device.type == "cpu":
            host, live = view, [True] * B if active is None else active.tolist()
        else:  # one copy to the host per call (not one a row): the view and the active flags
            flags = torch.ones(B) if active is None else active
            host = torch.cat([view, flags.to(view.device, view.dtype)[:, None]], dim=1).cpu()
            host, live = host[:, :G], host[:, G].bool().tolist()
        lengths = committed_lengths(host, self.mask_id).tolist()  # (B,)
        out = self.ended(lambda i, lo, hi: host[i, lo:hi].tolist(), lengths, live)
        return torch.tensor(out, dtype=torch.bool, device=view.device)

    def ended(self, read: Callable[[int, int, int], list[int]], lengths: Sequence[int],
              live: Sequence[bool]) -> list[bool]:
        """``__call__`` over rows given by their committed prefixes' lengths (``lengths``)
        and ``read(i, lo, hi)``: row i's ids in columns ``lo:hi`` (``hi <= lengths[i]``),
        asked only for a grown row's window and, where it holds a stop, the whole prefix (a
        segmented run's rows: not their whole text each step). ``live``: the rows to look
        at."""
        out = [False] * len(lengths)
        for i, (k, on, rule) in enumerate(zip(lengths, live, self.rows, strict=True)):
            if not on or not self._width[i]:  # no stop sequence, turn marker or end id
                continue
            if self._ended[i]:  # sure is for good: later tokens never un-cut a text
                out[i] = True
                continue
            if k <= self._seen[i]:
                continue
            lo = max(0, self._seen[i] - self._width[i])
            self._seen[i] = k
            ids = read(i, lo, k)
            if any(t in rule.ends for t in ids):  # an id that ends the text (end of turn)
                self._ended[i] = out[i] = True
            elif any(s in self.decode(ids) for s in _marks(rule)):
                self._ended[i] = out[i] = self._sure(read(i, 0, k), rule)
        return out

    def _sure(self, ids: list[int], rule: TextEnd) -> bool:
        """Whether the text of a row's committed ``ids`` (none of ``rule.ends``) is sure to
        end at a stop sequence, whatever tokens follow."""
        text = self.decode(ids).rstrip("\ufffd")  # an incomplete multi-byte character
        at, may = stop_bounds(text, rule.stops or (), rule.template)
        return at is not None and at <= may


__all__ = ["StopRows", "TextEnd", "WINDOW_SLACK", "stop_bounds", "stop_may_start",
           "text_ended", "tokens_ended", "tokens_through"]
