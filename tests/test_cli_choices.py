"""A registry's name on the command line is taken in any letter case (``unmask convert --to
LLaDA``, as the papers and model cards spell it, was refused: the registry says ``llada``);
an unknown one is one line that lists the choices."""

from __future__ import annotations

import argparse

import pytest

import unmask.convert
from unmask.cli import main
from unmask.commands import registry_choice


@pytest.mark.parametrize("typed, family", [("LLaDA", "llada"), ("llada", "llada"),
                                           ("Dream", "dream"), ("LLaDA-MoE", "llada-moe"),
                                           ("Transformers", "transformers")])
def test_convert_to_takes_a_family_in_any_case(typed, family, monkeypatch, capsys):
    seen = {}

    def export(src, dst, *, family, dtype):
        seen.update(src=src, dst=dst, family=family)
        return dst

    monkeypatch.setattr(unmask.convert, "export", export)
    assert main(["convert", "runs/mine", "out", "--to", typed]) == 0
    assert seen == {"src": "runs/mine", "dst": "out", "family": family}
    assert capsys.readouterr().err == "wrote out\n"


def test_an_unknown_family_is_one_line_with_the_choices(capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's error: the parser exits
        main(["convert", "runs/mine", "out", "--to", "LLaDA3"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask convert: error: argument --to: ")
    assert "unknown family 'LLaDA3' (choose from bd3lm, dream, llada, llada-moe," in err


def test_registry_choice_prefers_an_exact_name_and_refuses_an_ambiguous_case():
    check = registry_choice("thing", lambda: ["Ab", "aB", "cd"])
    assert check("Ab") == "Ab" and check("aB") == "aB" and check("CD") == "cd"
    # two entries differ only in case: no guess, and not "unknown" (it names two entries)
    with pytest.raises(argparse.ArgumentTypeError,
                       match=r"^ambiguous thing 'ab': matches Ab, aB \(give one exactly\)$"):
        check("ab")
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown thing 'ef' \(choose from"):
        check("ef")
