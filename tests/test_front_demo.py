"""``unmask demo``'s closing lines name the program as it can be typed again: after
``bash install.sh && .venv/bin/unmask demo`` (the README's first command) the environment is
not active, and the suggested ``unmask prepare ...`` was "command not found"."""

from __future__ import annotations

import os

import pytest
from test_demo import tiny_bible_checkpoint  # noqa: F401 (a fixture)

import unmask.__main__
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


def test_python_m_unmask_is_named_as_this_python_unless_its_unmask_is_on_path(tmp_path,
                                                                              monkeypatch):
    """``python -m unmask`` is for an environment whose scripts folder is not on PATH: its
    hints said ``unmask ...``, "command not found" there, or another environment's unmask."""
    python = tmp_path / "my env" / "bin" / "python"
    _program(python.parent)
    python.write_text("")
    monkeypatch.setattr("sys.executable", str(python))
    as_run = unmask.__main__.__file__  # sys.argv[0] of python -m unmask
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))  # no unmask on PATH
    assert invoked_as(as_run) == f"'{python}' -m unmask"
    monkeypatch.setenv("PATH", str(_program(tmp_path / "other" / "bin").parent))
    assert invoked_as(as_run) == f"'{python}' -m unmask"  # another environment's unmask
    monkeypatch.setenv("PATH", str(python.parent))  # this Python's unmask
    assert invoked_as(as_run) == "unmask"
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert invoked_as(os.path.join("pytest", "__main__.py")) == "unmask"  # another python -m


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


def _demo_stderr(on_terminal: bool) -> str:
    """``unmask demo --model nowhere``'s stderr, a terminal (a pty) or a pipe."""
    import pty
    import subprocess
    import sys

    env = {**os.environ, "TERM": "xterm", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "unmask", "demo", "--model", "nowhere"]
    if not on_terminal:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120).stderr
    leader, follower = pty.openpty()
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=follower, env=env, timeout=120)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the pty's other end is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pty")
def test_a_first_run_says_it_is_starting_on_a_terminal_only():
    """The seconds torch takes to import showed nothing on a first ``unmask demo``."""
    assert _demo_stderr(True) == ("unmask demo: starting (loading torch and the model)\n"
                                  "unmask demo: error: nowhere: no such folder\n")
    assert _demo_stderr(False) == "unmask demo: error: nowhere: no such folder\n"
