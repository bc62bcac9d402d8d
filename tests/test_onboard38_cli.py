"""`unmask --help | true`: a reader of the help that left is the quiet 141 of any command's
output (README, "Exit status"), not Python's "Exception ignored ... BrokenPipeError" with
status 120 (a short help) nor status 0 with the help cut short (a long one, whose closed pipe
argparse dropped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], [], ["help"], ["help", "demo"], ["demo", "-h"],
    ["generate", "--help"],  # longer than stdout's buffer: argparse met the closed pipe
])
def test_a_reader_of_the_help_that_left_is_a_quiet_141(argv):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a shell runs it
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    p = subprocess.Popen([sys.executable, "-m", "unmask.cli", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # before the child writes: the help meets a closed pipe
    err = p.stderr.read().decode()
    assert (p.wait(timeout=60), err) == (141, "")


def test_the_help_still_reaches_a_reader(capsys):
    from unmask.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("unmask ")
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"]])
def test_help_to_a_full_disk_is_one_line(argv):
    """`unmask --help > /dev/full`: one line and status 2, not that line and then Python's
    "Exception ignored ... No space left on device" block with status 120 (stdout's buffer
    failed again at exit)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "unmask.cli", *argv], stdout=full,
                           stderr=subprocess.PIPE, env=env, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith(" ".join(["unmask", *argv[:-1]]) + ": error: No space left on device")
