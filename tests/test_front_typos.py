"""A typo on the command line is one line that names the nearest right spelling: a command
(``genrate``, ``Generate``, ``fill_form``; argparse listed the twelve commands, quoted, and
no nearest one) and a flag (``--gen-lenght``; it said "unrecognized arguments" alone, and a
misspelt required flag, ``--modle``, read "the following arguments are required: --model")."""

from __future__ import annotations

import pytest

import unmask.commands.generate as generate_cmd
from unmask.cli import main


@pytest.mark.parametrize("typed, meant", [("genrate", "generate"), ("Generate", "generate"),
                                          ("chatt", "chat"), ("fill_form", "fill-form"),
                                          ("SERVE", "serve")])
def test_a_misspelt_command_names_the_nearest(typed, meant, capsys):
    assert main([typed, "--model", "demo"]) == 2
    assert capsys.readouterr().err == (
        f"unmask: error: unknown command '{typed}'; did you mean {meant}? "
        "(see: unmask --help)\n")


def test_an_unknown_command_far_from_any_lists_them(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask: error: unknown command 'frobnicate' (the commands: prepare, "
                          "train, distill,") and err.count("\n") == 1


@pytest.mark.parametrize("argv, said", [
    (["generate", "--modle", "demo", "hi"], "--modle; did you mean --model?"),
    (["generate", "--model", "demo", "--GEN-LENGTH", "4", "hi"],
     "--GEN-LENGTH; did you mean --gen-length?"),
    (["generate", "--modle", "demo", "--bogus", "--stpes=3"],
     "--modle --bogus --stpes; did you mean --model and --steps?"),
    (["serve", "--model", "demo", "--prot", "8000"], "--prot; did you mean --port?"),
    (["demo", "--trian"], "--trian; did you mean --train?"),
])
def test_a_misspelt_flag_names_the_nearest_before_any_other_error(argv, said, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(generate_cmd, "run", lambda args: pytest.fail("ran"))
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"unmask {argv[0]}: error: unrecognized arguments: {said} "
        f"(see: unmask {argv[0]} --help)\n")


def test_values_and_prefixes_are_not_taken_for_misspelt_flags(monkeypatch):
    """A prefix argparse takes (``--gen-len``), a value with a space that starts with ``--``
    and words after a bare ``--`` are left to argparse."""
    seen = {}
    monkeypatch.setattr(generate_cmd, "run", lambda args: seen.update(vars(args)) or 0)
    assert main(["generate", "--model", "demo", "--gen-len", "4", "--system", "--be brief",
                 "--chat", "--", "--not-a-flag"]) == 0
    assert seen["gen_length"] == 4 and seen["system"] == "--be brief"
