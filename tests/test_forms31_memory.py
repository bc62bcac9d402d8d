"""A pattern's moves over a large vocabulary, session 31: the library hands every (state,
token) move over as one Python dict (about 140 bytes each at a compile's peak), so a long
``.``-run over a 126k vocabulary took tens of GB; it is estimated and refused first when it
would not fit in the memory the compile may take (``automaton_memory_limit``)."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.tokenizer import byte_tokenizer, load_tokenizer

BYTES = vocab_of(byte_tokenizer())


def _demo():
    from pathlib import Path

    path = Path(automaton.__file__).parents[1] / "assets" / "demo" / "tokenizer.json"
    return vocab_of(load_tokenizer(str(path)))


def test_a_pattern_with_too_many_moves_is_refused_before_the_engine(monkeypatch):
    monkeypatch.setenv("UNMASK_CACHE_DIR", "off")
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, "1")  # 1 MB: 7,489 moves

    def no_engine(*a, **k):
        raise AssertionError("the engine was run")

    monkeypatch.setattr(automaton, "_index", no_engine)
    with pytest.raises(UserError, match="too large for this tokenizer") as e:
        TokenAutomaton.from_regex(".{40}", BYTES, what="guided_regex")
    assert "\n" not in str(e.value) and str(e.value).startswith("guided_regex: ")
    assert "over the 1 MB limit: $UNMASK_MAX_AUTOMATON_MB" in str(e.value)
    # a narrow class moves on few tokens: within the same limit
    automaton.check_transitions("a{1000}", BYTES)
    automaton.check_transitions("[0-9]{100}", BYTES)


_JSON_STRING = r'"(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]){0,20}"'
"""A JSON string's regex as the library writes one (a plain character or an escape)."""


@pytest.mark.parametrize("pattern", [".{30}", "[a-z]{2,40}", "a{100}", r"\w{1,8} \d{2}",
                                     "(?:ab|é)+x", "[^,]{0,20}", r"\S{1,5}",
                                     r"[\x{20}-\x{10FFFF}]{30}", r"[\u{80}-\u{10FFFF}]{10}",
                                     r"\x{41}{5}[\x{e9}\u{4E00}]", _JSON_STRING,
                                     r"(?:\S|\D{2})*", r"(?:\w\S|\D)*", r"(?:[^\s]*){0,4}",
                                     r"(?:.|\S+){0,4}"])
def test_the_estimate_bounds_the_moves_the_library_builds(pattern):
    """On these patterns the estimate is at least the moves of the library's map (its start
    and end marks aside), and within 2x of it for the wide ones (``.{30}``: 133,860 for
    117,208 over the demo's 4,096 tokens; a JSON string 1.0-1.25x, ``\\w`` runs to 1.7x).
    A braced escape is read as its code point: as
    any character, ``[\\x{20}-\\x{10FFFF}]`` was estimated from the tokens of one first byte
    (0.03x). States with the same next positions are counted apart (merged, the estimate
    was 0.5-0.8x on the last four, review rl31), so a JSON string is estimated about 2x."""
    for vocab in (BYTES, _demo()):
        sizes = automaton._estimated_sizes(pattern)
        assert sizes is not None
        estimate = automaton.estimated_moves(sizes, vocab, vocab.lengths > 0)[0]
        moves = automaton._index(pattern, vocab, "x").get_transitions()
        actual = sum(1 for m in moves.values() for t in m if t < vocab.size)
        assert actual <= estimate, (pattern, actual, estimate)
        if actual > 10 * vocab.size:
            assert estimate <= 2.5 * actual, (pattern, actual, estimate)


def test_the_memory_a_compile_may_take(monkeypatch):
    """The limit is ``$UNMASK_MAX_AUTOMATON_MB``, else a share of the memory available, else a
    fixed cap; a bad value is one line naming the variable."""
    monkeypatch.delenv(automaton.AUTOMATON_MEMORY_ENV, raising=False)
    monkeypatch.setattr(automaton, "_available_memory", lambda: 40 << 30)
    assert automaton.automaton_memory_limit() == 30 << 30
    monkeypatch.setattr(automaton, "_available_memory", lambda: None)
    assert automaton.automaton_memory_limit() == automaton.AUTOMATON_MEMORY_FALLBACK_MB << 20
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, "0.5")
    assert automaton.automaton_memory_limit() == 1 << 19
    for bad in ("0", "-3", "lots", "inf"):
        monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, bad)
        with pytest.raises(UserError, match="^UNMASK_MAX_AUTOMATON_MB=") as e:
            automaton.automaton_memory_limit()
        assert "\n" not in str(e.value)


