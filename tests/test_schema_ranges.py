"""Numeric ranges compile to small automata fast, accept exactly the numbers in range, and
compile work is bounded: a range or pattern too large to compile is refused by name."""

from __future__ import annotations

import random
import re
from fractions import Fraction

import pytest

from unmask.errors import UserError
from unmask.infill.automaton import MAX_PATTERN_SIZE, TokenAutomaton, pattern_size, vocab_of
from unmask.infill.forms import FLOAT_DIGITS, float_range, int_range
from unmask.infill.schema import MAX_NUMBER_DIGITS, schema_form, schema_regex
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def random_ranges(n: int, seed: int) -> list[tuple[int, int]]:
    """Ranges whose bounds have 1-14 digits, either sign, sometimes round (10^k, 10^k - 1)."""
    rng = random.Random(seed)

    def bound() -> int:
        digits = rng.randint(1, 14)
        v = rng.choice([rng.randrange(10**digits), 10 ** (digits - 1), 10**digits - 1, 0])
        return -v if rng.random() < 0.35 else v

    out = []
    for _ in range(n):
        a, b = bound(), bound()
        out.append((min(a, b), max(a, b)))
    return out + [(0, 0), (-1, 0), (0, 9), (10, 99), (-99, -10), (1, 10**11)]


def int_samples(lo: int, hi: int, rng: random.Random) -> list[str]:
    """Integers around and inside [lo, hi] as JSON writes them, and spellings JSON does not
    use (leading zeros, ``-0``, ``+``)."""
    values = {lo, hi, lo - 1, hi + 1, 0, -1, 1, lo + 1, hi - 1}
    values |= {rng.randint(lo, hi) for _ in range(8)}
    values |= {rng.randint(lo - 10 * (hi - lo) - 10, hi + 10 * (hi - lo) + 10) for _ in range(8)}
    texts = [str(v) for v in values]
    texts += (
        ["-0", "00", "+1", ""] + [f"0{abs(v)}" for v in values] + [f"-0{abs(v)}" for v in values]
    )
    return texts


def is_json_int_in(text: str, lo: int, hi: int) -> bool:
    return (
        bool(re.fullmatch(r"-?(?:0|[1-9][0-9]*)", text))
        and text != "-0"
        and (lo <= int(text) <= hi)
    )


@pytest.mark.parametrize("seed", range(3))
def test_int_range_accepts_exactly_the_integers_in_range(seed):
    rng = random.Random(100 + seed)
    for lo, hi in random_ranges(40, seed):
        pattern = re.compile(int_range(lo, hi))
        for text in int_samples(lo, hi, rng):
            assert bool(pattern.fullmatch(text)) == is_json_int_in(text, lo, hi), (lo, hi, text)


def is_decimal_in(text: str, lo: int, hi: int) -> bool:
    """``float_range``'s language: I.F, no leading zero in I, 1 to max(1, FLOAT_DIGITS - |I|)
    decimals, no negative zero, value in [lo, hi]."""
    m = re.fullmatch(r"(-?)(0|[1-9][0-9]*)\.([0-9]+)", text)
    if m is None:
        return False
    sign, whole, frac = m.groups()
    value = Fraction(f"{sign}{whole}.{frac}")
    if len(frac) > max(1, FLOAT_DIGITS - len(whole)) or (sign and value == 0):
        return False
    return lo <= value <= hi


@pytest.mark.parametrize("seed", range(2))
def test_float_range_accepts_exactly_the_decimals_in_range(seed):
    rng = random.Random(200 + seed)
    for lo, hi in random_ranges(25, seed):
        pattern = re.compile(float_range(lo, hi))
        for whole in int_samples(lo, hi, rng):
            for frac in ("0", "00", "5", "05", "0000001", "9999999", "00000000"):
                text = f"{whole}.{frac}"
                assert bool(pattern.fullmatch(text)) == is_decimal_in(text, lo, hi), (lo, hi, text)


def test_a_range_regex_grows_linearly_with_its_digits():
    # Two bound sides of a few branches per digit: the old spelling doubled per digit.
    sizes = [len(int_range(0, 10**e)) for e in (10, 20, 40)]
    assert sizes[2] - sizes[1] <= 2.5 * (sizes[1] - sizes[0])
    assert len(int_range(-(10**39), 10**39)) < 4000


def test_wide_integer_field_compiles_and_keeps_its_edges():
    # The audit's schema (a minute to compile before); its automaton spells exactly the range.
    top = 10**11
    form = schema_form(
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": top}}},
        TOK,
    )
    auto = TokenAutomaton.from_regex(form["n"].regex, vocab_of(TOK))
    for text, ok in [
        ("0", True),
        (str(top), True),
        (str(top - 1), True),
        ("7", True),
        (str(top + 1), False),
        ("-1", False),
        ("012", False),
        ("-0", False),
    ]:
        assert auto.accepts_text(text, TOK) == ok, text
    assert auto.max_tokens() == len(str(top))


def test_counted_repetition_compiles_with_its_exact_language():
    # [0-9]{k} used to build an unanchored DFA of 2^k states inside the engine.
    auto = TokenAutomaton.from_regex("[1-9][0-9]{30}", vocab_of(TOK))
    assert auto.accepts_text("1" + "0" * 30, TOK)
    assert not auto.accepts_text("1" + "0" * 29, TOK)
    assert not auto.accepts_text("1" + "0" * 31, TOK)
    assert auto.min_tokens() == auto.max_tokens() == 31


