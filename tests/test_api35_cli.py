"""Session 35 (api): the command line as a demanding user meets it: standard input closed
(``<&-``) is one line, and no flag is offered that refuses every value."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from unmask.cli import build_parser, main


def test_prompt_file_stdin_closed_is_one_line(monkeypatch, capsys):
    """``unmask generate --prompt-file - <&-``: Python sets ``sys.stdin`` to None, and reading
    it was an ``AttributeError`` traceback with exit status 1."""
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["generate", "--model", "demo", "--prompt-file", "-"]) == 2
    err = capsys.readouterr().err
    assert err == ("unmask generate: error: standard input is closed: give the text another "
                   "way, or pipe it in\n")


def test_infill_template_from_closed_stdin_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["infill", "--model", "demo", "-"]) == 2
    assert capsys.readouterr().err.startswith("unmask infill: error: standard input is closed")


def _long_flags(command: str) -> set[str]:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[
        command.replace("_", "-")]
    return {s for a in sub._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("command", ["generate", "chat", "infill", "edit", "fill_form"])
def test_no_flag_for_a_sequence_field(command):
    """``--exempt-ids TEXT`` was listed (its own help said "no command-line flag") and refused
    every value it could be given (``--exempt-ids 5``: "must be a list of token ids")."""
    flags = _long_flags(command)
    assert "--exempt-ids" not in flags and "--repetition-penalty" in flags


def test_dataclass_flags_skip_tuples_and_lists():
    import argparse

    from unmask.commands import add_dataclass_flags

    @dataclasses.dataclass
    class Options:
        count: int = 1
        ids: tuple[int, ...] = ()
        names: list[str] = dataclasses.field(default_factory=list)

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Options)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert "--count" in flags and "--ids" not in flags and "--names" not in flags