def test_the_default_limit_follows_a_containers_memory_limit(tmp_path, monkeypatch):
    """Inside a container ``MemAvailable`` is the host's: the default limit is a share of what
    the cgroup limit leaves (``quantize.free_bytes``), as for loading a model and training,
    not of the host's memory (review rl31: 16 GB allowed in a 4 GB container)."""
    from unmask import quantize, train_guards

    group = tmp_path / "cg"
    group.mkdir()
    (group / "memory.max").write_text(f"{4 << 30}\n")
    (group / "memory.current").write_text(f"{1 << 30}\n")
    (group / "memory.stat").write_text("anon 1\n")
    read_int = quantize._read_int
    monkeypatch.setattr(quantize, "_read_int", lambda path, key=None: (
        64 << 20 if path == "/proc/meminfo" else read_int(path, key)))  # 64 GiB, in kB
    monkeypatch.setattr(quantize, "CGROUP_ROOT", str(group))
    monkeypatch.delenv(automaton.AUTOMATON_MEMORY_ENV, raising=False)
    assert automaton.automaton_memory_limit() == int(0.75 * (3 << 30))
    assert train_guards.available_memory("cpu") == 3 << 30  # one reading for both


def test_what_fits_in_memory_is_not_refused(monkeypatch):
    """The refusal follows the memory (the moves times ``BYTES_PER_MOVE``), not a fixed count
    of moves: a pattern over the old fixed 32M moves compiles where memory allows it, and
    one just over a small limit is refused."""
    vocab = _demo()
    keep = vocab.lengths > 0
    sizes = automaton._estimated_sizes(".{1000}")
    moves = automaton.estimated_moves(sizes, vocab, keep)[0]
    need = moves * automaton.BYTES_PER_MOVE
    monkeypatch.setattr(automaton, "_available_memory", lambda: 2 * need)
    monkeypatch.delenv(automaton.AUTOMATON_MEMORY_ENV, raising=False)
    automaton.check_transitions(".{1000}", vocab)  # fits in 75% of twice its need
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, str((need - (1 << 20)) / (1 << 20)))
    with pytest.raises(UserError, match="too large for this tokenizer"):
        automaton.check_transitions(".{1000}", vocab)


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("schema", "fits", "mb"), [
    ({"type": "string", "maxLength": 128}, True, 8192),  # the parent compiled it: 4.4 GB
    ({"type": "string", "maxLength": 200}, True, 8192),
    # estimated at some 8.8 GB (about twice the real moves: a JSON string's plain and
    # escaped characters are counted as two states, which the engine merges)
    ({"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 5}, True,
     12288),
    ({"anyOf": [{"type": "string", "maxLength": 255}, {"type": "null"}]}, True, 12288),
    ({"type": "string", "pattern": "^.{1000}$"}, False, 8192),  # some 18 GB
    ({"type": "string", "pattern": r"^[\x{20}-\x{10FFFF}]{1000}$"}, False, 8192),
])
def test_common_schemas_fit_in_8_gb_at_llada_vocabulary_size(schema, fits, mb, benchmark,
                                                                  monkeypatch):
    """At 126,000 tokens (estimated only: nothing is compiled), with ``mb`` MB for a compile
    (75% of 16 GB: 12288), the string schemas the parent compiled in about 4.4 GB pass; they
    were refused at the fixed 32M moves."""
    from unmask.infill.schema import schema_form

    tok = benchmark("constraints").SyntheticTokenizer(126_000)
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, str(mb))
    checked = automaton.check_transitions

    def check_only(*args, **kwargs):
        checked(*args, **kwargs)
        raise _Stop

    monkeypatch.setattr(automaton, "check_transitions", check_only)
    if fits:
        with pytest.raises(_Stop):
            schema_form(schema, tok)
    else:
        with pytest.raises(UserError, match="too large for this tokenizer"):
            schema_form(schema, tok)


def test_a_limit_under_a_megabyte_is_told_in_bytes(monkeypatch):
    """``UNMASK_MAX_AUTOMATON_MB=0.0001`` is about 100 bytes; it was told as "the 0 MB limit"."""
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, "0.0001")
    with pytest.raises(UserError, match=r"some \d+ bytes to compile, over the 104 bytes limit"):
        automaton.check_transitions("n=[a-z]{3}", BYTES)


def test_a_bad_limit_is_an_error_with_the_automaton_cached_too(tmp_path, monkeypatch):
    """A bad ``UNMASK_MAX_AUTOMATON_MB`` was only noticed on a cache miss: the same command
    failed (exit 2) or ran depending on the cache."""
    monkeypatch.setenv("UNMASK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(automaton.AUTOMATON_MEMORY_ENV, raising=False)
    TokenAutomaton.from_regex("[a-c]{2}", BYTES)
    monkeypatch.setenv(automaton.AUTOMATON_MEMORY_ENV, "lots")
    with pytest.raises(UserError, match="^UNMASK_MAX_AUTOMATON_MB="):
        TokenAutomaton.from_regex("[a-c]{2}", BYTES)
