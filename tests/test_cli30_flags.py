"""A text flag given a word that begins with ``-`` (``--prompt -x``, ``--system -v``; a text
with a space is taken) met argparse's "expected one argument", which does not say that
argparse read the word as a flag: the line says how to write it (``--prompt=-x``)."""

import pytest

import unmask.commands.chat as chat_cmd
import unmask.commands.generate as generate_cmd
from unmask.cli import main


@pytest.fixture(autouse=True)
def no_run(monkeypatch):
    for module in (generate_cmd, chat_cmd):
        monkeypatch.setattr(module, "run", lambda args: pytest.fail("ran"))


def _refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:  # argparse's own refusal exits from inside
        main(argv)
    assert e.value.code == 2


@pytest.mark.parametrize(("argv", "written"), [
    (["generate", "--model", "m", "--prompt", "-x"], "--prompt=-x"),
    (["chat", "--model", "m", "--system", "-x"], "--system=-x"),
    (["prepare", "a.txt", "-o", "-x.ds"], "--out=-x.ds"),
    (["chat", "--model", "m", "--template", "-x"], "--template=-x"),  # a custom type
])
def test_a_text_beginning_with_a_dash_is_said_how_to_write(argv, written, capsys):
    """The hint writes the user's own value (``--template=TEXT`` misnamed a FILE or NAME)."""
    _refused(argv)
    err = capsys.readouterr().err
    assert f": expected one argument (a text that begins with '-' is written {written}) " in err
    assert err.count("\n") == 1


def test_a_number_flag_without_its_value_gets_no_such_hint(capsys):
    _refused(["generate", "--model", "m", "x", "--gen-length"])
    assert capsys.readouterr().err == (
        "unmask generate: error: argument --gen-length: expected one argument "
        "(see: unmask generate --help)\n")


def test_the_written_form_runs(monkeypatch):
    seen = []
    monkeypatch.setattr(generate_cmd, "run", lambda args: seen.append(args.prompt_flags) or 0)
    assert main(["generate", "--model", "demo", "--prompt=-x"]) == 0
    assert seen == [["-x"]]


@pytest.mark.parametrize("argv", [
    ["prepare", "a.txt", "-o"],
    ["generate", "--model", "m", "--prompt"],
    ["generate", "--model", "m", "--prompt", "--n", "2"],  # a flag of its own, not a text
])
def test_a_missing_value_gets_no_such_hint(argv, capsys):
    """No word followed the flag, or a known flag did: the value is missing, as argparse
    says; the hint was a guess there (``--out`` last, ``--prompt`` last)."""
    _refused(argv)
    err = capsys.readouterr().err
    assert ": expected one argument (see: unmask " in err and "begins with" not in err, err
