"""``unmask demo``'s closing lines name the program as it can be typed again: after
``bash install.sh && .venv/bin/unmask demo`` (the README's first command) the environment is
not active, and the suggested ``unmask prepare ...`` was "command not found"."""

from __future__ import annotations

import os

from test_demo import tiny_bible_checkpoint  # noqa: F401 (a fixture)

from unmask.cli import main
from unmask.commands.demo import invoked_as


def _program(folder):
    folder.mkdir(parents=True)
    program = folder / "unmask"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program


def test_a_program_not_on_path_is_named_by_its_path(tmp_path, monkeypatch):
    program = _program(tmp_path / ".venv" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert invoked_as(str(program)) == str(program)
    monkeypatch.chdir(tmp_path)
    assert invoked_as(".venv/bin/unmask") == ".venv/bin/unmask"


def test_the_program_on_path_is_unmask(tmp_path, monkeypatch):
    program = _program(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(program.parent))
    assert invoked_as(str(program)) == "unmask"
    assert invoked_as("unmask") == "unmask"  # found on PATH by the shell
    assert invoked_as(os.path.join("src", "unmask", "__main__.py")) == "unmask"  # python -m


def test_a_path_with_a_space_is_quoted(tmp_path, monkeypatch):
    program = _program(tmp_path / "my env" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert invoked_as(str(program)) == f"'{program}'"


def test_the_demo_says_how_to_run_the_program_again(tiny_bible_checkpoint,  # noqa: F811
                                                    tmp_path, monkeypatch, capsys):
    program = _program(tmp_path / ".venv" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setattr("sys.argv", [str(program), "demo"])
    run = str(tiny_bible_checkpoint)
    assert main(["demo", "--model", run, "--gen-length", "8", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert f"\nTry it: {program} generate --model {run} " in out
    assert f"Train on your own text: {program} prepare my.txt --out data/mine && {program} " \
           "train" in out
