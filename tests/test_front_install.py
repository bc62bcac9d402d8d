"""``bash install.sh``: an argument it does not know was taken for a plain install (``--tests``
installed no test tools, ``--help`` installed everything); now it is refused in one line with
exit 2 before anything runs, and ``--help`` prints the header. The steps themselves need the
network and are not run here: a stand-in ``python`` on PATH fails the test if it is called."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_install(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """install.sh run from a copy in ``tmp_path``, as inside an active virtualenv whose
    ``python`` only records that it was called."""
    shutil.copy(ROOT / "install.sh", tmp_path / "install.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    called = tmp_path / "called"
    for name in ("python", "python3"):
        fake = bin_dir / name
        fake.write_text(f"#!/bin/sh\necho \"$@\" >> {called}\nexit 1\n")
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "VIRTUAL_ENV": str(tmp_path)}
    done = subprocess.run(["bash", str(tmp_path / "install.sh"), *args], capture_output=True,
                          text=True, env=env, timeout=60)
    return done, called


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("args", [["--tests"], ["--test", "x"], ["-t"], ["test"]])
def test_an_unknown_argument_is_refused_before_anything_runs(tmp_path, args):
    done, called = run_install(tmp_path, *args)
    assert done.returncode == 2, done
    assert done.stderr == (f"install.sh: unexpected arguments: {' '.join(args)} "
                           "(usage: bash install.sh [--test])\n")
    assert not called.exists() and not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_help_prints_the_header_and_installs_nothing(tmp_path):
    done, called = run_install(tmp_path, "--help")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("Set up unmask in a virtual environment: bash install.sh")
    assert "--test also installs" in done.stdout and "#" not in done.stdout
    assert not called.exists()
