"""Form filling: typed holes in a JSON template; the result always parses (any model)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill import fill_form, parse_form
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
V = TOK.vocab_size
DANGEROUS = ['"', "\\", "\n", "\t", "}", "]", ",", "\x00", "<", " "]


class Adversary:
    """Random logits plus a big bonus for tokens that would break JSON, and for specials."""

    def __init__(self, seed: int, scale: float = 4.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = scale * torch.randn(256, V, generator=g)
        bonus = torch.zeros(V)
        for k, c in enumerate(DANGEROUS):
            bonus[TOK.encode(c)[0]] = 12.0 - k
        bonus[[TOK.mask_id, TOK.eos_id, TOK.pad_id, 4 + 0xC3, 4 + 0xFF, 4 + 0x80]] = 15.0
        self.table += bonus

    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.table[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)  # (B, L, V)


def split_choices(args: str) -> list[str]:
    """``a|b\\|c`` → ["a", "b|c"]: backslash escapes ``|`` and itself."""
    out, cur, escaped = [], "", False
    for ch in args:
        if escaped:
            cur += ch if ch in "|\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur + ("\\" if escaped else "")]


def check_hole(spec: str, text: str, value) -> None:
    """The filled value satisfies its hole's type."""
    kind, _, args = spec[1:-1].partition(":")
    counts = args and kind in ("text", "digits")
    lo_hi = [int(x) for x in args.split("-")] if counts else None
    if lo_hi and len(lo_hi) == 1:
        lo_hi = lo_hi * 2
    value_range = [int(x) for x in args.split("..")] if args and kind in ("int", "float") else None
    if kind == "text":
        lo, hi = lo_hi or (1, 16)
        assert isinstance(value, str) and lo <= len(value) <= hi
        assert not any(c in value for c in '"\\') and all(ord(c) >= 0x20 for c in value)
    elif kind in ("int", "digits"):
        assert isinstance(value, int) and not isinstance(value, bool)
        assert re.fullmatch(r"-?(0|[1-9]\d*)", text)
        if value_range:
            assert value_range[0] <= value <= value_range[1] and text != "-0"
        else:
            lo, hi = lo_hi or (1, 6)
            assert lo <= len(text.lstrip("-")) <= hi
    elif kind == "float":
        assert isinstance(value, float) and re.fullmatch(r"-?(0|[1-9]\d*)\.\d+", text)
        assert 2 <= sum(c.isdigit() for c in text) <= 8
        if value_range:
            assert value_range[0] <= value <= value_range[1] and not re.fullmatch(r"-0\.0+", text)
    elif kind == "bool":
        assert isinstance(value, bool)
    elif kind == "choice":
        assert value in split_choices(args)
    elif kind == "regex":
        assert isinstance(value, str) and re.fullmatch(args, value), (args, value)
    else:  # pragma: no cover
        raise AssertionError(spec)


def substitute(template, values):
    """The template with every hole replaced by the next value (document order)."""
    if isinstance(template, dict):
        return {k: substitute(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [substitute(v, values) for v in template]
    if isinstance(template, str) and re.fullmatch(r"<\w+(:.*)?>", template, re.DOTALL):
        return next(values)
    if isinstance(template, str) and template.startswith("\\<"):
        return template[1:]
    return template


# -- hypothesis: random templates, random adversarial predictors -----------------------------------

CHOICE_CHARS = st.sampled_from(list('ab|"\\é ,}x') + ["日"])
REGEXES = [r"[A-Z]{2}[0-9]{2}", r"(yes|no)", r"[a-z_0-9]{1,4}", r'[^"]{1,3}', r"a+b?",
           r"[0-9a-f]{3}"]


@st.composite
def hole(draw):
    kind = draw(st.sampled_from(["text", "digits", "int", "float", "bool", "choice", "regex"]))
    if kind == "text":
        lo = draw(st.integers(0, 4))
        hi = lo + draw(st.integers(0, 4))
        return draw(st.sampled_from(["<text>", f"<text:{lo}-{hi}>", f"<text:{max(lo, 1)}>"]))
    if kind == "digits":
        lo = draw(st.integers(1, 3))
        return f"<digits:{lo}-{lo + draw(st.integers(0, 2))}>"
    if kind in ("int", "float"):
        lo = draw(st.integers(-150, 150))
        hi = lo + draw(st.sampled_from([0, 1, 9, 10, 99, 1000]))
        return draw(st.sampled_from([f"<{kind}>", f"<{kind}:{lo}..{hi}>"]))
    if kind == "bool":
        return "<bool>"
    if kind == "choice":
        # One empty choice would spell "<choice:>", which is an error (test_form_errors).
        texts = st.text(CHOICE_CHARS, min_size=0, max_size=4)
        choices = draw(st.lists(texts, min_size=1, max_size=3).filter(lambda c: c != [""]))
        return (
            "<choice:"
            + "|".join(c.replace("\\", "\\\\").replace("|", "\\|") for c in choices)
            + ">"
        )
    return "<regex:" + draw(st.sampled_from(REGEXES)) + ">"


LITERALS = st.one_of(
    st.integers(-99, 99),
    st.booleans(),
    st.none(),
    st.text('ab<>"\\é', max_size=4),
    st.just("\\<int>"),
)
KEYS = st.text("abcxyz_é\"", min_size=1, max_size=4)


def template_strategy():
    """A random JSON template with at least one hole."""
    leaf = st.one_of(hole(), hole(), LITERALS)
    nested = st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)
        ),
        max_leaves=5,
    )
    return st.tuples(hole(), nested).map(lambda t: {"first": t[0], "rest": t[1]})


@settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(template=template_strategy(), seed=st.integers(0, 2**16), steps=st.integers(1, 64),
       temperature=st.sampled_from([0.0, 1.0]))
def test_forms_always_parse_and_satisfy_their_holes(template, seed, steps, temperature):
    cfg = SampleConfig(steps=steps, temperature=temperature, seed=seed)
    result = fill_form(Adversary(seed), TOK, json.dumps(template), cfg)
    assert json.loads(result.text) == result.value
    for h in result.holes:
        check_hole(h.spec, h.text, h.value)
    assert result.value == substitute(template, iter(h.value for h in result.holes))


# -- examples and errors ---------------------------------------------------------------------------


EXAMPLE = {"name": "<text:2-8>", "age": "<int:0..120>", "city": "<choice:Paris|London|Rome>",
           "ok": "<bool>", "score": "<float>", "code": "<regex:[A-Z]{2}[0-9]{3}>",
           "tags": ["<text:1-4>", "fixed"], "pin": "<digits:4>"}


def test_example_form_with_a_random_transformer():
    cfg = model_preset("tiny", vocab_size=V, max_seq_len=160, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    for steps, temperature in [(64, 0.0), (4, 1.0)]:
        r = fill_form(
            model,
            TOK,
            json.dumps(EXAMPLE),
            SampleConfig(steps=steps, temperature=temperature, seed=1),
        )
        assert set(r.value) == set(EXAMPLE) and r.value["tags"][1] == "fixed"
        for h in r.holes:
            check_hole(h.spec, h.text, h.value)
        assert [h.path for h in r.holes] == ["$.name", "$.age", "$.city", "$.ok", "$.score",
                                             "$.code", "$.tags[0]", "$.pin"]
        assert json.loads(r.pretty()) == r.value


def test_one_pass_all_holes_masked_at_once():
    calls = []

    class Spy(Adversary):
        def __call__(self, tokens, attention_mask=None):
            calls.append(tokens.clone())
            return super().__call__(tokens, attention_mask)

    r = fill_form(Spy(0), TOK, {"a": "<digits:2>", "b": "<bool>"}, SampleConfig(steps=64))
    first = calls[0][0]
    assert int((first == TOK.mask_id).sum()) == (2 + 1) + 5  # both holes, at their widest
    assert TOK.decode(first.tolist()).startswith('{"a": ') and r.repaired == 0


@pytest.mark.parametrize(
    "template,message",
    [
        ('{"a": "<int>",\n "b": }', "line 2 column 7"),
        ('{"a": "<integer>"}', "unknown hole type 'integer'"),
        ('{"a": "<digits:3-1>"}', "bounds inverted (min 3 > max 1 digits)"),
        ('{"a": "<digits:0>"}', "length must be at least 1 digit, got 0"),  # "1 digits"
        ('{"a": "<text:x>"}', "bad length 'x'; use N or MIN-MAX characters"),
        ('{"a": "<int:3..1>"}', "range inverted (from 3 > to 1)"),
        (
            '{"a": "<int:1-3>"}',
            "hole $.a '<int:1-3>': ambiguous; write <digits:1-3> for an integer of "
            "1 to 3 digits, or <int:1..3> for a number from 1 to 3",
        ),
        ('{"a": "<int:3>"}', "write <digits:3> for an integer of 3 digits, or <int:LO..HI>"),
        ('{"a": "<float:2-8>"}', "ambiguous (it counted digits); write <float:2..8> for a number"),
        ('{"a": "<int:1..x>"}', "bad range '1..x'; use <int:LO..HI>, e.g. <int:1..12>"),
        ('{"a": "<regex:(?=x)>"}', "the regex engine (outlines-core) rejects it"),
        ('{"a": "<regex:\\\\d+\\"+>"}', "no text matching the regex can stand in a JSON string"),
        ('{"a": "<choice:>"}', "needs choices"),
        ('{"a": 1}', "no holes"),
    ],
)
def test_form_errors(template, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_form(template, TOK)


def test_escaped_hole_is_a_literal_and_context_is_checked():
    r = fill_form(Adversary(1), TOK, {"lit": "\\<int>", "n": "<digits:1>"})
    assert r.value["lit"] == "<int>" and isinstance(r.value["n"], int)

    class Small(Adversary):
        config = model_preset("tiny", vocab_size=V, max_seq_len=16)

    with pytest.raises(UserError, match=r"needs \d+ tokens .*max_seq_len 16"):
        fill_form(Small(0), TOK, {"name": "<text:1-20>"})


def test_text_holes_leave_out_the_automaton_brackets():
    """START / SENTINEL bracket every compiled pattern; a text character equal to START let
    the engine's unanchored DFA grow 2x per character of a hole (``<text:1-20>``: minutes,
    the test above took 375 s)."""
    from unmask.infill.automaton import SENTINEL, START
    from unmask.infill.forms import JSON_CHAR

    assert re.fullmatch(JSON_CHAR, "é") and re.fullmatch(JSON_CHAR, "\U0010fffd")
    assert not re.fullmatch(JSON_CHAR, START) and not re.fullmatch(JSON_CHAR, SENTINEL)


def test_cli_fill_form(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    cfg = model_preset("tiny", vocab_size=V, max_seq_len=160, **TOK.special_ids())
    torch.manual_seed(0)
    ckpt = str(save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=TOK))
    path = tmp_path / "form.json"
    path.write_text(json.dumps(EXAMPLE))
    assert main(["fill-form", "--model", ckpt, str(path), "--steps", "8"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert set(value) == set(EXAMPLE)
    assert main(["fill-form", "--model", ckpt, '{"n": "<int:-9..9>"}', "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert json.loads(data["text"]) == data["value"] and data["holes"][0]["path"] == "$.n"
    path.write_text('{"a": "<int>"\n "b": 1}')
    assert main(["fill-form", "--model", ckpt, str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"unmask fill-form: error: {path}: invalid JSON at line 2 column 2")
        and err.count("\n") == 1
    )
    assert main(["fill-form", "--model", ckpt, str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    # a folder is a folder; any JSON value is JSON (they read "no such file")
    assert main(["fill-form", "--model", ckpt, str(tmp_path)]) == 2
    assert f"{tmp_path}: a folder, not a template file" in capsys.readouterr().err
    assert main(["fill-form", "--model", ckpt, "--schema", str(tmp_path)]) == 2
    assert "a folder, not a schema file" in capsys.readouterr().err
    # an empty argument is empty (it was Path(""), the current folder: "a folder")
    for argv in ([""], [" "], ["--schema", ""]):
        assert main(["fill-form", "--model", ckpt, *argv]) == 2
        err = capsys.readouterr().err
        assert "is empty (give a " in err and "folder" not in err and err.count("\n") == 1
    assert main(["fill-form", "--model", ckpt, '"<int:1..3>"', "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] in (1, 2, 3)
    assert main(["fill-form", "--model", ckpt, "--schema", "true", "--json"]) == 0  # anything
    assert "value" in json.loads(capsys.readouterr().out)
    # an unpaired surrogate (valid JSON, no text to encode): one line, not a traceback
    for argv in (['{"a": "<choice:\\ud800|x>"}'], ['{"\\ud800": "<bool>"}'],
                 ["--schema", '{"enum": ["\\ud800", "x"]}']):
        assert main(["fill-form", "--model", ckpt, *argv]) == 2
        err = capsys.readouterr().err
        assert "holds an unpaired surrogate" in err and err.count("\n") == 1, err


# -- units: <digits:a-b> counts digits, <int:LO..HI> / <float:LO..HI> are value ranges -------------


@pytest.mark.parametrize("lo,hi", [(1, 12), (-5, 5), (-120, -7), (0, 0), (99, 101), (0, 120)])
def test_int_range_is_exactly_the_numbers_from_lo_to_hi(lo, hi):
    _, holes, _ = parse_form({"n": f"<int:{lo}..{hi}>"}, TOK)
    dfa = holes[0]  # FormHole.matches: the hole's value language
    assert {i for i in range(-400, 400) if dfa.matches(str(i))} == set(range(lo, hi + 1))
    assert not any(dfa.matches(s) for s in ["-0", "01", "+1", "", " 1", "1.0"])
    assert holes[0].width == max(len(str(lo)), len(str(hi)))


@pytest.mark.parametrize("lo,hi", [(0, 1), (-3, 2), (-12, -10), (0, 0), (9, 10)])
def test_float_range_is_exactly_the_numbers_from_lo_to_hi(lo, hi):
    from decimal import Decimal

    _, holes, _ = parse_form({"x": f"<float:{lo}..{hi}>"}, TOK)
    dfa = holes[0]  # FormHole.matches: the hole's value language
    texts = [f"{sign}{i}.{f:0{k}d}" for sign in ("", "-") for i in range(0, 15)
             for k in (1, 2) for f in range(10**k)]
    for t in texts:
        want = lo <= Decimal(t) <= hi and not re.fullmatch(r"-0\.0+", t)
        assert dfa.matches(t) is want, t
    assert dfa.matches(f"{hi}.0000000"[:9] if hi >= 0 else f"{hi}.000000") is True
    assert not any(dfa.matches(s) for s in ["1", "1.", ".5", "01.5", f"{lo}.000000000"])


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("<float:0.25..0.5>", ["0.25", "0.3", "0.5", "0.4999", "0.500"], ["0.2", "0.51", "0.5001"]),
        ("<float:-1.5..-0.5>", ["-1.5", "-1.0", "-0.5", "-0.75"], ["-1.6", "-0.4", "-0.0", "0.5"]),
        ("<float:0..0.001>", ["0.0", "0.001", "0.0005"], ["0.0011", "0.01", "-0.0"]),
    ],
)
def test_float_range_takes_decimal_bounds(spec, inside, outside):
    hole = parse_form({"x": spec}, TOK)[1][0]
    assert all(hole.matches(t) for t in inside), spec
    assert not any(hole.matches(t) for t in outside), spec


def test_int_range_keeps_integer_bounds():
    with pytest.raises(UserError, match=re.escape("bad range '0.5..2'; use <int:LO..HI>")):
        parse_form({"x": "<int:0.5..2>"}, TOK)


def test_digits_counts_digits_and_int_is_a_value():
    _, holes, _ = parse_form({"a": "<digits:1-3>", "b": "<int:1..3>", "c": "<int>"}, TOK)
    digits, value, plain = holes
    assert digits.matches("999") and digits.matches("-7") and not digits.matches("1000")
    assert value.matches("3") and not value.matches("4") and not value.matches("10")
    assert plain.matches("-123456") and not plain.matches("1234567")


def test_readme_and_docs_form_examples():
    """The forms in the README (`unmask fill-form ... # {...}`) and in docs/infill.md."""
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "unmask fill-form" in x and "#" in x)
    docs = (root / "docs" / "infill.md").read_text()
    block = docs[docs.index("```json\n") + len("```json\n"):]
    forms = [json.loads(line.split("#", 1)[1]), json.loads(block[: block.index("```")])]
    for form, seed in itertools.product(forms, range(2)):
        r = fill_form(Adversary(seed), TOK, form, SampleConfig(steps=8, seed=seed))
        for h in r.holes:
            check_hole(h.spec, h.text, h.value)
        assert TOK.decode(r.tokens) == r.text


def test_cli_refuses_the_ambiguous_int_with_both_spellings(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    cfg = model_preset("tiny", vocab_size=V, max_seq_len=64, **TOK.special_ids())
    ckpt = str(save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=TOK))
    assert main(["fill-form", "--model", ckpt, '{"age": "<int:1-3>"}']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "<digits:1-3>" in err and "<int:1..3>" in err
    assert main(["fill-form", "--model", ckpt, '{"age": "<int:1..3>"}', "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"]["age"] in (1, 2, 3)


@pytest.mark.parametrize("template", ["<text:1-3>", ["<text:2>", "<int:1..9>"], "<choice:a|b>"])
def test_holes_at_the_top_level(template):
    r = fill_form(Adversary(3), TOK, json.dumps(template), SampleConfig(steps=4))
    for h in r.holes:
        check_hole(h.spec, h.text, h.value)
    assert json.loads(r.text) == r.value and TOK.decode(r.tokens) == r.text


def test_inline_json_longer_than_a_file_name_is_json(capsys):
    """A form of 256+ bytes given inline was "File name too long" (the path check raised)."""
    import json

    from unmask.commands.fill_form import _read

    form = json.dumps({f"key{i}": "<int:0..9>" for i in range(40)})
    assert len(form) > 255 and _read(form) == (form, "template")
