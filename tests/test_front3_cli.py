"""The word after a flag that takes a value is that value, even when it looks like a
misspelt flag with an ``=`` (``--prompt "--x=1 y"``): ``unmask.cli.unknown_flags`` split it
at the ``=`` and refused ``--x`` before argparse, which takes it as the prompt."""

from __future__ import annotations

from unmask.cli import build_parser, main, unknown_flags


def _generate():
    parser = build_parser(["generate"])
    return next(a for a in parser._subparsers._actions if a.choices).choices["generate"]


def test_a_value_that_looks_like_a_flag_is_a_value():
    command = _generate()
    assert unknown_flags(command, ["--model", "demo", "--prompt", "--x=1 y"]) == []
    assert unknown_flags(command, ["--gen-len", "--x=1 y"]) == []  # a prefix argparse takes
    # still refused: a misspelt flag with its value, and one after a flag with no value
    assert [f for f, _ in unknown_flags(command, ["--sytem=be brief"])] == ["--sytem"]
    assert [f for f, _ in unknown_flags(command, ["--json", "--x=1 y"])] == ["--x"]
    assert [f for f, _ in unknown_flags(command, ["--prompt=a", "--x=1 y"])] == ["--x"]


def test_generate_takes_the_prompt(capsys):
    assert main(["generate", "--model", "demo", "--prompt", "--x=1 y", "--gen-length", "4",
                 "--steps", "2", "--device", "cpu", "--threads", "1"]) == 0
    assert capsys.readouterr().out.startswith("--x=1 y")
