"""Numeric ranges compile to small automata fast, accept exactly the numbers in range, and
compile work is bounded: a range or pattern too large to compile is refused by name."""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
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


# -- number ranges with fractional or exclusive bounds ---------------------------------------------


def random_decimal(rng: random.Random) -> Decimal:
    """A bound of 0-3 integer digits and 0-4 decimals, either sign, sometimes 0 or round."""
    whole = rng.choice([0, 0, rng.randrange(10), rng.randrange(1000)])
    places = rng.choice([0, 0, 1, 2, 4])
    frac = rng.randrange(10**places) if places else 0
    value = Decimal(whole) + Decimal(frac).scaleb(-places)
    return -value if rng.random() < 0.4 else value


def as_json_bound(d: Decimal) -> int | float:
    """The bound as a JSON document holds it: an integer, or a float."""
    return float(d) if "." in format(d, "f") else int(d)


def number_candidates(lo: Decimal, hi: Decimal, places: int, rng: random.Random) -> set[str]:
    """Texts at and around both bounds (a step of each decimal place either side, the bound
    with trailing zeros), between them, integers nearby, and spellings JSON does not use."""
    out = {"-0", "-0.0", "00", "0.", ".5", "+1", "1e2", ""}
    for b in (lo, hi, (lo + hi) / 2, Decimal(0)):
        for k in range(0, places + 3):
            step = Decimal(1).scaleb(-k)
            for v in (b - step, b, b + step):
                out.add(format(v.quantize(step) if k else v.to_integral_value(), "f"))
        out.add(format(b, "f") + "0" * rng.randint(1, 3) if "." in format(b, "f") else f"{b}.0")
    for _ in range(40):
        v = Decimal(rng.uniform(float(lo) - 1, float(hi) + 1))
        out.add(format(v.quantize(Decimal(1).scaleb(-rng.randint(0, places + 2))), "f"))
    return out


def in_number_language(text: str, lo: Decimal, lo_open: bool, hi: Decimal, hi_open: bool,
                       places: int) -> bool:
    """JSON number text (no exponent) within the range; a decimal has at most
    max(1, FLOAT_DIGITS - integer digits, places) decimals and is not a negative zero."""
    m = re.fullmatch(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?", text)
    if m is None or text == "-0":
        return False
    sign, whole, frac = m.groups()
    value = Decimal(text)
    if frac is not None and (
        len(frac) > max(1, FLOAT_DIGITS - len(whole), places) or (sign and value == 0)
    ):
        return False
    above = value > lo if lo_open else value >= lo
    below = value < hi if hi_open else value <= hi
    return above and below


@pytest.mark.parametrize("seed", range(3))
def test_number_ranges_accept_exactly_the_numbers_in_range(seed):
    """Fractional and exclusive bounds, either sign: the schema's language is every integer
    and every short decimal in the range, exactly, and nothing else (the bounds used to be
    rounded inward to integers: (0, 1) was refused, [-1.5, 2.5] gave [-1, 2])."""
    jsonschema = pytest.importorskip("jsonschema")
    from unmask.infill.forms import decimal_places

    rng = random.Random(300 + seed)
    checked = 0
    while checked < 40:
        a, b = sorted((random_decimal(rng), random_decimal(rng)))
        lo_open, hi_open = rng.random() < 0.5, rng.random() < 0.5
        if a == b and (lo_open or hi_open):
            continue
        schema = {"type": "number",
                  "exclusiveMinimum" if lo_open else "minimum": as_json_bound(a),
                  "exclusiveMaximum" if hi_open else "maximum": as_json_bound(b)}
        pattern = re.compile(schema_regex(schema))
        places = decimal_places(a, b)
        for text in number_candidates(a, b, places, rng):
            want = in_number_language(text, a, lo_open, b, hi_open, places)
            assert bool(pattern.fullmatch(text)) == want, (schema, text)
            if want:
                jsonschema.validate(json.loads(text), schema)
        checked += 1


@pytest.mark.parametrize(
    ("schema", "inside", "outside"),
    [
        ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
         ["0.5", "0.0000001", "0.9999999", "0.1"], ["0", "1", "0.0", "1.0", "-0.1"]),
        ({"type": "number", "minimum": 0.5, "maximum": 0.75},
         ["0.5", "0.75", "0.6", "0.7499", "0.500"], ["0.4999", "0.7501", "0", "1", "0.76"]),
        ({"type": "number", "exclusiveMinimum": 0, "maximum": 1},
         ["1", "1.0", "0.25", "0.0000001"], ["0", "0.0", "1.0000001", "-0.5"]),
        ({"type": "number", "minimum": -1.5, "maximum": 2.5},
         ["-1.5", "-1", "2.5", "2", "0", "-0.25"], ["-1.6", "2.6", "-2", "3", "-0.0"]),
        ({"type": "number", "exclusiveMinimum": -0.001, "exclusiveMaximum": 0},
         ["-0.0005", "-0.00099"], ["0", "-0.001", "-0.0", "-0.00100"]),
        ({"type": "number", "minimum": 2, "exclusiveMinimum": 2},  # the stricter: open
         ["2.5", "3", "999999"], ["2", "2.0"]),
        ({"type": "integer", "exclusiveMinimum": 0.5, "maximum": 3.9}, ["1", "3"], ["0", "4"]),
    ],
)
def test_the_audits_fractional_ranges(schema, inside, outside):
    pattern = re.compile(schema_regex(schema))
    for text in inside:
        assert pattern.fullmatch(text), text
    for text in outside:
        assert not pattern.fullmatch(text), text


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0}, "no number lies"),
        ({"type": "number", "minimum": 0.75, "maximum": 0.5}, "no number lies"),
        ({"type": "integer", "minimum": 0.25, "maximum": 0.75}, "no integer lies"),
        ({"type": "number", "minimum": 1e-45}, "range too fine to enforce (a bound of 46"),
    ],
)
def test_empty_or_too_fine_number_ranges_are_refused_by_name(schema, message):
    with pytest.raises(UserError, match=re.escape(message)):
        schema_regex(schema)


def test_filled_probabilities_validate():
    jsonschema = pytest.importorskip("jsonschema")
    import torch

    from unmask.config import SampleConfig, model_preset
    from unmask.infill.schema import fill_schema
    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=128)).eval()
    schema = {"type": "object", "properties": {
        "p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "q": {"type": "number", "minimum": -1.5, "maximum": 2.5},
        "r": {"type": "number", "minimum": 0.5, "maximum": 0.75}}}
    for seed in range(4):
        r = fill_schema(model, TOK, schema, SampleConfig(steps=4, seed=seed, temperature=1.0))
        jsonschema.validate(r.value, schema)
