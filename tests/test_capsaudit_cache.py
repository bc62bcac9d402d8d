"""The in-memory automaton cache is bounded: it kept every automaton for good, one per
distinct pattern a server's clients sent."""

from __future__ import annotations

import threading

from unmask.infill import automaton
from unmask.infill.automaton import TokenAutomaton, cached_automaton


class _Tok:
    """A stand-in tokenizer (weak-referenceable, as the cache is keyed by it)."""


def _auto(n: int) -> TokenAutomaton:
    return TokenAutomaton.at_least(n, 1000)


def test_the_least_recently_used_automata_are_dropped_past_the_byte_limit(monkeypatch):
    one = automaton._nbytes(_auto(3)) if hasattr(automaton, "_nbytes") else 4_040
    monkeypatch.setattr(automaton, "CACHE_BYTES", 3 * one, raising=False)
    tok, builds = _Tok(), []

    def build(n):
        def go():
            builds.append(n)
            return _auto(3)
        return go

    for n in range(3):
        cached_automaton(tok, n, build(n))
    cached_automaton(tok, 0, build(0))  # used again: the most recent
    for n in range(3, 6):
        cached_automaton(tok, n, build(n))
    assert len(automaton._AUTOMATA[tok]) <= 3
    assert builds == [0, 1, 2, 3, 4, 5]
    cached_automaton(tok, 5, build(5))  # still kept
    assert builds[-1] == 5 and len(builds) == 6


def test_a_key_used_again_outlives_older_ones(monkeypatch):
    """Least recently used, not first in: the key read again stays, the one after it goes."""
    monkeypatch.setattr(automaton, "CACHE_BYTES", 3 * automaton._nbytes(_auto(3)))
    tok, builds = _Tok(), []

    def build(n):
        def go():
            builds.append(n)
            return _auto(3)
        return go

    for n in range(3):
        cached_automaton(tok, n, build(n))
    cached_automaton(tok, 0, build(0))  # read again: now the most recent
    cached_automaton(tok, 3, build(3))  # one past the limit: 1 goes, not 0
    assert builds == [0, 1, 2, 3]
    cached_automaton(tok, 0, build(0))  # kept: not rebuilt
    assert builds == [0, 1, 2, 3]
    cached_automaton(tok, 1, build(1))  # dropped: rebuilt
    assert builds == [0, 1, 2, 3, 1]


def test_threads_share_the_cache():
    tok, errors = _Tok(), []

    def work(k):
        try:
            for n in range(50):
                a = cached_automaton(tok, (k % 2, n), lambda n=n: _auto(n % 5))
                assert a.accepts([0] * (n % 5))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(automaton._AUTOMATA[tok]) == 100
