"""Named gaps and gap constraints from the command line (``unmask infill
--choices/--regex/--charset/--ban``)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.infill import Gap, find_gap, parse_template, split_choices
from unmask.infill.template import plan_template
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint

    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    torch.manual_seed(0)
    return str(
        save_checkpoint(
            tmp_path_factory.mktemp("run"), model=Transformer(cfg).eval(), tokenizer=TOK
        )
    )


def run_json(ckpt, capsys, *argv: str) -> dict:
    assert (
        main(["infill", "--model", ckpt, "--json", "--elbo-samples", "2", "--seed", "1", *argv])
        == 0
    )
    return json.loads(capsys.readouterr().out)


def test_named_gaps_and_locked_spaces_parse():
    parts = parse_template(r"A [MASK:city] b [MASK:c_1:3] c [MASK:n2:2-5] d\ [MASK]")
    assert [(p.name, p.length, p.min_len, p.max_len) for p in parts if isinstance(p, Gap)] == [
        ("city", None, None, None),
        ("c_1", 3, None, None),
        ("n2", None, 2, 5),
        (None, None, None, None),
    ]
    assert parts[-2] == " d " and parts[-1].take_space is False and parts[1].take_space is True
    assert (
        find_gap(parts, "city") == 1 and find_gap(parts, "2") == 3 and find_gap(parts, " 4 ") == 7
    )
    with pytest.raises(
        UserError,
        match=r"no gap '5' in the template \(its gaps: 1 \(city\), 2 \(c_1\), 3 \(n2\), 4\)",
    ):
        find_gap(parts, "5")
    assert split_choices(r"a|b\|c|\\|") == ["a", "b|c", "\\", ""]
    # a name twice (a constraint by name reached the first gap only), a name [MASK:..] cannot spell
    twice = [Gap(name="x"), " and ", Gap(name="x")]  # a template refuses it where it stands
    with pytest.raises(UserError, match="^gap name 'x' is used twice; give each gap its own name$"):
        find_gap(twice, "x")
    with pytest.raises(UserError, match="gap name 'x' is used twice"):
        plan_template(twice, TOK)


def test_cli_constraints_hold(ckpt, capsys):
    out = run_json(
        ckpt,
        capsys,
        "The [MASK:city] is [MASK:3], code [MASK].",
        "--choices",
        "city=Paris|Rome|Oslo",
        "--charset",
        "2=digits",
        "--regex",
        r"3=[A-Z]{2}[0-9]",
    )
    city, num, code = (g["text"] for g in out["gaps"])
    assert (
        city in ("Paris", "Rome", "Oslo")
        and re.fullmatch(r"\d{3}", num)
        and re.fullmatch(r"[A-Z]{2}[0-9]", code)
    )
    assert out["text"] == f"The {city} is {num}, code {code}."
    assert out["gaps"][0]["name"] == "'city' [MASK:city]"


def test_cli_ban_applies_to_every_gap(ckpt, capsys):
    template = "[MASK:6] and [MASK:6] or [MASK:2-4]"
    free = run_json(ckpt, capsys, template)
    letters = {c for g in free["gaps"] for c in g["text"]}
    # What the model wrote unbanned.
    banned = sorted(c for c in letters if c.isprintable() and c != "x")[:3]
    assert banned
    out = run_json(ckpt, capsys, template, *[a for c in banned for a in ("--ban", c)], "--ban", "x")
    assert all(c not in g["text"] for g in out["gaps"] for c in [*banned, "x"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--regex", r"3=\d"],
            "--regex '3=\\\\d': no gap '3' in the template (its gaps: 1, 2 (city))",
        ),
        (["--choices", "town=a|b"], "--choices 'town=a|b': no gap 'town'"),
        (["--choices", "a|b"], "--choices 'a|b': expected GAP=VALUE"),
        (
            ["--regex", "1=(?=a)b"],
            "gap 1 [MASK]: regex '(?=a)b': the regex engine (outlines-core) rejects it",
        ),
        (["--regex", "city=[a-"], "'city' [MASK:city:2]: regex '[a-': the regex engine"),
        (
            ["--charset", "1=hex"],
            "gap 1 [MASK]: unknown character class 'hex'; choose one of digits, lowercase",
        ),
        (
            ["--charset", "1=digits", *[a for d in "0123456789" for a in ("--ban", d)]],
            "gap 1 [MASK]: no sequence of 1 token satisfies its constraint",
        ),
        (
            ["--choices", "city=Rome|Paris"],
            "'city' [MASK:city:2]: no sequence of 2 tokens satisfies its constraint",
        ),
        (
            ["--charset", "1=digits", "--charset", "1=alpha"],
            "--charset: gap 1 [MASK] is given twice",
        ),
        (["--ban", ""], "--ban: the word is empty"),
    ],
)
def test_cli_constraint_errors_name_the_gap(ckpt, capsys, argv, message):
    assert main(["infill", "--model", ckpt, "a [MASK] b [MASK:city:2] c", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask infill: error: ") and err.count("\n") == 1, err
    assert message in err, err