def _max_tokens_by_rounds(auto: TokenAutomaton) -> int | None:
    """The longest accepted sequence by relaxation, S+1 rounds (the first implementation)."""
    import numpy as np

    useful = auto._useful() & auto._reachable()
    if not useful[auto.start]:
        return None
    sub = np.where(useful[auto.table], auto.table, -1)
    best = np.where(auto.accept, 0, -1)
    for _ in range(auto.table.shape[0] + 1):
        ext = np.where(sub >= 0, best[np.maximum(sub, 0)] + 1, -1).max(axis=1)
        nxt = np.maximum(best, np.where(useful, ext, -1))
        if (nxt == best).all():
            return int(best[auto.start])
        best = nxt
    return None


@pytest.mark.parametrize("pattern", [
    "a{3,9}", "(ab|c){2,5}", "[0-9]+", "x(y|zz)?w{0,4}", "(a|bc)*d", "(ab){2}|c{7}", "a?",
    "[a-c]{1,3}(x|yy)*", "(foo|ba(r|z){1,3}){1,2}",
])
def test_max_tokens_is_the_longest_path_or_none_for_a_cycle(pattern):
    auto = TokenAutomaton.from_regex(pattern, vocab_of(TOK))
    assert auto.max_tokens() == _max_tokens_by_rounds(auto)


def test_a_long_minimum_length_compiles_fast_enough_to_use():
    """A string of at least 500 characters: thousands of states in a chain, minimised (500
    refinement rounds) and found unbounded (no S+1 rounds over the table): seconds, where
    1,000 characters took minutes."""
    form = schema_form({"type": "string", "minLength": 500}, TOK)
    auto = TokenAutomaton.from_regex(form.regex, vocab_of(TOK))
    assert auto.max_tokens() is None and auto.min_tokens() == 502  # the quotes


def test_row_classes_are_exact_even_when_hashes_collide():
    import numpy as np

    from unmask.infill.automaton import _row_classes

    rows = np.random.default_rng(1).integers(0, 3, (200, 4))
    want = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)
    for weights in (np.array([1, 7, 49, 343]), np.array([1, 1, 1, 1])):  # the second collides
        got = _row_classes(rows, weights)
        assert all((got[i] == got[j]) == (want[i] == want[j])
                   for i in range(0, 200, 7) for j in range(0, 200, 3))


def test_pattern_size_counts_expanded_positions():
    assert pattern_size("(?:ab){3}") == 6
    assert pattern_size("a{2,5}|[0-9]+") == 6
    assert pattern_size("(?:(?:[0-9]){1000}){1000}") == 10**6
    # The engine's own escapes (Python cannot parse them) count one position each.
    assert pattern_size(r"(?:\p{Greek}{1000}){1000}") == 10**6
    assert pattern_size(r"\pL\u{e9}") == 2


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (
            {"type": "integer", "minimum": 0, "maximum": 10**400},
            r"schema at \$\.n: range too wide to enforce \(a bound of 401 digits, at most "
            rf"{MAX_NUMBER_DIGITS}\); narrow minimum/maximum",
        ),
        (
            {"type": "number", "maximum": 1e300},
            r"schema at \$\.n: range too wide .*narrow minimum/maximum",
        ),
        (
            {"type": "string", "pattern": "(?:(?:[a-z]){1000}){200}"},
            rf"schema at \$\.n: too large \(it expands to 200002 .* limit is {MAX_PATTERN_SIZE}\)",
        ),
    ],
)
def test_pathological_fields_are_refused_by_name(field, message):
    schema = {"type": "object", "properties": {"n": field}}
    with pytest.raises(UserError, match=message) as err:
        schema_form(schema, TOK)
    assert "\n" not in str(err.value)


def test_widest_allowed_range_still_compiles():
    top = 10**MAX_NUMBER_DIGITS - 1
    regex = schema_regex({"type": "integer", "minimum": -top, "maximum": top})
    auto = TokenAutomaton.from_regex(regex, vocab_of(TOK))
    assert auto.accepts_text(str(-top), TOK) and not auto.accepts_text(str(top + 1), TOK)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"guided_json": {"type": "integer", "minimum": 0, "maximum": 10**400}},
            "range too wide to enforce",
        ),
        ({"guided_regex": "(?:(?:[a-z]){1000}){200}"}, "too large"),
    ],
)
def test_server_answers_400_for_a_constraint_too_large_to_compile(body, message):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import torch
    from fastapi.testclient import TestClient
    from server_helpers import loaded, tiny_config

    from unmask.model import Transformer
    from unmask.server import create_app

    torch.manual_seed(0)
    app = create_app(loaded(Transformer(tiny_config(max_seq_len=64)).eval()))
    with TestClient(app) as client:
        r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 8, **body})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert message in err["message"] and "\n" not in err["message"], err
        ok = client.post(
            "/v1/completions",
            json={
                "prompt": "x",
                "max_tokens": 4,
                "steps": 2,
                "guided_json": {"type": "integer", "minimum": 0, "maximum": 10**11},
            },
        )
        assert ok.status_code == 200, ok.text
        assert 0 <= int(ok.json()["choices"][0]["text"]) <= 10**11
