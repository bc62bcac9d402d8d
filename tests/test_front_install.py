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


def run_fresh(tmp_path: Path, python3: str) -> tuple[subprocess.CompletedProcess, Path]:
    """install.sh from a copy in ``tmp_path`` with no environment active, ``python3`` on PATH
    the shell script ``python3`` (it records its arguments in ``called``)."""
    shutil.copy(ROOT / "install.sh", tmp_path / "install.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    called = tmp_path / "called"
    fake = bin_dir / "python3"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {called}\n{python3}\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    done = subprocess.run(["bash", str(tmp_path / "install.sh")], capture_output=True,
                          text=True, env=env, timeout=60, cwd=tmp_path)
    return done, called


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_python_older_than_3_10_is_named_before_anything_is_made(tmp_path):
    """pip refused the install deep in its output ("requires a different Python"), after a
    .venv of the old Python was made."""
    done, called = run_fresh(tmp_path, 'case "$1" in -V) echo "Python 3.8.10";; esac; exit 1')
    assert done.returncode == 1, done
    assert done.stderr == ("install.sh: unmask needs Python 3.10 or newer; python3 is "
                           "Python 3.8.10\n")
    assert "-m" not in called.read_text() and not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_failed_venv_is_removed_so_the_next_run_makes_it_again(tmp_path):
    """Debian's python3 without python3-venv makes .venv/bin/python, then fails (no
    ensurepip); the next run saw .venv/bin/python, skipped the venv and failed at "No module
    named pip", run after run."""
    debian = ('case "$1" in -c) exit 0;; -m) mkdir -p .venv/bin && cp "$0" .venv/bin/python;'
              ' echo "ensurepip is not available" >&2; exit 1;; esac; exit 1')
    done, called = run_fresh(tmp_path, debian)
    assert done.returncode == 1, done
    assert done.stderr.endswith("install.sh: python3 -m venv failed (on Debian or Ubuntu: "
                                "apt install python3-venv, or activate a virtualenv), then run "
                                "install.sh again\n")
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_venv_without_pip_is_named_not_installed_into(tmp_path):
    """A .venv left by an earlier failed run (or made by hand with --without-pip)."""
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\nexit 1\n")
    (venv / "python").chmod(0o755)
    done, called = run_fresh(tmp_path, "exit 1")
    assert done.returncode == 1, done
    assert done.stderr == ("install.sh: .venv has no pip (made by a python3 -m venv that "
                           "failed): remove .venv and run again\n")
    assert not called.exists()  # python3 is not run: the .venv is there
